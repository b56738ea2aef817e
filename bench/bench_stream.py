"""Stream throughput vs the bare detectors on the same records, and the stream's peak memory.

    .venv/bin/python bench/bench_stream.py [--records 3000] [--detectors transformer]

1. Simulated traffic is scored by the detectors alone (decode + Scorer, no Kafka): the
   ceiling for this hardware.
2. The same records (plus a few 10 MB records, which are dead-lettered) are produced to
   a real local broker and consumed by the real Pipeline with every default sink, in a
   child process whose peak RSS is read from the kernel (ru_maxrss).
Both phases run in the same invocation, so the ratio is measured side by side.
Targets (issue 2): ratio >= 0.90; stream peak RSS < 1.5 GB on the CPU path.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.decode import decode_log  # noqa: E402
from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402
from pipeline.metrics import PipelineMetrics  # noqa: E402
from pipeline.producer import GatewayProducer  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402

BIG_RECORDS = 3
console = Console()


def make_settings(detectors: list[str], bootstrap: str = "", topic: str = "", lake: str = "") -> Settings:
    overrides: dict = {"detectors": {"enabled": detectors}, "metrics": {"port": 0}}
    if bootstrap:
        overrides["kafka"] = {"bootstrap_servers": bootstrap, "input_topic": topic, "verdict_topic": f"{topic}.verdicts",
                              "dead_letter_topic": f"{topic}.dlq", "group_id": f"bench-{topic}"}
        overrides["lake"] = {"path": lake}
    return Settings(**overrides)


def bare_detectors(lines: list[bytes], settings: Settings) -> float:
    scorer = Scorer.from_settings(settings)
    logs = [decode_log(line, settings.batch.max_record_bytes) for line in lines]
    size = settings.batch.max_records
    started = time.perf_counter()
    for i in range(0, len(logs), size):
        scorer.score(logs[i : i + size])
    elapsed = time.perf_counter() - started
    scorer.close()
    return len(logs) / elapsed


def stream_phase(args: argparse.Namespace) -> None:
    """Runs in a child process: consume everything, print timings and peak RSS as JSON."""
    from pipeline.runner import Pipeline

    settings = make_settings(args.detectors.split(","), args.bootstrap, args.topic, args.lake)
    stats = Pipeline.from_settings(settings, PipelineMetrics()).run(max_records=args.expect)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": stats.records, "verdicts": stats.verdicts, "dead_letters": stats.dead_letters,
                      "seconds": stats.active_s, "peak_rss_mb": rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--detectors", default=",".join(Settings().detectors.enabled))
    parser.add_argument("--phase", default="all")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--lake", default="")
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.phase == "stream":
        stream_phase(args)
        return

    lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(args.records, seed=11)]
    detectors = args.detectors.split(",")
    bare_rate = bare_detectors(lines, make_settings(detectors))

    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        try:
            topic = "bench.logs"
            create_topic(broker.bootstrap, topic, 3)
            big = json.dumps({"schema": "inference-log/v1", "request_id": "big", "timestamp": "2026-11-28T00:00:00Z",
                              "model": "m", "prompt": "x" * (10 * 1024 * 1024)}).encode()
            big_every = max(1, len(lines) // BIG_RECORDS)
            sent = 0
            with GatewayProducer(make_settings(detectors, broker.bootstrap, topic).kafka, topic) as producer:
                for i, line in enumerate(lines):
                    producer.send_raw(line)
                    sent += 1
                    if i % big_every == 0:
                        producer.send_raw(big)
                        sent += 1
            child = subprocess.run(
                [sys.executable, __file__, "--phase", "stream", "--detectors", args.detectors, "--bootstrap", broker.bootstrap,
                 "--topic", topic, "--lake", str(Path(tmp) / "lake"), "--expect", str(sent)],
                capture_output=True, text=True, check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            broker.stop()
    stream_rate = result["verdicts"] / result["seconds"]
    table = Table(title=f"stream vs bare detectors ({args.records} simulated records, detectors={args.detectors})")
    for col in ("measure", "value"):
        table.add_column(col)
    table.add_row("bare detectors (decode + score), records/s", f"{bare_rate:,.1f}")
    table.add_row("stream end to end (Kafka -> sinks -> commit), records/s", f"{stream_rate:,.1f}")
    table.add_row("ratio stream / bare (target >= 0.90)", f"{stream_rate / bare_rate:.2f}")
    table.add_row("dead letters (10 MB records)", str(result["dead_letters"]))
    table.add_row("stream peak RSS, MB (target < 1536)", f"{result['peak_rss_mb']:,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
