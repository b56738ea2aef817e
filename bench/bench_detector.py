"""Records/s of the shipped transformer detector on the CPU, next to the bare backbone.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_detector.py [--records 200] [--threads N]

On the same simulated records (pipeline.simulate, fixed seed), measures:
1. bare backbone: one forward pass of all-MiniLM-L6-v2 over each record's prompt and
   completion, truncated to one 128-token window each, sorted by length, batch 32
   (the floor cost of "run the backbone once per text");
2. the shipped detector, fp32, cold cache (windows: up to 8 per text, so long completions
   cost more than in 1);
3. the same with dynamic int8 quantisation of the backbone's Linear layers, plus how many
   verdicts change against fp32 (quality cost of the speed-up);
4. the detector again on the same records (warm cache: what campaign duplicates cost);
5. the bare backbone of 1 exported to ONNX (opset 17) and run by ONNX Runtime on the same
   windows with the same threads, plus the largest feature difference against torch: the
   ONNX Runtime option of the issue, measured rather than assumed.
Prints a table; numbers depend on the machine's load (report them with the command).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from detectors.base import DetectorConfig
    from detectors.training.modeling import Encoder, WindowConfig, make_windows
    from detectors.transformer import TransformerDetector
    from pipeline.simulate import simulate

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    records = [r.log for r in simulate(args.records, seed=11, end=datetime(2026, 1, 2, tzinfo=UTC))]
    texts = [r.prompt_text for r in records] + [r.completion for r in records if r.has_completion]
    rows: list[tuple[str, float, str]] = []

    encoder = Encoder()
    first = [make_windows(encoder.tokenizer, t, WindowConfig())[0] for t in texts]
    encoder.features(first[:8])  # warm-up
    t0 = time.perf_counter()
    encoder.features(first, batch_size=32)
    bare = time.perf_counter() - t0
    rows.append(("bare backbone forward (1 window/text)", len(records) / bare, f"{len(first)} windows"))
    rows.append(onnx_row(encoder, first, threads, len(records), bare))

    def run(options: dict[str, str]) -> tuple[TransformerDetector, list, float]:
        det = TransformerDetector.create(
            DetectorConfig(model_dir=args.model_dir, device="cpu", threads=threads, options=options)
        )
        det.detect(records[:4])  # warm-up (and caches 4 records' texts: negligible)
        t = time.perf_counter()
        out = det.detect(records)
        return det, out, time.perf_counter() - t

    det, fp32, t_fp32 = run({})
    n_windows = sum(len(make_windows(det.encoder.tokenizer, t, det.manifest.window)) for t in texts)
    rows.append(("detector fp32, cold cache", len(records) / t_fp32, f"{n_windows} windows"))
    t = time.perf_counter()
    det.detect(records)
    rows.append(("detector fp32, warm cache (duplicates)", len(records) / (time.perf_counter() - t), "cache hits"))
    _, int8, t_int8 = run({"quantize": "int8"})
    changed = sum(
        {(f.category, f.side) for f in a} != {(f.category, f.side) for f in b} for a, b in zip(fp32, int8, strict=True)
    )
    rows.append(("detector int8 dynamic, cold cache", len(records) / t_int8, f"{changed}/{len(records)} verdicts differ from fp32"))

    table = Table(title=f"{len(records)} simulated records, {threads} threads, torch {torch.__version__}")
    for col in ("what", "records/s", "note"):
        table.add_column(col)
    for what, rate, note in rows:
        table.add_row(what, f"{rate:.1f}", note)
    Console().print(table)


def onnx_row(encoder, windows, threads: int, n_records: int, torch_seconds: float) -> tuple[str, float, str]:
    """The bare backbone through ONNX Runtime on the same windows, batches and pooling."""
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch

    from detectors.training.modeling import FEATURE_LAYERS, _mean_pool, pad_batch

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            return tuple(hidden[layer] for layer in FEATURE_LAYERS)

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/backbone.onnx"
        ids, mask = pad_batch(windows[:2])
        axes = {"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}}
        torch.onnx.export(
            Hidden(encoder.model).eval(), (ids, mask), path, input_names=["ids", "mask"],
            output_names=[f"h{layer}" for layer in FEATURE_LAYERS], dynamic_axes=axes, opset_version=17, dynamo=False,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def features(batch) -> torch.Tensor:
        ids, mask = pad_batch(batch)
        hidden = session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})
        return torch.cat([_mean_pool(torch.from_numpy(h), mask) for h in hidden], dim=-1)

    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    features([windows[i] for i in order[:8]])  # warm-up
    out = torch.empty((len(windows), 384 * len(FEATURE_LAYERS)))
    t = time.perf_counter()
    for b in range(0, len(order), 32):
        idx = order[b : b + 32]
        out[torch.tensor(idx)] = features([windows[i] for i in idx])
    seconds = time.perf_counter() - t
    diff = float(np.abs(out.numpy() - encoder.features(windows, batch_size=32).numpy()).max())
    return (
        "bare backbone via ONNX Runtime (same windows)",
        n_records / seconds,
        f"{torch_seconds / seconds:.2f}x torch; max feature diff {diff:.1e}",
    )


if __name__ == "__main__":
    main()
