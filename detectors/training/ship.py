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
import re
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


# The card `model ship --name NAME` rewrites by default; another name rewrites none unless
# --model-card names one (`--name transformer-e5-v2` rewrote the English card: a review, 2026-12-06).
SHIPPED_CARDS = {SHIPPED_NAME: DEFAULT_CARD}


def refuse_card(card: Path, *, shipped_card_ok: bool, models_root: Path = MODELS_ROOT) -> Path:
    """``card`` resolved, if a model card may be written there: a ``.md`` file outside the
    shipped models (`model ship --model-card .../manifest.json` overwrote a manifest, and the
    artifact stopped loading) and, for train and evaluate (``shipped_card_ok`` False), not one of
    the shipped cards, docs/model-card*.md (`evaluate --output-dir docs` replaced the shipped
    card with a quick run's). ShipError otherwise (a review, 2026-12-06)."""
    resolved = card.expanduser().resolve()
    root = models_root.resolve()
    if resolved.suffix.lower() != ".md":
        raise ShipError(f"model card {card}: name a markdown file (.md)")
    if resolved == root or root in resolved.parents:
        raise ShipError(f"model card {card} is inside {root}: train/evaluate never write the shipped models; "
                        "write it elsewhere (`misuse-monitor model ship DIR` replaces an artifact)")
    if not shipped_card_ok and resolved.parent == DEFAULT_CARD.parent and resolved.name.startswith("model-card"):
        raise ShipError(f"{card} is a shipped model's card; only `misuse-monitor model ship DIR` rewrites it")
    return resolved


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


def foreign_files(directory: Path) -> list[str]:
    """Files under ``directory`` that no training run writes (artifact files, the run's card and
    its plots, v2's compare.json). A run overwrites its files and deletes a stale ``adapter/``:
    `train --output-dir ~/project` would have deleted ~/project/adapter (hostile check, 2026-12-04)."""
    known = SHIPPED_FILES | {RUN_CARD, "compare.json"}
    return [rel for rel in _files(directory) if rel not in known and not rel.startswith("model-card-plots/")]


def _files(directory: Path) -> list[str]:
    """Every file (or link) under ``directory``, as a relative POSIX path, sorted."""
    if not directory.is_dir():
        return []
    return [p.relative_to(directory).as_posix() for p in sorted(directory.rglob("*")) if not p.is_dir() or p.is_symlink()]


_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_artifact_name(name: str) -> str:
    """``name`` if it is one plain directory name under the models folder, else ShipError.

    ``--name ../victim`` or an absolute ``--name /some/dir`` replaced that directory (its old
    contents deleted) with the artifact; an empty name tried to rename the models folder into
    itself (hostile check, 2026-12-04)."""
    if not _ARTIFACT_NAME.fullmatch(name) or name.strip(".") == "" or ".." in name:
        raise ShipError(f"artifact name {name!r}: use a plain directory name under detectors/models/, e.g. {SHIPPED_NAME}")
    return name


def _evaluation_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ShipError(f"{path} is not a readable evaluation report ({type(exc).__name__})") from exc
    if not isinstance(report, dict):
        raise ShipError(f"{path} is not an evaluation report (not a JSON object)")
    return report


@dataclass(frozen=True)
class Shipped:
    destination: Path
    version: str
    evaluated: bool
    card: Path | None
    left_out: tuple[str, ...] = ()  # files of the run directory that are not part of an artifact


# What an artifact is (modeling.save_artifact, lexical view, LoRA adapter, reports, v2 scores):
# only these are copied into the source tree. The whole run directory used to be copied,
# symlinks followed, so a stray file there (a key a link pointed at, a dump of prompts) would
# have been committed with the model (hostile check, 2026-12-04).
SHIPPED_FILES = frozenset({
    "manifest.json", "heads.safetensors", "calibration.json", "lexical.safetensors",
    TRAINING_REPORT, EVALUATION_REPORT, "validation-scores.npz",
    "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
})


def _same_artifact(source: Path, destination: Path) -> bool:
    """Do ``source`` and ``destination`` hold the same artifact files, byte for byte?"""
    import filecmp

    names = [rel for rel in sorted(SHIPPED_FILES) if (source / rel).is_file() or (destination / rel).is_file()]
    return bool(names) and all(
        (source / rel).is_file() and (destination / rel).is_file() and filecmp.cmp(source / rel, destination / rel, shallow=False)
        for rel in names
    )


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

    check_artifact_name(name)
    if card is not None and card.is_dir():  # checked before the swap: a failed card write left a new artifact with the old card
        raise ShipError(f"model card {card} is a directory; name the markdown file to write")
    source = source.expanduser().resolve()
    # The allow-list names files, and a link on one of those names was followed: a run's
    # `validation-scores.npz` linking to a secret shipped the secret into the source tree as a
    # regular file (a hostile review, 2026-12-07). Ship copies files, never what links point at.
    for relative in sorted(SHIPPED_FILES):
        path = source / relative
        linked = next((p for p in (path.parent, path) if p != source and p.is_symlink()), None)
        if linked is not None:
            raise ShipError(f"{linked} is a symbolic link; ship copies the run's own files, not what a link points "
                            "at: copy the file into the run directory")  # fmt: skip
    try:
        manifest, _, _ = load_artifact(source)
    except ModelLoadError as exc:
        raise ShipError(f"{source} is not a loadable artifact: {exc}") from exc
    evaluation = source / EVALUATION_REPORT
    evaluated = evaluation.is_file()
    if evaluated:
        report = _evaluation_report(evaluation)
        version = report.get("artifact_version")
        if version != manifest.version:
            raise ShipError(f"{evaluation} scored {version!r}, not this artifact ({manifest.version!r})")
        # `evaluate --limit N` is a quick run, not the release evaluation: it is not reported
        # as one (a --limit -3 run scored 0 items and shipped as "evaluated"; 2026-12-04).
        evaluated = report.get("limit_per_kind") is None and report.get("items") != 0
    destination = models_root / name
    if destination.resolve() == source:
        raise ShipError(f"{source} is already the shipped artifact {name}")
    if _same_artifact(source, destination):
        # Shipping a copy of what is shipped changed nothing but the card, which the generator
        # renders for today's recipes, not the one v1.0.0 was trained with (a review, 2026-12-06).
        raise ShipError(f"{source} holds the same files as the shipped {name}; nothing to ship")
    if destination.exists() and not (destination / "heads.safetensors").is_file():
        # `--name history-gate-v1` replaced the history gate with a transformer artifact
        # (hostile check, 2026-12-04): only a transformer artifact is replaced by one.
        raise ShipError(f"{destination} is not a transformer artifact (no heads.safetensors); it is not replaced")
    models_root.mkdir(parents=True, exist_ok=True)
    staging = models_root / f".{name}.staging"
    previous = models_root / f".{name}.previous"
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    for relative in sorted(SHIPPED_FILES):
        if (source / relative).is_file():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, staging / relative)
    left_out = [rel for rel in _files(source) if rel not in SHIPPED_FILES | {RUN_CARD}]
    had_previous = destination.exists()
    if had_previous:
        destination.rename(previous)
    staging.rename(destination)
    written = None
    if card is not None and (destination / TRAINING_REPORT).is_file():
        from detectors.training.evaluate import write_model_card

        try:
            write_model_card(destination, card)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # The card is rendered from the reports the artifact carries; when they are not
            # readable, the swap is undone: a truncated training-report.json shipped the new
            # artifact under the old card, as exit 1 (hostile check, 2026-12-04).
            destination.rename(staging)
            if had_previous:
                previous.rename(destination)
            shutil.rmtree(staging, ignore_errors=True)
            raise ShipError(
                f"cannot write the model card from {source}/{TRAINING_REPORT} ({type(exc).__name__}: {exc}); nothing was shipped"
            ) from exc
        written = card
    shutil.rmtree(previous, ignore_errors=True)
    return Shipped(destination, manifest.version, evaluated, written, tuple(left_out))
