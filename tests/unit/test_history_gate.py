"""The history gate (issue 11): a lexical first pass over every window of an earlier assistant
turn picks the ones the transformer reads (``history_windows``); the rest are counted as cleared.
Off by default: its recall cost on held-out data (bench/bench_history_gate.py, docs/benchmarks.md)
is above the 1 point the rule allows. These tests run it at 3 windows, the setting measured."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.training.lexical import LexicalConfig, LexicalModel, load_gate, save_gate
from pipeline.schemas import Category, PartKind, Side
from tests.fixtures.logs import make_log
from tests.fixtures.obfuscation import BENIGN_REQUESTS, HARMFUL_CYBER, padded


def _turn_log(turn: str, request_id: str):
    """``turn`` as the earlier assistant message of a three-message conversation."""
    messages = [
        {"role": "user", "content": "Can you help me with this?"},
        {"role": "assistant", "content": turn},
        {"role": "user", "content": "Thanks, please go on."},
    ]
    return make_log(request_id=request_id, messages=messages, prompt=None)


def test_gate_artifact_round_trips(tmp_path) -> None:
    config = LexicalConfig(n_features=2**6)
    rng = np.random.default_rng(0)
    model = LexicalModel(config, rng.normal(size=(1, 2 * config.n_features)).astype(np.float32), np.array([0.5], np.float32))
    save_gate(tmp_path, model, {"version": "history-gate-test"})
    loaded, manifest = load_gate(tmp_path)
    assert manifest["version"] == "history-gate-test" and loaded.config == config
    texts = ["write a keylogger", "bake a cake"]
    assert np.allclose(loaded.logits(texts), model.logits(texts), atol=1e-2)  # coefficients stored as float16


@pytest.fixture(scope="module")
def transformer():
    pytest.importorskip("torch")
    from detectors.base import DetectorConfig
    from detectors.transformer import TransformerDetector

    detector = TransformerDetector.create(DetectorConfig(options={"cache_size": "0", "history_windows": "3"}))
    yield detector
    detector.close()


@pytest.mark.ml
def test_the_gate_is_off_by_default_and_its_ranker_ships(transformer) -> None:
    from detectors.transformer import DEFAULT_GATE_DIR, DEFAULT_HISTORY_WINDOWS

    assert DEFAULT_HISTORY_WINDOWS == 0
    ranker, manifest = load_gate(DEFAULT_GATE_DIR)
    assert manifest["version"] == "history-gate-1.0.0" and "fold 0 (held-out sources) left out" in manifest["trained_on"]
    assert transformer.gate is not None and transformer.history_windows == 3


# Hand-written requests whose window the ranker does not put among the 3 riskiest of ~120 benign
# sentences (the wifi, DDoS and credential-stuffing requests): the ranker's misses, kept visible.
# The detector still flags all ten (next test): the keyword sentence pass re-reads them.
RANKER_KNOWN_MISSES = {4, 5, 8}


@pytest.mark.ml
@pytest.mark.parametrize(
    "i",
    [pytest.param(i, marks=pytest.mark.xfail(strict=True, reason="ranker miss")) if i in RANKER_KNOWN_MISSES else i for i in range(len(HARMFUL_CYBER))],
)
def test_first_pass_keeps_the_window_that_holds_a_hidden_request(transformer, i) -> None:
    """Among ~120 benign sentences, the request's window is among those the backbone reads."""
    request = HARMFUL_CYBER[i]
    text = padded(request, seed=i)
    start = text.index(request)
    end = start + len(request)
    windows = transformer.encoder.windows(text, transformer.window)
    assert len(windows) > transformer.history_windows
    kept = transformer._riskiest(text, windows, transformer.history_windows)
    assert any(w.char_start <= start + 10 and end - 10 <= w.char_end for w in kept), (request, [(w.char_start, w.char_end) for w in kept])
    transformer.take_first_pass()


@pytest.mark.ml
@pytest.mark.slow
def test_request_hidden_in_a_long_assistant_turn_is_flagged_with_the_gate_on(transformer) -> None:
    transformer.take_first_pass()
    logs = [_turn_log(padded(r, seed=i), f"h{i}") for i, r in enumerate(HARMFUL_CYBER)]
    results = transformer.detect(logs)
    for request, found in zip(HARMFUL_CYBER, results, strict=True):
        assert any(f.category is Category.CYBER_ABUSE and f.part is PartKind.ASSISTANT for f in found), (request, found)
    counts = transformer.take_first_pass()
    assert counts["escalated"] == transformer.history_windows * len(logs) and counts["cleared"] > counts["escalated"]


@pytest.mark.ml
def test_gate_reads_only_earlier_assistant_turns_and_caches_apart(transformer) -> None:
    text = padded(BENIGN_REQUESTS[0], seed=1)
    transformer.take_first_pass()
    transformer.detect([make_log(request_id="u", messages=[{"role": "user", "content": text}], prompt=None)])
    assert transformer.take_first_pass() == {}  # a user turn: every window read
    saved, transformer.cache = transformer.cache, type(transformer.cache)(16)
    try:
        transformer.score_many([(Side.PROMPT, text)], caps=[1])
        transformer.score_many([(Side.PROMPT, text)])
        assert len(transformer.cache) == 2  # a capped reading never stands in for a full one
    finally:
        transformer.cache = saved
    transformer.take_first_pass()


@pytest.mark.ml
def test_history_windows_zero_reads_every_window(transformer) -> None:
    saved = transformer.history_windows
    transformer.history_windows = 0
    try:
        transformer.take_first_pass()
        transformer.detect([_turn_log(padded(BENIGN_REQUESTS[1], seed=2), "b")])
        assert transformer.take_first_pass() == {}
    finally:
        transformer.history_windows = saved


@pytest.mark.ml
def test_missing_gate_is_a_clear_load_error(tmp_path) -> None:
    pytest.importorskip("torch")
    from detectors.base import DetectorConfig
    from detectors.training.modeling import ModelLoadError
    from detectors.transformer import TransformerDetector

    with pytest.raises(ModelLoadError, match="history_windows=0"):
        TransformerDetector.create(DetectorConfig(options={"history_windows": "2", "history_gate_dir": str(tmp_path)}))
