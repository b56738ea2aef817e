"""Training and evaluation never write the shipped model; `model ship DIR` is the one step that
does, and it refuses what would break serving (an unloadable artifact, another model's
evaluation report), leaving the previous artifact in place."""

from __future__ import annotations

import functools
import json
import shutil

import pytest
from typer.testing import CliRunner

from detectors.training import cli as training_cli
from detectors.training.ship import (
    DEFAULT_CARD,
    MODELS_ROOT,
    SHIPPED_NAME,
    ShipError,
    refuse_shipped_tree,
    runs_root,
    ship_artifact,
)
from tests.fixtures.tiny_checkpoints import build_tiny_minilm_artifact, tree_mtimes

pytestmark = pytest.mark.ml

SHIPPED = MODELS_ROOT / SHIPPED_NAME


def test_run_directories_default_outside_the_source_tree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runs_root() == tmp_path / "misuse-monitor" / "runs"
    assert refuse_shipped_tree(runs_root() / "train-holdout") == (tmp_path / "misuse-monitor/runs/train-holdout").resolve()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_refuse_the_shipped_models_folder(command) -> None:
    before = tree_mtimes(MODELS_ROOT)
    target = MODELS_ROOT / SHIPPED_NAME
    result = CliRunner().invoke(training_cli.app, [command, "--output-dir", str(target)])
    assert result.exit_code == 2
    assert "model ship" in result.output
    assert tree_mtimes(MODELS_ROOT) == before


def test_train_writes_its_artifact_and_card_to_a_run_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    seen = {}

    def fake_training(config, settings, progress):  # the shipped artifact stands in for a trained one
        seen["output_dir"] = config.output_dir
        shutil.copytree(SHIPPED, config.output_dir, dirs_exist_ok=True)

    monkeypatch.setattr("detectors.training.finetune.run_holdout_training", fake_training)
    before, card_before = tree_mtimes(MODELS_ROOT), DEFAULT_CARD.stat().st_mtime_ns
    result = CliRunner().invoke(training_cli.app, ["train"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "misuse-monitor" / "runs" / "train-holdout"
    assert seen["output_dir"] == run.resolve()
    assert (run / "model-card.md").read_text().startswith("# Model card:")
    assert tree_mtimes(MODELS_ROOT) == before and DEFAULT_CARD.stat().st_mtime_ns == card_before


def test_evaluating_the_shipped_artifact_writes_its_report_elsewhere(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    seen = {}

    def fake_evaluation(model_dir, threads, limit, progress, output_dir):
        seen.update(model_dir=model_dir, output_dir=output_dir)
        return {"summary_table": "| set |"}

    monkeypatch.setattr("detectors.training.evaluate.run_evaluation", fake_evaluation)
    before = tree_mtimes(MODELS_ROOT)
    result = CliRunner().invoke(training_cli.app, ["evaluate"])
    assert result.exit_code == 0, result.output
    assert seen["model_dir"] == SHIPPED
    assert seen["output_dir"] == (tmp_path / "misuse-monitor" / "runs" / f"evaluate-{SHIPPED_NAME}").resolve()
    assert (seen["output_dir"] / "model-card.md").is_file()
    assert tree_mtimes(MODELS_ROOT) == before


def test_ship_swaps_in_a_loadablebuild_tiny_minilm_artifact(tmp_path) -> None:
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped", "transformer-minilm-v1.0.0")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9.9.9")
    (run / "evaluation-report.json").write_text(json.dumps({"artifact_version": "transformer-v9.9.9"}))
    (run / "model-card.md").write_text("run card")
    shipped = ship_artifact(run, name="shipped", models_root=root, card=None)
    assert shipped.version == "transformer-v9.9.9" and shipped.evaluated
    manifest = json.loads((root / "shipped" / "manifest.json").read_text())
    assert manifest["version"] == "transformer-v9.9.9"
    assert not (root / "shipped" / "model-card.md").exists()  # the shipped card lives in docs/
    assert sorted(p.name for p in root.iterdir()) == ["shipped"]  # no staging leftovers


def test_ship_refuses_unloadable_or_foreign_artifacts_and_keeps_the_old_one(tmp_path) -> None:
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped", "transformer-minilm-v1.0.0")
    broken = build_tiny_minilm_artifact(tmp_path / "broken", "transformer-v2")
    (broken / "heads.safetensors").unlink()
    with pytest.raises(ShipError, match="not a loadable artifact"):
        ship_artifact(broken, name="shipped", models_root=root, card=None)
    foreign = build_tiny_minilm_artifact(tmp_path / "foreign", "transformer-v2")
    (foreign / "evaluation-report.json").write_text(json.dumps({"artifact_version": "transformer-minilm-v1.0.0"}))
    with pytest.raises(ShipError, match="not this artifact"):
        ship_artifact(foreign, name="shipped", models_root=root, card=None)
    assert json.loads((root / "shipped" / "manifest.json").read_text())["version"] == "transformer-minilm-v1.0.0"


def test_ship_command_is_an_input_error_on_a_directory_without_anbuild_tiny_minilm_artifact(tmp_path, capsys) -> None:
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    before = tree_mtimes(MODELS_ROOT)
    code = main(["model", "ship", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.INPUT
    assert err.count("\n") == 0 and err.startswith("misuse-monitor: error: ") and "not a loadable artifact" in err
    assert tree_mtimes(MODELS_ROOT) == before


def test_ship_command_json(tmp_path, monkeypatch) -> None:
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped", "transformer-minilm-v1.0.0")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9.9.9")
    # the real ship_artifact, aimed at a models folder under tmp_path instead of the source tree
    monkeypatch.setattr(training_cli, "ship_artifact", functools.partial(ship_artifact, models_root=root))
    card = tmp_path / "card.md"
    result = CliRunner().invoke(training_cli.app, ["ship", str(run), "--name", "shipped", "--model-card", str(card), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "version": "transformer-v9.9.9", "destination": str(root / "shipped"), "evaluated": False,
        "model_card": None,  # a card is written only from an artifact's training-report.json
    }
    assert not card.exists()
    assert json.loads((root / "shipped" / "manifest.json").read_text())["version"] == "transformer-v9.9.9"


def test_evaluate_json_prints_the_report_and_sends_progress_to_stderr(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def fake_evaluation(model_dir, threads, limit, progress, output_dir):  # the reserved sets take minutes
        progress("scoring 2 items")
        return {"artifact_version": "v-test", "items": 2, "summary_table": "| set |"}

    monkeypatch.setattr("detectors.training.evaluate.run_evaluation", fake_evaluation)
    result = CliRunner().invoke(training_cli.app, ["evaluate", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["report"] == {"artifact_version": "v-test", "items": 2, "summary_table": "| set |"}
    assert doc["output_dir"] == str((tmp_path / "misuse-monitor" / "runs" / f"evaluate-{SHIPPED_NAME}").resolve())
    assert "scoring 2 items" in result.stderr
