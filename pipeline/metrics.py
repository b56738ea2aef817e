"""Prometheus metrics of the streaming job, on an injected registry.

Names carry units or ``_total``; labels are bounded (category, severity, side, model,
deployment, tenant, reason, sink, detector, topic, partition) and never a user or
request id. Tenants, models and deployments are few per installation; guards cap them
anyway so one bad gateway cannot explode cardinality: each label to ``max_label_values``
distinct values, and their combinations (model, deployment, tenant) to ``max_series``
(200 x 200 per-label values alone made 40,000 series of one counter in a hostile check);
values past a cap become ``__other__`` and are counted in ``mm_label_overflow_total{label}``.
First come, first served: values seen after the cap is reached (a real tenant after junk)
are grouped under ``__other__`` until the process restarts, unless the settings name them
(``metrics.known_models``, ``known_deployments``, ``known_tenants``: always exported, never
counted). A review (2026-12-07) found the caps still let one client make a 94 MB page of 106,000
lines: ``mm_flagged_total`` multiplies each combination by up to 48 (category x severity x
complied), values were up to 256 characters, and every counter had a ``_created`` line. So a value
is cut to ``max_label_chars`` (a hash keeps cut values apart), the flagged counter's full label
sets are capped at 4 x ``max_series``, and ``_created`` lines are off.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from pipeline.settings import MetricsSettings

OTHER = "__other__"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


# Every reason a record is dead-lettered for: the decoder's (pipeline/decode.py DecodeReason),
# the scorer's (pipeline/scoring.py, score_worker.py) and a sink's refusal (runner).
DEAD_LETTER_REASONS = (
    "too_large", "not_utf8", "invalid_json", "too_deep", "number_too_large", "duplicate_key", "not_an_object",
    "unsupported_schema", "invalid_record", "invalid_text", "timestamp_out_of_range", "empty",
    "detector_error", "verdict_error", "scorer_crashed", "sink_refused", "corrupt_record",
)


MAX_LABEL_CHARS = 64


@dataclass
class LabelGuard:
    """Admits the first ``max_values`` distinct keys (label values, or tuples of them); a later
    new key is refused (``admit``), and as a label value becomes ``__other__`` (``__call__``).
    ``known`` values are always admitted and not counted; a value is cut to ``max_chars``."""

    max_values: int
    known: frozenset[str] = frozenset()
    max_chars: int = MAX_LABEL_CHARS
    _seen: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, key: object) -> bool:
        with self._lock:
            if key in self._seen:
                return True
            if len(self._seen) < self.max_values:
                self._seen.add(key)
                return True
        return False

    def __call__(self, value: str | None) -> str:
        value = _query_safe(value or "unknown")
        if value in self.known:
            return value
        value = _cut(value, self.max_chars)
        return value if self.admit(value) else OTHER


# Grafana escapes each value of a multi-select variable for a regex (`tenant=~"$tenant"`), but in
# its default mode not `"` or `\`: a tenant named `evil", tenant=~"acme` added a matcher to
# every panel's query and showed acme's traffic (a hostile review, 2026-12-06). Such characters,
# and control characters, become `_` in the exported label.
_UNSAFE_IN_QUERIES = re.compile(r'["\\\x00-\x1f\x7f]')


def _query_safe(value: str) -> str:
    return _UNSAFE_IN_QUERIES.sub("_", value)


def _cut(value: str, max_chars: int) -> str:
    """``value``, or its start and 12 hex digits of its SHA-256 when longer than ``max_chars``."""
    if len(value) <= max_chars:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{value[: max_chars - 13]}~{digest}"


def _known_values(values: Iterable[str]) -> frozenset[str]:
    return frozenset(_query_safe(v) for v in values)


class Health:
    """What /healthz reports: each dependency (a sink, the broker) is up or down since a time.

    The process stays alive through an outage (it waits it out, see pipeline/runner.py), so an
    orchestrator's liveness probe should not kill it; /healthz answers 503 while a dependency is
    down so readiness probes and dashboards see the outage.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._down: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def up(self, component: str) -> None:
        with self._lock:
            self._down.pop(component, None)
        self._gauge.labels(component).set(1)

    def down(self, component: str, reason: str) -> None:
        with self._lock:
            since = self._down.get(component, (time.time(), ""))[0]
            self._down[component] = (since, reason[:300])
        self._gauge.labels(component).set(0)

    def report(self) -> tuple[bool, dict]:
        with self._lock:
            down = {c: {"since": since, "reason": reason} for c, (since, reason) in sorted(self._down.items())}
        return not down, {"status": "ok" if not down else "degraded", "down": down}


class PipelineMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, max_label_values: int = 200, max_series: int = 1000,
        max_label_chars: int = MAX_LABEL_CHARS, known_models: Iterable[str] = (),
        known_deployments: Iterable[str] = (), known_tenants: Iterable[str] = (),
    ) -> None:
        disable_created_metrics()  # a "_created" line beside each counter and histogram series (process-wide)
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.guard_model = LabelGuard(max_label_values, _known_values(known_models), max_label_chars)
        self.guard_deployment = LabelGuard(max_label_values, _known_values(known_deployments), max_label_chars)
        self.guard_tenant = LabelGuard(max_label_values, _known_values(known_tenants), max_label_chars)
        self._guard_series = LabelGuard(max_series)
        self._guard_flagged = LabelGuard(4 * max_series)
        self.label_overflow = Counter(
            "mm_label_overflow_total",
            "Verdicts whose model, deployment or tenant label (or their combination: label=series) was "
            "grouped under __other__ by the cardinality caps",
            ["label"],
            registry=r,
        )

        self.records_consumed = Counter(
            "mm_records_consumed_total", "Records read from the input topic", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "mm_dead_letters_total", "Records routed to the dead-letter topic", ["reason"], registry=r
        )
        # Every reason exported at 0 from the start: a series born at its first increment reads as
        # increase() 0, so `increase(...) > 0` alerts missed the one dead letter they exist for
        # (a review of the dashboards and rules, 2026-12-07).
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.dead_letters_truncated = Counter(
            "mm_dead_letters_truncated_total",
            "Dead letters the broker refused as too large, sent again with their value cut down",
            registry=r,
        )
        self.verdicts = Counter(
            "mm_verdicts_total",
            "Verdicts written, by outcome",
            ["model", "deployment", "tenant", "flagged", "severity"],
            registry=r,
        )
        self.flagged = Counter(
            "mm_flagged_total",
            "Flagged verdicts per category (a verdict counts once per category)",
            ["category", "model", "deployment", "tenant", "severity", "complied"],
            registry=r,
        )
        # part: which part of the record a finding points at (tool_definition, system, user,
        # assistant, tool_call, tool_result, prompt, completion, reasoning; "unknown" for
        # detectors that do not say).
        self.findings = Counter(
            "mm_findings_total", "Findings by category, side, detector and the part of the record they point at",
            ["category", "side", "detector", "part"], registry=r,
        )
        self.finding_score = Histogram(
            "mm_finding_score",
            "Calibrated scores of reported findings",
            ["category", "side"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "mm_batch_duration_seconds", "Wall time per micro-batch, poll excluded", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_records = Histogram(
            "mm_batch_records", "Records per micro-batch", buckets=(1, 8, 32, 64, 128, 256, 512, 1024), registry=r
        )
        self.detector_duration = Histogram(
            "mm_detector_duration_seconds", "Detector time per micro-batch", ["detector"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.sink_flush_duration = Histogram(
            "mm_sink_flush_duration_seconds", "write+flush time per sink and batch", ["sink"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.detector_errors = Counter(
            "mm_detector_errors_total", "Records (or sides) a detector could not judge, e.g. unreadable guard answers",
            ["detector"], registry=r,
        )
        self.sink_errors = Counter("mm_sink_errors_total", "Sink write/flush failures", ["sink"], registry=r)
        self.scoring_process_restarts = Counter(
            "mm_scoring_process_restarts_total",
            "Scoring processes (stream.scoring=process) started again after one died with a batch",
            registry=r,
        )
        self.commits = Counter("mm_offset_commits_total", "Offset commits", ["result"], registry=r)
        self.consumer_lag = Gauge(
            "mm_consumer_lag_records", "High watermark minus committed position", ["topic", "partition"], registry=r
        )
        self.last_commit = Gauge(
            "mm_last_commit_timestamp_seconds", "Unix time of the last successful offset commit", registry=r
        )
        self.rebalances = Counter("mm_rebalances_total", "Partition assignments and revocations", ["event"], registry=r)
        self.detector_info = Gauge(
            "mm_detector_info", "Detectors loaded by this process (value 1), with their pinned version",
            ["detector", "version"], registry=r,
        )
        # Language of each screened text (detectors/language.py): volumes, and texts in a language
        # no enabled detector reads (English-only backbones score them with English thresholds).
        # Bounded labels: side x CLD2's language codes (ISO 639-1).
        self.screened_texts = Counter(
            "mm_screened_texts_total", "Screened texts by side and detected language (ISO 639-1, und: undetermined)",
            ["side", "language"], registry=r,
        )
        self.unscreened_language_texts = Counter(
            "mm_unscreened_language_texts_total",
            "Screened texts in a language that no enabled detector reads, by side and language",
            ["side", "language"], registry=r,
        )
        self.trusted_system_prompts = Counter(
            "mm_trusted_system_prompts_total",
            "System and developer messages with trusted text (detectors.trusted_system_prompts) cut out, by what was left",
            ["role", "rest"], registry=r,
        )
        self.first_stage_records = Counter(
            "mm_first_stage_records_total",
            "Records screened by a detector's cheap first stage: skipped (not sent to the model) or escalated",
            ["detector", "outcome"], registry=r,
        )
        self.truncated_texts = Counter(
            "mm_detector_truncated_texts_total",
            "Screened texts longer than a detector's window cap: not every token was read (part: system, user, assistant, ...)",
            ["detector", "part"], registry=r,
        )
        self.first_pass_windows = Counter(
            "mm_detector_first_pass_windows_total",
            "Windows of earlier assistant turns ranked by a detector's cheap first pass: escalated (read by the model) or cleared (first pass only)",
            ["detector", "outcome"], registry=r,
        )

        self.component_up = Gauge(
            "mm_component_up", "1 while a dependency (sink, broker) works, 0 during an outage being waited out",
            ["component"], registry=r,
        )
        self.health = Health(self.component_up)
        self.in_flight_batches = Gauge(
            "mm_in_flight_batches", "Batches handed to the scoring and sink stages and not yet finished", registry=r
        )
        self.stage_busy = Counter(
            "mm_stage_busy_seconds_total", "Time each pipeline stage spent working (not waiting)", ["stage"], registry=r
        )

    @classmethod
    def from_settings(cls, settings: MetricsSettings, registry: CollectorRegistry | None = None) -> PipelineMetrics:
        return cls(
            registry, settings.max_label_values, settings.max_series, settings.max_label_chars,
            settings.known_models, settings.known_deployments, settings.known_tenants,
        )

    def series_labels(self, model: str | None, deployment: str | None, tenant: str | None) -> tuple[str, str, str]:
        """The (model, deployment, tenant) labels of one verdict, within both cardinality caps (a
        combination of known values, or of known values and unset ones, is always kept)."""
        key = (self.guard_model(model), self.guard_deployment(deployment), self.guard_tenant(tenant))
        for name, value in zip(("model", "deployment", "tenant"), key, strict=True):
            if value == OTHER:
                self.label_overflow.labels(name).inc()
        if self._known(key):
            return key
        if not self._guard_series.admit(key):
            self.label_overflow.labels("series").inc()
            return (OTHER, OTHER, OTHER)
        return key

    def _known(self, series: tuple[str, str, str]) -> bool:
        """Is each of (model, deployment, tenant) a known value of the settings, or unset?"""
        guards = (self.guard_model, self.guard_deployment, self.guard_tenant)
        return all(value in guard.known or value == "unknown" for value, guard in zip(series, guards, strict=True))

    def flagged_labels(self, category: str, series: tuple[str, str, str], severity: str, complied: str) -> tuple[str, ...]:
        """The labels of one flagged category of a verdict: its full label sets are capped at
        4 x max_series (each combination can have 48), past which the combination is __other__ (a
        known one is always kept)."""
        if not self._known(series) and not self._guard_flagged.admit((category, *series, severity, complied)):
            self.label_overflow.labels("flagged_series").inc()
            series = (OTHER, OTHER, OTHER)
        return (category, *series, severity, complied)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics and /healthz from a daemon thread; returns the bound port (0 picks one)."""
        registry, health = self.registry, self.health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, body = health.report()
                    payload, status, ctype = json.dumps(body).encode(), 200 if ok else 503, "application/json"
                elif path in ("/metrics", "/"):
                    payload, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                else:
                    payload, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="mm-metrics-http", daemon=True).start()
        self.http_port = server.server_address[1]
        return self.http_port
