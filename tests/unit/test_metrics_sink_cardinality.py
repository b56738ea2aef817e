"""The metrics sink's cardinality caps: per label and per (model, deployment, tenant) combination."""

from __future__ import annotations

from pipeline.metrics import OTHER, PipelineMetrics
from pipeline.sinks.base import ScoredRecord
from pipeline.sinks.metrics import MetricsSink
from pipeline.verdicts import Pseudonymizer, build_verdict
from tests.fixtures.logs import make_log


def _record(model: str, tenant: str) -> ScoredRecord:
    log = make_log(request_id=f"{model}-{tenant}", model=model, tenant_id=tenant)
    return ScoredRecord(log, build_verdict(log, [], Pseudonymizer(b"k")), None)


def test_combinations_of_allowed_label_values_are_capped_too() -> None:
    """A hostile check (2026-12-02): 200 models x 200 tenants, each under its own per-label cap,
    made 40,000 series of mm_verdicts_total (an 8.5 MB /metrics page)."""
    metrics = PipelineMetrics(max_label_values=20, max_series=50)
    sink = MetricsSink(metrics)
    sink.write([_record(f"model-{m}", f"tenant-{t}") for m in range(20) for t in range(20)])
    series = {
        (s.labels["model"], s.labels["deployment"], s.labels["tenant"])
        for metric in metrics.registry.collect() if metric.name == "mm_verdicts"
        for s in metric.samples if s.name == "mm_verdicts_total"
    }
    assert len(series) == 51 and (OTHER, OTHER, OTHER) in series  # 50 kept, the rest grouped
    total = sum(s.value for metric in metrics.registry.collect() if metric.name == "mm_verdicts"
                for s in metric.samples if s.name == "mm_verdicts_total")
    assert total == 400  # nothing uncounted
    assert metrics.registry.get_sample_value("mm_label_overflow_total", {"label": "series"}) == 350
    # A value past its per-label cap is counted as such.
    sink.write([_record("model-new", "tenant-0")])
    assert metrics.registry.get_sample_value("mm_label_overflow_total", {"label": "model"}) == 1


def test_a_label_value_that_would_rewrite_a_dashboard_query_is_exported_without_quotes() -> None:
    """Grafana escapes a multi-select variable for a regex but, in its default mode, not `"` or
    `\\`: with a tenant named `evil", tenant=~"acme`, the panels' `tenant=~"$tenant"` became
    `tenant=~"evil", tenant=~"acme"` and showed acme's traffic (a hostile review, 2026-12-06).
    What a dashboard variable can take is what Prometheus holds, so those characters (and
    control characters) are `_` there; other text is kept."""
    metrics = PipelineMetrics()
    sink = MetricsSink(metrics)
    sink.write([_record('qwen"3\\x', 'evil", tenant=~"acme'), _record("m", "acme corp (EU)\n")])
    tenants = {s.labels["tenant"] for metric in metrics.registry.collect() if metric.name == "mm_verdicts"
               for s in metric.samples}
    models = {s.labels["model"] for metric in metrics.registry.collect() if metric.name == "mm_verdicts"
              for s in metric.samples}
    assert tenants == {"evil_, tenant=~_acme", "acme corp (EU)_"} and models == {"qwen_3_x", "m"}


def _verdict(model: str, deployment: str, tenant: str, severity: str = "none", complied: bool | None = None,
             categories: tuple[str, ...] = ()) -> ScoredRecord:
    from datetime import UTC, datetime

    from pipeline.schemas import Category, MisuseVerdict, Severity

    verdict = MisuseVerdict(
        request_id="r", timestamp=datetime(2026, 12, 7, tzinfo=UTC), model=model, deployment=deployment,
        tenant_id=tenant, flagged=bool(categories), severity=Severity(severity),
        categories=[Category(c) for c in categories], complied=complied)
    return ScoredRecord(log=None, verdict=verdict)


def test_one_client_cannot_make_the_metrics_page_huge() -> None:
    """A review (2026-12-07): 1,200 combinations of 256-character model, deployment and tenant
    names, each with one unflagged verdict and twelve flagged in every category (4 severities x 3
    complied values), made 106,176 lines and 94 MB of /metrics under the caps: mm_flagged_total
    had up to 48 series per combination, and every counter a _created line. Now the flagged
    counter's label sets are capped at 4 x max_series, values are cut to 64 characters and there
    are no _created lines: 9,102 lines, about 2.6 MB."""
    from prometheus_client import generate_latest

    from pipeline.schemas import Category

    metrics = PipelineMetrics()
    sink = MetricsSink(metrics)
    pad = lambda s: (s + "x" * 256)[:256]  # noqa: E731
    categories = tuple(c.value for c in Category)
    for i in range(1200):
        names = (pad(f"m{i % 200}-"), pad(f"d{i // 200}-"), pad(f"t{i % 200}-"))
        sink.write([_verdict(*names)] + [_verdict(*names, severity, complied, categories)
                                         for severity in ("low", "medium", "high", "critical")
                                         for complied in (True, False, None)])
    page = generate_latest(metrics.registry).decode()
    lines = [line for line in page.splitlines() if line and not line.startswith("#")]
    assert not any("_created" in line for line in lines)
    assert sum(line.startswith("mm_flagged_total{") for line in lines) == 4000 + 48  # the cap, and the __other__ sets
    assert len(lines) < 10_000 and len(page) < 3_000_000
    assert max(len(v) for v in {s.labels["tenant"] for m in metrics.registry.collect() for s in m.samples
                                if "tenant" in s.labels}) == 64
    # Nothing uncounted: every flagged category of every verdict is in some series.
    total = sum(s.value for m in metrics.registry.collect() if m.name == "mm_flagged" for s in m.samples)
    assert total == 1200 * 12 * len(categories)
    assert metrics.registry.get_sample_value("mm_label_overflow_total", {"label": "flagged_series"}) > 0


def test_long_label_values_are_cut_and_kept_apart() -> None:
    metrics = PipelineMetrics(max_label_chars=32)
    a, b = "tenant-" + "a" * 100 + "-1", "tenant-" + "a" * 100 + "-2"
    labels = {metrics.guard_tenant(a), metrics.guard_tenant(b)}
    assert len(labels) == 2 and all(len(label) == 32 and label.startswith("tenant-aaaaaa") for label in labels)
    assert metrics.guard_tenant("acme") == "acme"


def test_known_tenants_and_models_are_exported_after_junk_filled_the_caps() -> None:
    """A review (2026-12-07): the caps are first come, first served, so 200 junk model names sent
    first put a real bank's high-severity cyber abuse under model="__other__" until a restart.
    The settings can name the real ones: always exported, never counted in a cap."""
    from pipeline.settings import MetricsSettings

    metrics = PipelineMetrics.from_settings(MetricsSettings(
        max_label_values=5, max_series=5, known_models=["gpt-4o"], known_tenants=["victim-bank"]))
    sink = MetricsSink(metrics)
    sink.write([_record(f"junk-{i}", f"junk-{i}") for i in range(50)])
    sink.write([_verdict("gpt-4o", None, "victim-bank", "high", False, ("cyber_abuse",))])
    flagged = {(s.labels["model"], s.labels["deployment"], s.labels["tenant"])
               for m in metrics.registry.collect() if m.name == "mm_flagged" for s in m.samples}
    assert flagged == {("gpt-4o", "unknown", "victim-bank")}  # known values, or unset ones: always kept
    assert metrics.guard_model("junk-49") == OTHER
    # A deployment that is set must be known too, or the combination counts in the cap.
    sink.write([_verdict("gpt-4o", "prod", "victim-bank", "high", False, ("cyber_abuse",))])
    assert metrics.registry.get_sample_value("mm_flagged_total", {
        "category": "cyber_abuse", "model": OTHER, "deployment": OTHER, "tenant": OTHER, "severity": "high",
        "complied": "false"}) == 1


def test_a_known_combination_keeps_its_flagged_series_after_junk_filled_that_cap() -> None:
    """A review of my diff (2026-12-07): known combinations passed the series cap but not the cap
    on mm_flagged_total's label sets, so 84 junk combinations (4 x 1,000 / 48) put a known
    tenant's flagged counts under __other__."""
    from pipeline.schemas import Category

    metrics = PipelineMetrics(max_series=2, known_tenants=["acme"], known_models=["gpt"])
    sink = MetricsSink(metrics)
    categories = tuple(c.value for c in Category)
    for i in range(5):
        sink.write([_verdict(f"junk-{i}", None, f"junk-{i}", "high", True, categories)])
    sink.write([_verdict("gpt", None, "acme", "high", True, ("cyber_abuse",))])
    assert metrics.registry.get_sample_value("mm_flagged_total", {
        "category": "cyber_abuse", "model": "gpt", "deployment": "unknown", "tenant": "acme", "severity": "high",
        "complied": "true"}) == 1
