"""Where training and evaluation write, and the one explicit step that ships an artifact.

``misuse-monitor train`` and ``misuse-monitor evaluate`` write to a run directory outside the
source tree (``runs_root()``) or to a directory the user names; both refuse a directory inside
``detectors/models/``. The shipped artifact changes only through :func:`ship_artifact`
(``misuse-monitor model ship DIR``), which checks that the artifact loads, that an evaluation
report it carries belongs to it, and swaps the directory in with renames, so a failed ship
leaves the previous artifact in place. Why: a training run used to overwrite the shipped model
and its card as a side effect; a release is a decision (docs/model-releases.md), not a default.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
DEFAULT_CARD = Path(__file__).resolve().parents[2] / "docs" / "model-card.md"
SHIPPED_NAME = "transformer-minilm-v1"  # the directory detectors/transformer.py loads by default
EVALUATION_REPORT = "evaluation-report.json"
TRAINING_REPORT = "training-report.json"
RUN_CARD = "model-card.md"  # a run's own card; the shipped card lives in docs/


class ShipError(RuntimeError):
    """The artifact cannot be shipped (unreadable, or its evaluation report is another model's)."""


class ShippedTreeError(ValueError):
    """A train/evaluate output directory points into the shipped models folder."""


def runs_root() -> Path:
    """Default home of training and evaluation runs: the user's cache, never the source tree."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "misuse-monitor" / "runs"


def refuse_shipped_tree(directory: Path, models_root: Path = MODELS_ROOT) -> Path:
    """``directory`` resolved, unless it lies inside ``models_root`` (then ShippedTreeError)."""
    resolved = directory.expanduser().resolve()
    root = models_root.resolve()
    if resolved == root or root in resolved.parents:
        raise ShippedTreeError(
            f"{directory} is inside {root}: train/evaluate never write the shipped models; "
            "write elsewhere and run `misuse-monitor model ship DIR`"
        )
    return resolved


@dataclass(frozen=True)
class Shipped:
    destination: Path
    version: str
    evaluated: bool
    card: Path | None


def ship_artifact(
    source: Path,
    name: str = SHIPPED_NAME,
    models_root: Path = MODELS_ROOT,
    card: Path | None = DEFAULT_CARD,
) -> Shipped:
    """Copy the artifact in ``source`` to ``models_root/name`` and (re)write the model card.

    The artifact must load (``load_artifact``); an ``evaluation-report.json`` next to it must
    name the same version. The copy is staged next to the destination and swapped in with two
    renames; the previous artifact is removed only after the new one is in place.
    """
    from detectors.training.modeling import ModelLoadError, load_artifact

    source = source.expanduser().resolve()
    try:
        manifest, _, _ = load_artifact(source)
    except ModelLoadError as exc:
        raise ShipError(f"{source} is not a loadable artifact: {exc}") from exc
    evaluation = source / EVALUATION_REPORT
    evaluated = evaluation.is_file()
    if evaluated:
        version = json.loads(evaluation.read_text()).get("artifact_version")
        if version != manifest.version:
            raise ShipError(f"{evaluation} scored {version!r}, not this artifact ({manifest.version!r})")
    destination = models_root / name
    if destination.resolve() == source:
        raise ShipError(f"{source} is already the shipped artifact {name}")
    models_root.mkdir(parents=True, exist_ok=True)
    staging = models_root / f".{name}.staging"
    previous = models_root / f".{name}.previous"
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(RUN_CARD, "__pycache__"))
    if destination.exists():
        destination.rename(previous)
    staging.rename(destination)
    shutil.rmtree(previous, ignore_errors=True)
    written = None
    if card is not None and (destination / TRAINING_REPORT).is_file():
        from detectors.training.evaluate import write_model_card

        write_model_card(destination, card)
        written = card
    return Shipped(destination, manifest.version, evaluated, written)
