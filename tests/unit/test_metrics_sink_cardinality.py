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
