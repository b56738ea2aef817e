import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.settings import load_settings

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_settings_from_env_and_yaml_file(tmp_path, monkeypatch):
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("kafka:\n  input_topic: from-yaml\n  group_id: g-yaml\nbatch:\n  max_records: 64\n")
    monkeypatch.delenv("MM_CONFIG", raising=False)
    monkeypatch.setenv("MM_KAFKA__GROUP_ID", "g-env")
    monkeypatch.setenv("MM_KAFKA__SASL_PLAIN_PASSWORD", "s3cret")
    s = load_settings(cfg)
    assert (s.kafka.input_topic, s.kafka.group_id, s.batch.max_records) == ("from-yaml", "g-env", 64)
    assert "s3cret" not in repr(s)
    monkeypatch.setenv("MM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MM_KAFKA__SASL_MECHANISM", "PLAIN")
    opts = load_settings(cfg).kafka.client_options()
    assert opts["sasl_plain_password"] == "s3cret" and opts["security_protocol"] == "SASL_SSL"


def test_every_kafka_client_retries_a_lost_broker_every_two_seconds_at_most(monkeypatch):
    """kafka-python's own cap is 30 s: a stream resumed about 30 s after a broker restart."""
    monkeypatch.delenv("MM_CONFIG", raising=False)
    assert load_settings().kafka.client_options()["reconnect_backoff_max_ms"] == 2_000
    monkeypatch.setenv("MM_KAFKA__RECONNECT_BACKOFF_MAX_MS", "500")
    assert load_settings().kafka.client_options()["reconnect_backoff_max_ms"] == 500
    monkeypatch.setenv("MM_KAFKA__RECONNECT_BACKOFF_MAX_MS", "0")
    with pytest.raises(ValueError, match="reconnect_backoff_max_ms"):
        load_settings()


def test_stream_warm_up_is_off_by_default_and_bounded(monkeypatch):
    """A careless value fails in one line before anything loads (not a stream that scores a
    million simulated records, or none at all without saying so)."""
    monkeypatch.delenv("MM_CONFIG", raising=False)
    assert load_settings().stream.warm_up_records == 0
    monkeypatch.setenv("MM_STREAM__WARM_UP_RECORDS", "16")
    assert load_settings().stream.warm_up_records == 16
    for bad in ("-1", "1000000", "abc"):
        monkeypatch.setenv("MM_STREAM__WARM_UP_RECORDS", bad)
        with pytest.raises(ValueError, match="warm_up_records"):
            load_settings()


def _durations(model, prefix=""):
    """Dotted paths of every float setting under ``model`` (sections, not lists of them)."""
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections:
            yield from _durations(sections[0], f"{prefix}{name}.")
        elif float in args:
            yield prefix + name


@pytest.mark.parametrize("value", [".inf", "1.0e+300", ".nan"])
def test_every_duration_setting_refuses_inf_nan_and_absurd_values_in_one_line(monkeypatch, tmp_path, value):
    """``kafka.connect_timeout_s: .inf`` (a natural way to write "never") passed validation, and
    ``stream`` then ended with "internal error: OverflowError: timestamp out of range"; Python's
    waits overflow on such values. Every float setting has an upper bound now."""
    from pipeline.alerts.settings import ReceiverSettings
    from pipeline.settings import Settings

    monkeypatch.delenv("MM_CONFIG", raising=False)
    paths = list(_durations(Settings))
    assert len(paths) >= 16 and "kafka.connect_timeout_s" in paths
    for path in paths:
        *sections, key = path.split(".")
        cfg = tmp_path / "mm.yaml"
        cfg.write_text("".join(f"{'  ' * i}{name}:\n" for i, name in enumerate(sections)) + f"{'  ' * len(sections)}{key}: {value}\n")
        with pytest.raises(ValueError, match=key):
            load_settings(cfg)
    as_float = {".inf": float("inf"), "1.0e+300": 1e300, ".nan": float("nan")}[value]
    with pytest.raises(ValueError, match="timeout_s"):  # a list of sections: not walked above
        ReceiverSettings(name="ops", type="webhook", url="http://127.0.0.1:9/hook", secret="s", timeout_s=as_float)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MM_KAFKA__SESSION_TIMEOUT_MS", "1"), ("MM_KAFKA__MAX_POLL_INTERVAL_MS", "0"), ("MM_KAFKA__MAX_REQUEST_SIZE", "-1"),
     ("MM_KAFKA__MAX_PARTITION_FETCH_BYTES", "0"), ("MM_KAFKA__METADATA_MAX_AGE_MS", "-1"),
     ("MM_BATCH__MAX_WAIT_MS", "100000000000000"), ("MM_DETECTORS__BATCH_SIZE", "0"), ("MM_DETECTORS__THREADS", "-1"),
     ("MM_LAKE__RETENTION_DAYS", "1000000000"), ("MM_POSTGRES__RETENTION_DAYS", "100000000"),
     ("MM_KAFKA__RECONNECT_BACKOFF_MAX_MS", "999999999999999"),  # had no upper bound (a review, 2026-12-06)
     ("MM_POSTGRES__STATEMENT_TIMEOUT_MS", "3000000000")],
)
def test_integer_settings_out_of_range_are_config_errors(monkeypatch, variable, value):
    """Probed on a real broker (2026-12-04): max_poll_interval_ms 0, max_request_size -1 and
    max_wait_ms 1e14 hung the stream (a 20-record run with --max-idle 3 had not ended after
    60 s); session_timeout_ms 1 was kafka-python's error with exit 1; the others were accepted
    (batch_size 0 breaks the transformer's batching, threads -1 torch's). ``lake prune`` with
    lake.retention_days 1e9 was an internal error (OverflowError). Each is now one config line
    naming the key."""
    monkeypatch.delenv("MM_CONFIG", raising=False)
    monkeypatch.setenv(variable, value)
    key = variable.split("__")[1].lower()
    with pytest.raises(ValueError, match=key):
        load_settings()


@pytest.mark.parametrize("servers", ["", " , ", "127.0.0.1:abc", "127.0.0.1:99999", "host:0", ":9092"])
def test_bootstrap_servers_that_name_no_broker_are_config_errors(monkeypatch, servers):
    """Each was "no broker reachable" after the whole connect timeout (5 s), as if the broker
    were down; now the setting is refused at once, naming the entry."""
    from pipeline.settings import KafkaSettings

    monkeypatch.delenv("MM_CONFIG", raising=False)
    monkeypatch.setenv("MM_KAFKA__BOOTSTRAP_SERVERS", servers)
    with pytest.raises(ValueError, match="bootstrap_servers"):
        load_settings()
    import typer

    with pytest.raises(typer.BadParameter, match="host:port|port"):  # --bootstrap of gateway, lag-exporter, report
        KafkaSettings().with_bootstrap(servers)


@pytest.mark.parametrize(
    ("servers", "read"),
    [(" a:1 , b:2 ,", "a:1,b:2"), ("PLAINTEXT://h:9092", "h:9092"), ("[::1]:9092", "[::1]:9092"), ("kafka", "kafka")],
)
def test_bootstrap_servers_are_read_as_kafka_python_reads_them(servers, read):
    from pipeline.settings import KafkaSettings

    assert KafkaSettings(bootstrap_servers=servers).bootstrap_servers == read


def test_an_infinite_connect_timeout_is_one_line_not_an_internal_error(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "stream", "--bootstrap", "127.0.0.1:1", "--detectors", "noop"],
                          env={**os.environ, "MM_KAFKA__CONNECT_TIMEOUT_S": "inf"},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "misuse-monitor: error: settings: kafka.connect_timeout_s: Input should be less than or equal to 3600 (got 'inf')"
    ]


def test_unknown_settings_are_rejected(monkeypatch, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("kafka:\n  bootstrap: x\n")
    with pytest.raises(ValueError, match="bootstrap"):
        load_settings(cfg)
    monkeypatch.delenv("MM_CONFIG", raising=False)


def test_classify_writes_one_line_per_input_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MM_CONFIG", raising=False)
    good = [
        {"schema": "inference-log/v1", "request_id": f"g{i}", "timestamp": "2026-11-28T10:00:00Z", "model": "m", "prompt": p}
        for i, p in enumerate(["Write a phishing email to steal passwords", "what is the capital of France"])
    ]
    src = tmp_path / "in.jsonl"
    bad = (FIXTURES / "malformed.jsonl").read_bytes().splitlines()
    src.write_bytes(b"\n".join([json.dumps(good[0]).encode(), bad[0], bad[5], json.dumps(good[1]).encode()]) + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules", "--allow-errors"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("request_id") or line["reason"] for line in lines] == ["g0", "invalid_json", "not_utf8", "g1"]
    assert lines[0]["flagged"] is True and lines[3]["flagged"] is False
    assert lines[1]["line"] == 2 and lines[0]["schema"] == "misuse-verdict/v1"


@pytest.mark.parametrize(
    "yaml_text",
    ["postgres: {ulr: postgresql://x}\n", "alerts: {notfy: direct}\n", "alerts: {alertmanager: {urlz: [http://x]}}\n",
     "alerts: {delivery: {retries: 3, retrys: 5}}\n"],
)
def test_mistyped_keys_in_nested_sections_are_rejected(tmp_path, yaml_text):
    """A careless newcomer (2026-12-02): these were accepted and the default URL or notifier used."""
    from pydantic import ValidationError

    cfg = tmp_path / "settings.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_settings(cfg)


def test_detector_option_values_written_as_yaml_numbers_and_booleans_are_read_as_text(tmp_path, monkeypatch):
    """A newcomer review (2026-12-07): `threshold: 0.5` and `self_check: true`, as
    docs/guard_models.md writes them, were "Input should be a valid string" (exit 3)."""
    monkeypatch.delenv("MM_CONFIG", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("detectors:\n  options:\n    hf_classifier.threshold: 0.5\n    llm_guard.self_check: true\n"
                      "    transformer.max_windows: 16\n    llm_guard.flavor: qwen3guard\n")
    options = load_settings(config).detectors.options
    assert options == {"hf_classifier.threshold": "0.5", "llm_guard.self_check": "true",
                       "transformer.max_windows": "16", "llm_guard.flavor": "qwen3guard"}
    config.write_text("detectors:\n  options:\n    transformer.labels: [a, b]\n")
    with pytest.raises(ValueError, match="valid string"):  # a list is still no option value
        load_settings(config)


def test_a_key_written_twice_in_a_settings_file_is_an_error_naming_its_line(tmp_path):
    """A hostile review (2026-12-07): PyYAML keeps the last of two equal keys, so a file with
    `detectors:` twice lost the first block's trusted_system_prompts without a word."""
    import yaml

    from pipeline.exits import describe_yaml_error

    cfg = tmp_path / "settings.yaml"
    cfg.write_text("detectors:\n  trusted_system_prompts: [x]\nlake:\n  raw_text: none\ndetectors:\n  enabled: [rules]\n")
    with pytest.raises(yaml.YAMLError) as caught:
        load_settings(cfg)
    assert describe_yaml_error(caught.value) == f"invalid YAML at {cfg}:5:1: the key 'detectors' is written twice"
    nested = tmp_path / "nested.yaml"
    nested.write_text("lake:\n  raw_text: none\n  raw_text: all\n")
    with pytest.raises(yaml.YAMLError, match="'raw_text' is written twice"):
        load_settings(nested)
    same_key_elsewhere = tmp_path / "ok.yaml"  # one name in two mappings is not a repeat
    same_key_elsewhere.write_text("lake:\n  retention_days: 5\npostgres:\n  retention_days: 7\n")
    loaded = load_settings(same_key_elsewhere)
    assert (loaded.lake.retention_days, loaded.postgres.retention_days) == (5, 7)
