"""``misuse-monitor train`` and ``misuse-monitor evaluate`` (typer sub-app).

Wire as: ``app.add_typer(detectors.training.cli.app, name="model")`` for
``misuse-monitor model train|evaluate``, or register the functions directly:
``app.command("train")(detectors.training.cli.train)`` and
``app.command("evaluate")(detectors.training.cli.evaluate)``.
Heavy imports (torch, transformers) happen inside the commands.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Train and evaluate the transformer detector.", no_args_is_help=True)

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "models" / "transformer-minilm-v1"
DEFAULT_CARD = Path(__file__).resolve().parents[2] / "docs" / "model-card.md"


@app.command("train")
def train(
    output_dir: Annotated[Path, typer.Option(help="Artifact directory to write")] = DEFAULT_OUTPUT,
    cache_dir: Annotated[Path, typer.Option(help="Feature cache (not committed)")] = Path("data/training-cache"),
    seed: Annotated[int, typer.Option()] = 1234,
    epochs: Annotated[int, typer.Option()] = 40,
    target_precision: Annotated[float, typer.Option(help="Precision the thresholds aim for on held-out sources")] = 0.90,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores)")] = None,
    model_card: Annotated[Path, typer.Option(help="Model card to (re)write")] = DEFAULT_CARD,
    recipe: Annotated[
        str,
        typer.Option(
            help="holdout: heads on the frozen backbone, calibrated on held-out sources (v1.0, shipped); "
            "lora: the same with LoRA fine-tuning of the backbone (v2.0); "
            "crossfit: cross-fitted over all allowed sources with a lexical view (v1.1); "
            "ensemble: the cross-fitting fold models shipped as an ensemble (v1.2)"
        ),
    ] = "holdout",
    lora_epochs: Annotated[int, typer.Option(help="LoRA recipe: passes over the training examples")] = 2,
) -> None:
    """Assemble data from the packaged corpora, train, calibrate, write artifact + model card."""
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
    if recipe in ("crossfit", "ensemble"):
        run_training(config, progress=typer.echo)
    else:
        from detectors.training.finetune import LoraSettings, run_holdout_training

        settings = LoraSettings(epochs=lora_epochs) if recipe == "lora" else None
        run_holdout_training(config, settings, progress=typer.echo)
    write_model_card(output_dir, model_card)
    typer.echo(f"model card written to {model_card}")


@app.command("evaluate")
def evaluate(
    model_dir: Annotated[Path, typer.Option(help="Artifact directory to evaluate")] = DEFAULT_OUTPUT,
    model_card: Annotated[Path, typer.Option(help="Model card to (re)write")] = DEFAULT_CARD,
    threads: Annotated[int | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option(help="Max items per reserved set (quick runs)")] = None,
) -> None:
    """Score the RESERVED evaluation sources with the shipped thresholds (evaluation only:
    nothing here feeds back into training, calibration or thresholds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from detectors.training.evaluate import run_evaluation, write_model_card

    report = run_evaluation(model_dir, threads=threads, limit=limit, progress=typer.echo)
    write_model_card(model_dir, model_card)
    typer.echo(report["summary_table"])


if __name__ == "__main__":
    app()
