"""Settings that validated and then made the product silently do the wrong thing (a review of
configuration, 2026-12-06): each is now refused where it is read, with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.exits import ConfigError
from pipeline.settings import Settings


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"sinks": []}, "needs a sink that keeps verdicts"),
        ({"sinks": ["metrics"]}, "needs a sink that keeps verdicts"),
        ({"kafka": {"dead_letter_topic": "inference-logs"}}, "kafka.input_topic and kafka.dead_letter_topic"),
        ({"kafka": {"verdict_topic": "inference-logs"}}, "kafka.input_topic and kafka.verdict_topic"),
        ({"kafka": {"verdict_topic": "x", "dead_letter_topic": "x"}}, "kafka.verdict_topic and kafka.dead_letter_topic"),
        ({"gateway": {"topic": "misuse-verdicts"}}, "gateway.topic"),
        ({"stream": {"retry_initial_s": 1000}}, "stream.retry_initial_s"),
        ({"stream": {"retry_initial_s": 5, "retry_max_s": 1}}, "is above stream.retry_max_s"),
        ({"detectors": {"enabled": []}}, "enabled"),
        ({"gateway": {"prescreen": {"enabled": True, "detectors": []}}}, "detectors"),
        ({"gateway": {"spill_path": "data/g/x.jsonl", "rejected_path": "data/g/x.jsonl"}}, "is the spill file"),
        ({"pseudonym_key": "change-me-in-production\n"}, "whitespace at an end"),
        ({"pseudonym_key": " a-real-key-0123456789"}, "whitespace at an end"),
    ],
)
def test_a_setting_that_would_silently_misbehave_is_refused(overrides: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=None) as caught:
        Settings(**overrides)
    assert says in str(caught.value), str(caught.value)


def test_the_deadline_0_still_allows_any_wait() -> None:
    assert Settings(stream={"outage_deadline_s": 0, "retry_initial_s": 1000, "retry_max_s": 1000})
    assert Settings(stream={"outage_deadline_s": 30})  # below the stall limits: allowed (the docstring says why)


def test_alerts_without_a_sink_that_keeps_verdicts_are_allowed() -> None:
    """An alerting-only stream keeps its decisions in the alert database."""
    assert Settings(sinks=["alerts"]).sinks == ["alerts"]


def test_direct_alerts_without_receivers_are_said_by_the_sink_and_the_test_command(tmp_path: Path, caplog) -> None:
    """Every alert went to nobody, and `alerts test` printed "6 rule(s) OK" and nothing else. It
    is allowed (an alert database as the only output), but said; `test --send` refuses it."""
    from typer.testing import CliRunner

    from pipeline.alerts.cli import app
    from pipeline.metrics import PipelineMetrics
    from pipeline.sinks.alerts import AlertsSink

    settings = Settings(alerts={"notify": "direct", "db_url": f"sqlite:///{tmp_path / 'a.db'}", "run_dispatcher": False},
                        sinks=["alerts"])
    with caplog.at_level("WARNING", logger="pipeline.sinks.alerts"):
        AlertsSink.create(settings, PipelineMetrics()).close()
    assert "every alert would go to nobody" in caplog.text
    config = tmp_path / "alerts.yaml"
    config.write_text(f"db_url: sqlite:///{tmp_path / 'a.db'}\nnotify: direct\n")
    result = CliRunner().invoke(app, ["--alerts-config", str(config), "test"])
    assert result.exit_code == 0 and "every alert would go to nobody" in result.stderr, result.output
    sent = CliRunner().invoke(app, ["--alerts-config", str(config), "test", "--send"])
    assert sent.exit_code != 0 and isinstance(sent.exception, ConfigError)
