"""Windowing, evidence and the score cache of the transformer detector (tokenizer only)."""

from __future__ import annotations

import pytest

from detectors.training.modeling import WindowConfig, backbone_path, make_windows
from detectors.transformer import LRUCache, TextScores, evidence_snippet
from pipeline.schemas import EVIDENCE_MAX_CHARS, Side


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)


def test_short_text_is_one_window_with_special_tokens(tokenizer) -> None:
    windows = make_windows(tokenizer, "how do I kill a stuck process", WindowConfig())
    assert len(windows) == 1
    w = windows[0]
    assert w.input_ids[0] == tokenizer.cls_token_id and w.input_ids[-1] == tokenizer.sep_token_id
    assert (w.char_start, w.char_end) == (0, len("how do I kill a stuck process"))


def test_empty_text_still_gets_a_window(tokenizer) -> None:
    assert len(make_windows(tokenizer, "", WindowConfig())) == 1


def test_long_text_windows_overlap_and_cover_the_end(tokenizer) -> None:
    text = " ".join(f"word{i}" for i in range(400))
    config = WindowConfig(max_tokens=64, stride=48, max_windows=100)
    windows = make_windows(tokenizer, text, config)
    assert len(windows) > 2
    assert all(len(w.input_ids) <= 64 for w in windows)
    assert windows[0].char_start == 0 and windows[-1].char_end == len(text)
    for a, b in zip(windows, windows[1:]):
        assert b.char_start < a.char_end  # consecutive windows overlap


def test_window_cap_keeps_first_and_last(tokenizer) -> None:
    text = "benign filler sentence. " * 300 + "PAYLOAD at the very end"
    windows = make_windows(tokenizer, text, WindowConfig(max_tokens=64, stride=48, max_windows=4))
    assert len(windows) == 4
    assert windows[0].char_start == 0
    assert "PAYLOAD" in text[windows[-1].char_start : windows[-1].char_end]


def test_evidence_is_short_and_redacted() -> None:
    text = "prefix " * 50 + "mail me at victim@example.com or see https://evil.example/x?id=1, card 4111 1111 1111 1111 " * 5
    start = len("prefix " * 50)
    snippet = evidence_snippet(text, start, len(text))
    assert len(snippet) <= EVIDENCE_MAX_CHARS
    assert snippet.startswith("…")
    assert "victim@example.com" not in snippet and "https://evil" not in snippet and "4111 1111" not in snippet
    assert "<EMAIL>" in snippet


def test_lru_cache_evicts_least_recently_used() -> None:
    cache = LRUCache(2)
    scores = TextScores({}, {}, {})
    keys = [LRUCache.key(Side.PROMPT, t) for t in ("a", "b", "c")]
    cache.put(keys[0], scores)
    cache.put(keys[1], scores)
    assert cache.get(keys[0]) is scores  # "a" is now most recent
    cache.put(keys[2], scores)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is scores and len(cache) == 2
    assert LRUCache.key(Side.PROMPT, "x") != LRUCache.key(Side.COMPLETION, "x")


def test_serving_stride_option_sets_the_overlap_and_rejects_gaps(tokenizer) -> None:
    """``detectors.options.stride``: 0 keeps the artifact's, a value up to the window body sets
    the serving overlap, a larger one would leave tokens in no window and is refused."""
    pytest.importorskip("torch")
    from detectors.base import DetectorConfig
    from detectors.transformer import TransformerDetector

    default = TransformerDetector.create(DetectorConfig(device="cpu", threads=1))
    body = default.window.max_tokens - 2
    wider = TransformerDetector.create(DetectorConfig(device="cpu", threads=1, options={"stride": str(body)}))
    assert wider.window.stride == body and default.window.stride == default.manifest.window.stride
    text = " ".join(f"word{i}" for i in range(600))
    windows = make_windows(tokenizer, text, wider.window)
    assert windows[-1].char_end == len(text)
    for a, b in zip(windows, windows[1:]):
        assert b.char_start >= a.char_end  # no overlap, and (consecutive token ranges) no gap
    with pytest.raises(ValueError, match="stride must be between 1 and"):
        TransformerDetector.create(DetectorConfig(device="cpu", threads=1, options={"stride": str(body + 1)}))
