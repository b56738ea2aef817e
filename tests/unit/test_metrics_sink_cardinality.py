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
