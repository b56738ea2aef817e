"""Detector options: a key no enabled detector reads, or a value a detector refuses, is a
configuration error (exit 3) naming it, never a silent default or an internal error.

Both were breaks found as a careless newcomer (2026-12-02): ``strucure: off`` was ignored and
the default used; ``structure: bogus`` or ``max_windows: x`` ended as "internal error" (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.base import DetectorConfig
from detectors.registry import RegistryError, build, check_options, discover
from pipeline.cli import main
from pipeline.exits import ExitCode


def test_every_detector_declares_distinct_option_keys() -> None:
    for name, cls in discover().items():
        assert len(set(cls.option_keys)) == len(cls.option_keys), name
    assert set(discover()["transformer"].option_keys) <= set(discover()["transformer_routed"].option_keys)


def test_a_key_no_enabled_detector_reads_is_refused_with_a_suggestion() -> None:
    known = discover()
    with pytest.raises(RegistryError, match=r"unknown key 'strucure' .*\(transformer\).*did you mean 'structure'"):
        check_options({"strucure": "off"}, [known["transformer"]], known)
    # A plain key of a detector that is not enabled: nothing would read it.
    with pytest.raises(RegistryError, match=r"unknown key 'flavor' .*\(transformer\)"):
        check_options({"flavor": "llama_guard"}, [known["transformer"]], known)
    with pytest.raises(RegistryError, match=r"unknown key 'x' .*\(rules\) reads it; they read no options"):
        check_options({"x": "1"}, [known["rules"]], known)
    with pytest.raises(RegistryError, match="unknown key 'transformer.strucure'"):
        check_options({"transformer.strucure": "off"}, [known["transformer"]], known)


def test_keys_an_enabled_detector_reads_and_namespaced_keys_of_known_detectors_pass() -> None:
    known = discover()
    check_options({"structure": "off", "mixed_findings": "by_part", "dtype": "float32"},
                  [known["transformer_routed"]], known)
    # One options dict serves every enabled detector: a guard's namespaced key may sit beside them.
    check_options({"llm_guard.threshold": "0.7", "stride": "96"}, [known["transformer"]], known)


def test_build_refuses_before_loading_anything() -> None:
    with pytest.raises(RegistryError, match="unknown key 'threshold'"):
        build(["rules", "noop"], DetectorConfig(options={"threshold": "0.5"}))


def _classify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              detectors: list[str], options: dict[str, str]) -> tuple[int, str]:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"schema": "inference-log/v1", "request_id": "r", "timestamp": "2026-01-01T00:00:00Z",
                               "model": "m", "prompt": "hi"}) + "\n")
    monkeypatch.setenv("MM_DETECTORS__ENABLED", json.dumps(detectors))
    monkeypatch.setenv("MM_DETECTORS__OPTIONS", json.dumps(options))
    code = int(main(["classify", str(src), "-o", str(tmp_path / "out.jsonl")]))
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    return code, err[0]


def test_classify_with_a_mistyped_option_key_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, line = _classify(tmp_path, monkeypatch, capsys, ["rules"], {"strucure": "off"})
    assert code == ExitCode.CONFIG and "unknown key 'strucure' in detectors.options" in line


@pytest.mark.ml
@pytest.mark.parametrize(("options", "said"), [
    ({"dtype": "bf16"}, "dtype must be one of float32, bfloat16, auto, not 'bf16'"),
    ({"max_windows": "x"}, "max_windows must be an integer, not 'x'"),
    ({"cache_size": "-1"}, "cache_size must be at least 0, not -1"),
    ({"max_windows": "-3"}, "max_windows must be at least 0, not -3"),
    ({"sentence_pass_max": "0"}, "sentence_pass_max must be at least 1, not 0"),
    ({"decode": "maybe"}, "decode must be true or false, not 'maybe'"),
    ({"quantize": "int4"}, "quantize must be none or int8, not 'int4'"),
    ({"quantize": "int8", "dtype": "bfloat16"}, "dtype bfloat16 cannot be combined with quantize int8"),
    ({"structure": "bogus"}, "structure must be one of off, prompt, keywords, all, not 'bogus'"),
    ({"assistant_jailbreak_threshold": "high"}, "assistant_jailbreak_threshold must be pinned, auto or a number in [0, 1], not 'high'"),
])
def test_classify_with_a_value_the_transformer_refuses_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: dict[str, str], said: str,
) -> None:
    code, line = _classify(tmp_path, monkeypatch, capsys, ["transformer"], options)
    assert code == ExitCode.CONFIG, line
    assert "detector transformer: invalid option in detectors.options" in line and said in line


def test_a_routing_option_value_is_refused_before_the_models_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, line = _classify(tmp_path, monkeypatch, capsys, ["transformer_routed"], {"mixed_findings": "some"})
    assert code == ExitCode.CONFIG and "mixed_findings must be one of all, by_part, not 'some'" in line
