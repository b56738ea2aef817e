"""One settings object for every process, built once at the process edge.

Sources, highest priority first: init kwargs (CLI flags), environment variables with
prefix ``MM_`` (nested with ``__``, e.g. ``MM_KAFKA__BOOTSTRAP_SERVERS``), a YAML file
(``--config`` or ``MM_CONFIG``), then defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from detectors.base import DetectorConfig
from pipeline.alerts.settings import AlertSettings
from pipeline.gateway.settings import GatewaySettings
from pipeline.exits import ConfigError
from pipeline.postgres_settings import PostgresSettings
from pipeline.topics import TopicName
from pipeline.units import DAY_S, HOUR_S


# 255-byte file names, less the rest of `.<topic>-<partition>-<first>-<last>.parquet.tmp` at its
# longest (a 10-digit partition, two 19-digit offsets): 64 bytes.
MAX_LAKE_TOPIC_BYTES = 255 - 64

class Section(BaseModel):
    """A settings section: unknown keys are errors, so a typo never silently falls back."""

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: TopicName = "inference-logs"
    verdict_topic: TopicName = "misuse-verdicts"
    dead_letter_topic: TopicName = "inference-logs.dlq"
    group_id: str = "misuse-monitor"
    client_id: str = "misuse-monitor"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Passed through to kafka-python unchanged (SASL/TLS).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _distinct_topics(self) -> KafkaSettings:
        """The input, verdict and dead-letter topics are three topics. A dead-letter topic equal
        to the input fed each refused record back to be refused again, forever; a verdict topic
        equal to the input dead-lettered every verdict the stream read back (a review,
        2026-12-06)."""
        named = {"input_topic": self.input_topic, "verdict_topic": self.verdict_topic,
                 "dead_letter_topic": self.dead_letter_topic}
        for a, b in (("input_topic", "verdict_topic"), ("input_topic", "dead_letter_topic"),
                     ("verdict_topic", "dead_letter_topic")):
            if named[a] == named[b]:
                raise ValueError(f"kafka.{a} and kafka.{b} are both {named[a]!r}: give each its own topic")
        return self
    # Fetch must admit the largest record the broker accepts, or a big record stalls the
    # partition; it is then dead-lettered by the size check, not silently skipped.
    max_partition_fetch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**31 - 1)
    max_request_size: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**31 - 1)
    # A compressed record batch of the input topic is decompressed whole; past this many bytes
    # it is not read, and each of its records is a corrupt_record dead letter (a compression
    # bomb: 261 KB of gzip became 256 MiB; pipeline/kafka_batches.py).
    max_batch_decompressed_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, le=2**31 - 1)
    # The broker's own limits by default (group.min/max.session.timeout.ms); below 6 s
    # kafka-python refused to start (its heartbeat interval is 3 s), one line, but exit 1.
    session_timeout_ms: int = Field(default=30_000, ge=6_000, le=1_800_000)
    # A member that joined before a new topic's partitions were in its metadata gets an
    # empty assignment until the next refresh (kafka-python's default: 5 minutes).
    metadata_max_age_ms: int = Field(default=10_000, ge=1_000, le=int(HOUR_S * 1000))
    # 0 hung the stream (a 20-record run with --max-idle 3 had not ended after 60 s; 2026-12-04).
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000, le=int(DAY_S * 1000))
    # A member whose group membership makes no progress this long (no coordinator, or a
    # rejoin that never completes, and no batch of its own still draining) closes its
    # consumer and joins again with a new one: kafka-python 3.0.12 can lose a task of its
    # IO loop mid-rejoin and would otherwise poll forever without partitions.
    join_watchdog_s: float = Field(default=60.0, gt=0, le=HOUR_S)
    # `stream` and `produce` check that a broker accepts a TCP connection within this many
    # seconds before loading models, so a wrong address fails in seconds, not after minutes.
    connect_timeout_s: float = Field(default=5.0, gt=0, le=HOUR_S)
    # The longest wait between two attempts to reach a broker that went away. kafka-python
    # doubles the wait up to 30 s by default (the Java client: 1 s), so a stream resumed up to
    # 30 s after a broker came back (measured: 30 s after a restart, 2026-12-03).
    reconnect_backoff_max_ms: int = Field(default=2_000, gt=0, le=int(HOUR_S * 1000))

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        """Comma-separated ``host[:port]`` entries, read as kafka-python reads them; empty entries
        and schemes dropped. An empty list, a port that is not a number or outside 1-65535 was
        reported as "no broker reachable" after the whole connect timeout, and the preflight
        could not read an entry with a scheme (probed 2026-12-04)."""
        from kafka.cluster import collect_hosts

        # kafka-python ignores a scheme (PLAINTEXT://, SSL://); so does this, for the preflight's sake.
        entries = [e.strip().split("://", 1)[-1] for e in value.split(",") if e.strip()]
        if not entries:
            raise ValueError("no bootstrap server given (host:port, comma-separated)")
        for entry in entries:
            try:
                [(host, port, _)] = collect_hosts(entry, randomize=False)
            except ValueError:
                raise ValueError(f"{entry!r}: the port is not a number") from None
            if not host or not 1 <= port <= 65535:
                raise ValueError(f"{entry!r}: not host:port with a port from 1 to 65535")
        return ",".join(entries)

    def with_bootstrap(self, servers: str) -> KafkaSettings:
        """A copy with other bootstrap servers, validated (``model_copy`` would not check them).
        Every caller is a command's ``--bootstrap``: a value refused is a usage error naming it
        (exit 2; it was "invalid KafkaSettings", exit 4, or an internal error from the client)."""
        import typer
        from pydantic import ValidationError

        try:
            return type(self).model_validate({**self.model_dump(), "bootstrap_servers": servers})
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            raise typer.BadParameter(problem, param_hint="--bootstrap") from None

    def client_options(self) -> dict[str, Any]:
        """Connection and security options common to producers, consumers and admin."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": (
                self.sasl_plain_password.get_secret_value() if self.sasl_plain_password else None
            ),
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        opts.update({k: v for k, v in optional.items() if v is not None})
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts["ssl_check_hostname"] = self.ssl_check_hostname
        return opts


class BatchSettings(Section):
    max_records: int = Field(default=256, ge=1)
    max_wait_ms: int = Field(default=500, ge=1, le=int(HOUR_S * 1000))
    # Records larger than this are dead-lettered before parsing (reason too_large).
    max_record_bytes: int = Field(default=1024 * 1024, ge=1024)


class StreamSettings(Section):
    """How the streaming job overlaps its stages and waits out outages (pipeline/runner.py)."""

    # Batches handed out but not yet committed (scoring one while the sinks flush another).
    max_in_flight_batches: int = Field(default=2, ge=1, le=16)
    # A sink or the broker failing is retried with capped exponential backoff, keeping the
    # uncommitted batch; the process exits (one-line reason) only after this long. 0: never.
    outage_deadline_s: float = Field(default=900.0, ge=0, le=30 * DAY_S)
    retry_initial_s: float = Field(default=0.5, gt=0, le=HOUR_S)
    retry_max_s: float = Field(default=30.0, gt=0, le=HOUR_S)
    # A sink call (a write or flush) that has not returned after this long is an outage too
    # (/healthz, mm_component_up, the deadline above): a hung database (SIGSTOP, a frozen VM) or
    # a network that drops packets answers nothing, and raises nothing. Above the clients' own
    # timeouts (kafka-python's 30 s request timeout, PostgreSQL's 30 s statement_timeout).
    sink_stall_s: float = Field(default=60.0, gt=0, le=DAY_S)
    # The same for the scoring of one batch (a hung GPU, a stopped scoring worker). Well above a
    # slow batch: the default detector takes about 0.11 s of CPU per record, so 512 records ~1 min.
    score_stall_s: float = Field(default=600.0, gt=0, le=DAY_S)
    # Where decode + detect + verdict JSON run: "inline" (a thread of this process) or "process"
    # (one worker process, pipeline/score_worker.py; the stream process keeps Kafka and the sinks).
    scoring: Literal["inline", "process"] = "inline"
    # The offsets being scored are written here first (one small file per partition,
    # pipeline/scoring_journal.py), so that a record that crashes the process, or hangs its
    # scoring past the deadline, is found and dead-lettered after a restart. Both scoring modes:
    # a scoring process survives a crash itself, but not a hang. None: a "journal" folder beside
    # lake.path.
    journal_dir: Path | None = None
    # Simulated records scored before the first poll (no metrics, no sinks; Scorer.warm_up), so
    # that first calls (lazy caches, torch's kernels) are paid at start-up rather than inside the
    # first batch. Off by default: with 16, the rules detectors' stream took 0.95x the CPU per
    # record, but the default detector's gained nothing measurable (docs/benchmarks.md). 0: none.
    warm_up_records: int = Field(default=0, ge=0, le=1024)

    @model_validator(mode="after")
    def _first_retry_fits(self) -> StreamSettings:
        """A first retry longer than the outage deadline made one failed flush end the run at
        once (a review, 2026-12-06). (A stall limit above the deadline is allowed: a call is an
        outage only once it stalled that long, so the deadline is reached then.)"""
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(f"stream.retry_initial_s ({self.retry_initial_s:g}) is above stream.retry_max_s "
                             f"({self.retry_max_s:g})")
        deadline = self.outage_deadline_s
        if 0 < deadline <= self.retry_initial_s:
            raise ValueError(f"stream.retry_initial_s ({self.retry_initial_s:g} s) must be below stream.outage_deadline_s "
                             f"({deadline:g} s), or set the deadline to 0 (never)")
        return self



class DetectorSettings(Section):
    # English records to the MiniLM artifact, the rest to multilingual-e5-small (detectors/routed.py).
    enabled: list[str] = Field(default_factory=lambda: ["transformer_routed"], min_length=1)
    model_dir: Path | None = None
    device: str = "auto"
    # Windows per forward pass. 16 rather than 32: scoring's peak RSS 127 MB lower at the same
    # records/s (median of three fresh processes each, bench/bench_batch_memory.py).
    batch_size: int = Field(default=16, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1, le=1024)  # None: the usable cores
    options: dict[str, str] = Field(default_factory=dict)
    # The operator's own system prompts: cut out of system and developer messages (whitespace aside)
    # before screening, the rest of such a message screened (pipeline/trusted.py; README, "Detectors").
    trusted_system_prompts: list[str] = Field(default_factory=list)

    @field_validator("options", mode="before")
    @classmethod
    def _scalar_options_as_text(cls, value: object) -> object:
        """YAML numbers and booleans as the text a detector option parses (`threshold: 0.5`,
        `self_check: true`): they were refused as "Input should be a valid string" although
        docs/guard_models.md writes them so (a newcomer review, 2026-12-07)."""
        if not isinstance(value, dict):
            return value
        def text(v: object) -> object:
            if isinstance(v, bool):
                return "true" if v else "false"
            return str(v) if isinstance(v, int | float) else v
        return {k: text(v) for k, v in value.items()}

    @field_validator("trusted_system_prompts")
    @classmethod
    def _no_blank_prompt(cls, prompts: list[str]) -> list[str]:
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"item {i} is blank: a trusted system prompt is the whole text of one")
        return prompts

    def config(self) -> DetectorConfig:
        return DetectorConfig(
            model_dir=self.model_dir,
            device=self.device,
            batch_size=self.batch_size,
            threads=self.threads,
            options=dict(self.options),
        )


class LakeSettings(Section):
    path: Path = Path("data/lake")
    # Which rows keep their inference log (prompt, completion; identifiers pseudonymised) next
    # to the verdict: none | flagged | all. Only kept logs can be re-scored by `spark backfill`.
    # Every row keeps keyed hashes, lengths and the verdict (pipeline/privacy.py, docs/privacy.md).
    raw_text: Literal["none", "flagged", "all"] = "flagged"
    # AES-256-GCM key for the kept logs, base64 of 32 bytes (`misuse-monitor lake keygen`);
    # set it from the environment (MM_LAKE__ENCRYPTION_KEY), never in a config file.
    encryption_key: SecretStr | None = None
    # `misuse-monitor lake prune` default: date partitions older than this many days go.
    retention_days: int = Field(default=30, ge=1, le=36_500)  # a century: beyond, dates overflow

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key_readable(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked with the settings (exit 3 at the start): the lake sink built its cipher after the
        # broker check and the models' load, and its error was an internal one (exit 1; 2026-12-07).
        if value is not None:
            from pipeline.privacy import TextCipher

            TextCipher.key_bytes(value.get_secret_value())  # PrivacyKeyError is a ValueError; no cryptography needed
        return value


class MetricsSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535, description="0 disables the endpoint")
    # Caps on the label values a client sets (model, deployment, tenant; pipeline/metrics.py).
    max_label_values: int = Field(default=200, ge=1, description="distinct values per label, then __other__")
    max_series: int = Field(default=1000, ge=1, description="(model, deployment, tenant) combinations, then __other__")
    max_label_chars: int = Field(default=64, ge=20, le=1024, description="longer values are cut and hashed")
    known_models: list[str] = Field(default_factory=list, description="always exported, never counted in a cap")
    known_deployments: list[str] = Field(default_factory=list, description="always exported, never counted in a cap")
    known_tenants: list[str] = Field(default_factory=list, description="always exported, never counted in a cap")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MM_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    sinks: list[str] = Field(default_factory=lambda: ["verdict_topic", "lake", "metrics"])
    pseudonym_key: SecretStr = SecretStr("change-me-in-production")

    @field_validator("pseudonym_key")
    @classmethod
    def _pseudonym_key_set(cls, value: SecretStr) -> SecretStr:
        # An empty MM_PSEUDONYM_KEY= (a template left unfilled) would fail deep in scoring.
        key = value.get_secret_value()
        if not key.strip():
            raise ValueError("must not be empty (docs/privacy.md: how to set the key)")
        # A line end from a secret file changed every pseudonym (resolve, run with the clean key,
        # found nothing) and let the padded placeholder past the stream's refusal (2026-12-06).
        if key != key.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise ValueError("has whitespace at an end or a control character (a line end from a secret file?)")
        return value

    @field_validator("sinks")
    @classmethod
    def _a_sink_that_keeps_verdicts(cls, sinks: list[str]) -> list[str]:
        # With no sink (or metrics alone) every record was consumed, scored and committed, and no
        # verdict was kept anywhere (a review, 2026-12-06).
        if not set(sinks) - {"metrics"}:
            raise ValueError("needs a sink that keeps verdicts (verdict_topic, lake, postgres or alerts), "
                             f"not {sinks!r}")
        return sinks

    @model_validator(mode="after")
    def _lake_file_names_fit(self) -> Settings:
        # A lake file is named `<topic>-<partition>-<first>-<last>.parquet` (and written as
        # `.<name>.tmp` first); a file name is at most 255 bytes. Kafka allows topic names of
        # 249 characters: a 240-character one failed every write with "File name too long",
        # waited out as an outage, then exit 9 at every restart (a hostile review, 2026-12-06).
        if "lake" in self.sinks and len(self.kafka.input_topic.encode()) > MAX_LAKE_TOPIC_BYTES:
            raise ValueError(
                f"kafka.input_topic is {len(self.kafka.input_topic.encode())} bytes long; with the lake sink it can be at "
                f"most {MAX_LAKE_TOPIC_BYTES} (the lake's file names hold it, and a file name is at most 255 bytes)"
            )
        return self

    @model_validator(mode="after")
    def _gateway_writes_the_input(self) -> Settings:
        topic = self.gateway.topic
        if topic is not None and topic in (self.kafka.verdict_topic, self.kafka.dead_letter_topic):
            raise ValueError(f"gateway.topic {topic!r} is the verdict or dead-letter topic: logs go to the input topic")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML source reads model_config["yaml_file"]; load_settings() sets it.
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


class MissingConfigFile(ConfigError, FileNotFoundError):
    """``--config`` / ``MM_CONFIG`` names no file (exit code CONFIG, not INPUT)."""


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings; ``config`` is a YAML file (else ``MM_CONFIG``), overrides win.

    An ``MM_*`` variable no setting reads whose name says it holds a secret is refused (exit 3):
    ``MM_LAKE_ENCRYPTION_KEY`` (one underscore) only warned, and the stream kept every log in the
    lake unencrypted (hostile review, 2026-12-07)."""
    from pipeline.exits import misspelt_secret_env_vars

    if secrets := misspelt_secret_env_vars():
        raise ConfigError(f"{secrets[0].removesuffix('; it is ignored')}: a secret no setting reads, so nothing runs until "
                          "its name is fixed (an encryption or pseudonym key lost this way leaves data unprotected)")
    path = config or (Path(os.environ["MM_CONFIG"]) if os.environ.get("MM_CONFIG") else None)
    if path is None:
        return Settings(**overrides)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a YAML file")
    if not path.is_file():
        raise MissingConfigFile(f"config file not found: {path}")
    _check_top_level(path)
    with_file = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}})
    return with_file(**overrides)


def _check_top_level(path: Path) -> None:
    """The file is UTF-8 YAML whose top level is a mapping (or empty); else one ConfigError
    naming the file. pydantic-settings fails on a list or a scalar with a bare TypeError."""
    from pipeline.yamlfile import load_yaml

    try:
        with path.open(encoding="utf-8") as fh:
            data = load_yaml(fh)  # a syntax error or a key written twice keeps its file:line mark (exits.describe_yaml_error)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of sections (kafka:, detectors:, ...), "
            f"not a {'list' if isinstance(data, list) else 'single value'}"
        )
