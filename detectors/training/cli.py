"""``misuse-monitor train``, ``evaluate`` and ``model ship`` (typer sub-app).

Wired as ``misuse-monitor model train|evaluate|ship`` and, for the first two, also as the
top-level ``misuse-monitor train`` / ``evaluate``. Training and evaluation write to a run
directory (default under ``ship.runs_root()``, outside the source tree) and refuse the shipped
models folder; only ``model ship DIR`` replaces the shipped artifact and docs/model-card.md.
Heavy imports (torch, transformers) happen inside the commands.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from detectors.training.ship import (
    MODELS_ROOT,
    RUN_CARD,
    SHIPPED_CARDS,
    SHIPPED_NAME,
    ShipError,
    ShippedTreeError,
    check_artifact_name,
    foreign_files,
    refuse_card,
    refuse_shipped_tree,
    runs_root,
    ship_artifact,
)
from pipeline.stdio import path_or_dash

app = typer.Typer(help="Train, evaluate and ship the transformer detector.", no_args_is_help=True)

SHIPPED_ARTIFACT = MODELS_ROOT / SHIPPED_NAME


def _run_dir(directory: Path | None, default: Path, option: str) -> Path:
    """A directory train/evaluate may write: outside the shipped models, and not a file (checked
    before minutes of training or scoring, not at the end of them)."""
    resolved = _outside_shipped(directory or default, option)
    if resolved.exists() and not resolved.is_dir():
        raise typer.BadParameter(f"{directory or default} exists and is not a directory", param_hint=option)
    return resolved


def _check_threads(threads: int | None) -> None:
    """--threads above the usable cores (check_threads) is a usage error here: 100000 hung the
    command until it was killed."""
    from detectors._guard_common import GuardConfigError, check_threads

    try:
        check_threads(threads)
    except GuardConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--threads") from exc


def _card(card: Path, *, shipped_card_ok: bool, option: str = "--model-card") -> Path:
    """A model card path this command may write (ship.refuse_card), else a usage error (exit 2)."""
    if card.is_dir():
        raise typer.BadParameter(f"{card} is a directory; name the markdown file to write", param_hint=option)
    try:
        return refuse_card(card, shipped_card_ok=shipped_card_ok)
    except ShipError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _outside_shipped(path: Path, option: str) -> Path:
    try:
        return refuse_shipped_tree(path)
    except ShippedTreeError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


@app.command("train")
def train(
    output_dir: Annotated[
        Path | None, typer.Option(help="Artifact directory to write (default: <runs>/train-<recipe>, outside the source tree)")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache (not committed)")] = Path("data/training-cache"),
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed (numpy takes 0 to 2**32 - 1)")] = 1234,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    target_precision: Annotated[
        float, typer.Option(min=0.01, max=0.999, help="Precision the thresholds aim for on held-out sources")
    ] = 0.90,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores)")] = None,
    model_card: Annotated[Path | None, typer.Option(help="Model card to write (default: model-card.md in the output directory)")] = None,
    recipe: Annotated[
        str,
        typer.Option(
            help="holdout: heads on the frozen backbone, calibrated on held-out sources (v1.0, shipped); "
            "lora: the same with LoRA fine-tuning of the backbone (v2.0); "
            "crossfit: cross-fitted over all allowed sources with a lexical view (v1.1); "
            "ensemble: the cross-fitting fold models shipped as an ensemble (v1.2)"
        ),
    ] = "holdout",
    lora_epochs: Annotated[int, typer.Option(min=1, help="LoRA recipe: passes over the training examples")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the training report as JSON on stdout (progress goes to stderr)")
    ] = False,
) -> None:
    """Assemble data from the packaged corpora, train, calibrate, write artifact + model card
    into a run directory (never the shipped one: `misuse-monitor model ship DIR` does that)."""
    _check_threads(threads)
    output_dir = _run_dir(output_dir, runs_root() / f"train-{recipe}", "--output-dir")
    if foreign := foreign_files(output_dir):
        raise typer.BadParameter(
            f"{output_dir} holds files a training run did not write ({', '.join(foreign[:3])}"
            f"{' ...' if len(foreign) > 3 else ''}); a run replaces its files there: name a new or run directory",
            param_hint="--output-dir",
        )
    # The card and the feature cache are written too: `--model-card detectors/models/<x>/card.md`
    # wrote into the shipped artifact after a full training (hostile check, 2026-12-04).
    model_card = _card(model_card or output_dir / RUN_CARD, shipped_card_ok=False)
    cache_dir = _outside_shipped(cache_dir, "--cache-dir")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO)
    from detectors.training.evaluate import write_model_card
    from detectors.training.train import TrainConfig, run_training

    if recipe not in ("holdout", "lora", "crossfit", "ensemble"):
        raise typer.BadParameter(f"unknown recipe {recipe!r}: holdout, lora, crossfit or ensemble", param_hint="--recipe")
    config = TrainConfig(
        output_dir=output_dir, cache_dir=cache_dir, seed=seed, epochs=epochs,
        target_precision=target_precision, threads=threads, fold_ensemble=recipe == "ensemble",
    )
    progress = _progress(as_json)
    if recipe in ("crossfit", "ensemble"):
        report = run_training(config, progress=progress)
    else:
        from detectors.training.finetune import LoraSettings, run_holdout_training

        settings = LoraSettings(epochs=lora_epochs) if recipe == "lora" else None
        report = run_holdout_training(config, settings, progress=progress)
    write_model_card(output_dir, model_card)
    if as_json:
        typer.echo(json.dumps({"output_dir": str(output_dir), "model_card": str(model_card), "report": report},
                              sort_keys=True, default=str))
    else:
        typer.echo(f"model card written to {model_card}")


def _progress(as_json: bool):  # noqa: ANN202 - a progress callback
    """Progress lines go to stdout, or to stderr when stdout carries the --json document."""
    return (lambda line: typer.echo(line, err=True)) if as_json else typer.echo


@app.command("evaluate")
def evaluate(
    model_dir: Annotated[Path, typer.Option(help="Artifact directory to evaluate")] = SHIPPED_ARTIFACT,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Where evaluation-report.json and model-card.md go (default: the artifact's own run "
                     "directory, or <runs>/evaluate-<name> for the shipped artifact or with --limit)"),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores)")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Max items per reserved set (quick runs; `model ship` does not count them as the evaluation)")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(parser=path_or_dash, help="Score existing verdicts against these labels instead (e.g. `simulate --truth`; '-': stdin)"),
    ] = None,
    verdicts: Annotated[
        Path | None, typer.Option(parser=path_or_dash, help="With --labels: verdict JSONL (`classify`; '-': stdin) or Parquet lake folder")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the scores (with --labels) or the evaluation report as JSON on stdout")
    ] = False,
) -> None:
    """Score the RESERVED evaluation sources with the artifact's pinned thresholds (evaluation only:
    nothing here feeds back into training, calibration or thresholds). Writes nothing into the
    shipped models folder. With --labels and --verdicts, score verdicts already written
    against reviewed labels instead (pipeline/labels.py)."""
    if labels is not None or verdicts is not None:
        from pipeline.labels import evaluate_command

        # Options of the reserved evaluation only: refused, not silently ignored (a newcomer's
        # review, 2026-12-06, passed --model-dir /nonexistent and got exit 0).
        for given, hint in ((model_dir != SHIPPED_ARTIFACT, "--model-dir"), (output_dir is not None, "--output-dir"),
                            (threads is not None, "--threads"), (limit is not None, "--limit")):
            if given:
                raise typer.BadParameter("not used with --labels/--verdicts (it is for the reserved evaluation)",
                                         param_hint=hint)
        evaluate_command(labels, verdicts, as_json)
        return
    _check_threads(threads)
    if not model_dir.is_dir():  # a folder named on the command line that does not exist: exit 2 (README)
        raise typer.BadParameter(f"{model_dir} is not a directory", param_hint="--model-dir")
    if output_dir is None:
        try:
            # A quick run never lands beside the artifact: it replaced the full evaluation report
            # there, and `model ship` then found none (a review, 2026-12-06).
            output_dir = refuse_shipped_tree(model_dir) if limit is None else runs_root() / f"evaluate-{model_dir.name}-quick"
        except ShippedTreeError:
            output_dir = runs_root() / f"evaluate-{model_dir.name}"
    output_dir = _run_dir(output_dir, output_dir, "--output-dir")
    _card(output_dir / RUN_CARD, shipped_card_ok=False, option="--output-dir")
    if limit is not None and _full_report(output_dir / "evaluation-report.json"):
        raise typer.BadParameter(f"{output_dir} holds a full evaluation report; a --limit run would replace it: "
                                 "choose another --output-dir", param_hint="--output-dir")  # fmt: skip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from detectors.training.evaluate import run_evaluation, write_model_card

    report = run_evaluation(model_dir, threads=threads, limit=limit, progress=_progress(as_json), output_dir=output_dir)
    if (model_dir / "training-report.json").is_file():
        try:
            write_model_card(model_dir, output_dir / RUN_CARD, evaluation_report=output_dir / "evaluation-report.json")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # was exit 1 after the whole evaluation
            from pipeline.exits import InputError

            raise InputError(
                f"evaluation report written to {output_dir}, but no model card: {model_dir}/training-report.json "
                f"is not a training report ({type(exc).__name__}: {exc})"
            ) from exc
    if as_json:
        typer.echo(json.dumps({"output_dir": str(output_dir), "report": report}, sort_keys=True))
        return
    typer.echo(report["summary_table"])
    typer.echo(f"report written to {output_dir}")


def _full_report(path: Path) -> bool:
    """Is ``path`` an evaluation report of every reserved item (no --limit)?"""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("limit_per_kind") is None and bool(report.get("items"))


@app.command("ship")
def ship(
    source: Annotated[Path, typer.Argument(help="Run directory holding the artifact to ship", exists=True, file_okay=False)],
    name: Annotated[str, typer.Option(help="Directory under detectors/models/ to replace")] = SHIPPED_NAME,
    model_card: Annotated[
        Path | None,
        typer.Option(help="Model card to rewrite from the shipped artifact (default: docs/model-card.md for "
                     f"{SHIPPED_NAME}, none for another --name)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was shipped as JSON")] = False,
) -> None:
    """Make SOURCE the shipped artifact: checks that it loads and that an evaluation report
    it carries is its own, swaps it into detectors/models/NAME and rewrites the model card.
    The decision to ship follows docs/model-releases.md; this command only carries it out."""
    from pipeline.exits import InputError

    try:
        check_artifact_name(name)
    except ShipError as exc:  # a bad --name is a usage error (exit 2), refused before anything is copied
        raise typer.BadParameter(str(exc), param_hint="--name") from exc
    model_card = _card(model_card, shipped_card_ok=True) if model_card is not None else SHIPPED_CARDS.get(name)
    try:
        shipped = ship_artifact(source, name=name, card=model_card)
    except ShipError as exc:
        raise InputError(str(exc)) from exc  # one line on stderr, exit 4 (pipeline/exits.py)
    if as_json:
        typer.echo(json.dumps({
            "version": shipped.version, "destination": str(shipped.destination), "evaluated": shipped.evaluated,
            "model_card": str(shipped.card) if shipped.card else None,
        }, sort_keys=True))
        return
    typer.echo(
        f"shipped {shipped.version} to {shipped.destination}"
        + ("" if shipped.evaluated else " (no full reserved evaluation report with it: `evaluate` without --limit)")
        + (f"; model card {shipped.card}" if shipped.card else "")
        + (f"; left out (not artifact files): {', '.join(shipped.left_out)}" if shipped.left_out else "")
    )


if __name__ == "__main__":
    app()
