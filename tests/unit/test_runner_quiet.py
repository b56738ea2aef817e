"""The stream's idea of "quiet": ``Pipeline._read_everything`` turns the broker's answer about the
owned partitions into idle time, an outage, or neither.

The broker's side runs for real in tests/integration/test_stream_outages.py (an outage longer
than ``--max-idle``, and one past the deadline). Here the source's answers are scripted, to reach
the cases a real broker does not produce on demand: the same unread range reported twice with
nothing fetched (the guard that keeps a bounded run from waiting forever), and the deadline
arithmetic.
"""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from pipeline import runner
from pipeline.metrics import PipelineMetrics
from pipeline.runner import OutageError, Pipeline
from pipeline.settings import Settings


class ScriptedSource:
    """Answers ``unread`` from a list: a dict, None (joining) or an exception to raise."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.hooks = None

    def unread(self, timeout_s: float):  # noqa: ANN201 - the KafkaSource signature
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _pipeline(answers: list, **stream) -> tuple[Pipeline, PipelineMetrics]:
    settings = Settings(stream=stream) if stream else Settings()
    metrics = PipelineMetrics()
    return Pipeline(settings, ScriptedSource(answers), scorer=None, sinks=[], dead_letters=None, metrics=metrics), metrics


TP = TopicPartition("logs", 0)


def test_everything_read_is_quiet_and_unread_records_or_joining_are_not() -> None:
    pipeline, _ = _pipeline([{}, {TP: (10, 12)}, None])
    assert pipeline._read_everything() is True
    assert pipeline._read_everything() is False  # the broker holds two records not fetched yet
    assert pipeline._read_everything() is False  # joining the group


def test_the_same_unread_range_twice_with_nothing_fetched_counts_as_read() -> None:
    pipeline, _ = _pipeline([{TP: (10, 12)}, {TP: (10, 12)}, {TP: (11, 12)}])
    assert pipeline._read_everything() is False
    assert pipeline._read_everything() is True
    assert pipeline._read_everything() is False  # the position moved: records are being read


def test_no_answer_is_an_outage_on_healthz_until_the_broker_answers(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, metrics = _pipeline([KafkaTimeoutError("no answer"), KafkaTimeoutError("no answer"), {}, {}])
    assert pipeline._read_everything() is False
    assert pipeline._read_everything() is False
    healthy, report = metrics.health.report()
    assert not healthy and runner.BROKER in report["down"] and "no answer" in report["down"][runner.BROKER]["reason"]
    # The first answer ends the outage but does not yet confirm a quiet interval: time blocked by
    # a hung broker is not quiet time (test_stream_outages.py, a hung broker).
    assert pipeline._read_everything() is False
    assert metrics.health.report() == (True, {"status": "ok", "down": {}})
    assert pipeline._read_everything() is True
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.runner"]
    assert sum("does not answer" in w for w in warnings) == 1, warnings  # once per outage, not per check
    assert any("kafka recovered after" in w for w in warnings)


def test_an_outage_past_the_deadline_raises_with_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    pipeline, _ = _pipeline([KafkaTimeoutError("no answer")] * 3, outage_deadline_s=30)
    assert pipeline._read_everything() is False
    now[0] += 30  # at the deadline: still waiting
    assert pipeline._read_everything() is False
    now[0] += 1
    with pytest.raises(OutageError, match=r"kafka unavailable for 31 s \(deadline 30 s\): .*no answer"):
        pipeline._read_everything()


# -- a sink call that hangs (Pipeline._calling / _watch_calls; for real: test_stream_hung_sink.py)


def test_a_sink_call_past_sink_stall_s_is_reported_then_recovers(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    pipeline, metrics = _pipeline([], sink_stall_s=60)
    with pipeline._calling("postgres"):
        now[0] += 59
        pipeline._watch_calls()
        assert metrics.health.report()[0], "reported before sink_stall_s"
        now[0] += 2
        pipeline._watch_calls()
        pipeline._watch_calls()  # reported once, not once per check
        healthy, report = metrics.health.report()
        assert not healthy and "has not returned for 61 s" in report["down"]["postgres"]["reason"]
    assert metrics.health.report() == (True, {"status": "ok", "down": {}})  # it returned
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.runner"]
    assert sum("has not returned" in w for w in warnings) == 1 and any("postgres recovered after 61.0 s" in w for w in warnings)


def test_a_sink_call_hung_past_the_deadline_raises_from_the_polling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    pipeline, _ = _pipeline([], sink_stall_s=60, outage_deadline_s=300)
    pipeline._calls["sink"] = ("postgres", now[0])  # as _calling sets it in the sink stage
    now[0] += 300
    pipeline._watch_calls()  # at the deadline: still waiting
    now[0] += 1
    with pytest.raises(OutageError, match=r"postgres unavailable for 301 s \(deadline 300 s\): a call has not returned"):
        pipeline._watch_calls()


def test_a_hung_call_that_then_fails_is_left_to_the_retry_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    pipeline, metrics = _pipeline([], sink_stall_s=60)
    with pytest.raises(ConnectionError), pipeline._calling("postgres"):
        now[0] += 61
        pipeline._watch_calls()
        raise ConnectionError("server closed the connection")
    assert not metrics.health.report()[0], "a call that failed is not a recovery"
    assert pipeline._stalled == {}


def test_scoring_has_its_own_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of the default detector takes about a minute of CPU: scoring is watched against
    ``score_stall_s``, not the sinks' ``sink_stall_s``."""
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    pipeline, metrics = _pipeline([], sink_stall_s=60, score_stall_s=600)
    with pipeline._calling(runner.SCORING, stage="score"):
        now[0] += 120
        pipeline._watch_calls()
        assert metrics.health.report()[0], "scoring reported at the sinks' threshold"
        now[0] += 481
        pipeline._watch_calls()
        healthy, report = metrics.health.report()
        assert not healthy and "has not returned for 601 s" in report["down"][runner.SCORING]["reason"]
    assert metrics.health.report()[0]
