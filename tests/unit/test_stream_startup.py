"""What a stream process does before it joins its group: the evidence redactor is built then
(not inside the first batch with a finding), and glibc's malloc arenas are capped."""

from __future__ import annotations

import pytest

from detectors.noop import NoopDetector
from detectors.rules import RulesDetector
from pipeline import memory, redact
from pipeline.scoring import Scorer
from pipeline.verdicts import Pseudonymizer


@pytest.fixture
def no_redactor(monkeypatch):
    """No redactor installed; building one is recorded instead of loading spaCy."""
    built = []

    class Fake:
        def spans(self, text):
            return []

    monkeypatch.setattr(redact, "_current", None)
    monkeypatch.setattr(redact.PresidioRedactor, "create", classmethod(lambda cls, *a, **k: built.append(1) or Fake()))
    return built


def test_preload_builds_the_redactor_for_detectors_that_cut_evidence(no_redactor):
    Scorer([RulesDetector()], Pseudonymizer(b"k" * 16)).preload()
    assert no_redactor == [1]
    # Built once per process: the first finding of the stream finds it ready, nothing is built again.
    ready = redact.current()
    assert redact.current() is ready and no_redactor == [1]


def test_preload_loads_nothing_for_the_noop_detector(no_redactor):
    Scorer([NoopDetector()], Pseudonymizer(b"k" * 16)).preload()
    assert no_redactor == []


def test_malloc_arenas_capped_unless_the_operator_chose(monkeypatch):
    calls = []

    class Libc:
        class mallopt:  # noqa: N801 - stands in for the C function
            def __new__(cls, param, value):
                calls.append((param, value))
                return 1

    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert memory.limit_malloc_arenas() is True
    assert calls == [(memory.M_ARENA_MAX, memory.STREAM_MALLOC_ARENAS)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert memory.limit_malloc_arenas() is False
    assert len(calls) == 1
