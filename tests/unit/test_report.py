"""Report pieces that need no Spark: partial days, daily ticks, dominant-category colours,
volumes per tenant/deployment/model, detector versions (the full page is rendered from real
job output, and screenshotted, in tests/integration/spark/test_jobs.py)."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from pipeline import report  # noqa: E402


def _lake(timestamps: list[str]) -> pd.DataFrame:
    n = len(timestamps)
    return pd.DataFrame({
        "timestamp": pd.to_datetime(timestamps, utc=True),
        "tenant_id": (["acme", "globex", None] * n)[:n],
        "deployment": ["chat"] * n,
        "model": (["qwen3-32b", "llama"] * n)[:n],
        "flagged": ([True, False, False] * n)[:n],
        "categories": ([["jailbreak"], [], []] * n)[:n],
        "findings": ([[{"detector": "transformer", "detector_version": "1.0.0"}], [], []] * n)[:n],
    })


def test_partial_first_and_last_day_are_named() -> None:
    lake = _lake(["2026-11-01T14:05:00Z", "2026-11-02T12:00:00Z", "2026-11-03T09:10:00Z"])
    assert report.partial_days(lake) == {"2026-11-01": "from 14:05 UTC", "2026-11-03": "until 09:10 UTC"}
    full = _lake(["2026-11-01T00:10:00Z", "2026-11-02T23:30:00Z"])
    assert report.partial_days(full) == {}


def test_daily_ticks_over_three_days() -> None:
    agg = pd.DataFrame({
        "date": ["2026-11-01", "2026-11-02", "2026-11-03"] * 2,
        "category": ["all"] * 3 + ["jailbreak"] * 3,
        "records": [40, 100, 90, 4, 6, 5],
        "flagged": [4, 6, 5, 4, 6, 5],
    })
    fig = report.trend_figure(agg, {"2026-11-01": "from 14:05 UTC"})
    left, _ = fig.axes
    fig.canvas.draw()
    labels = [t.get_text() for t in left.get_xticklabels() if t.get_text()]
    assert labels == ["Nov 01", "Nov 02", "Nov 03"]  # one tick per day, not every six hours
    assert "partial" in left.get_title()


def test_offender_colour_is_the_dominant_category() -> None:
    assert report.dominant_category({"dominant_category": "misinformation", "categories": ["cyber_abuse", "misinformation"]}) == "misinformation"
    # old job output without the column: only an unambiguous single category is used
    assert report.dominant_category({"categories": ["cyber_abuse"]}) == "cyber_abuse"
    assert report.dominant_category({"categories": ["cyber_abuse", "jailbreak"]}) is None


def test_volumes_and_versions_from_the_lake() -> None:
    lake = _lake(["2026-11-01T10:00:00Z"] * 6)
    volumes = report.volume_tables(pd.DataFrame(), lake)
    by_tenant = {v["name"]: v for v in volumes["tenant_id"]}
    assert by_tenant["acme"] == {"name": "acme", "records": 2, "flagged": 2, "rate": 1.0}
    assert by_tenant["(none)"]["records"] == 2 and by_tenant["globex"]["rate"] == 0.0
    assert {v["name"] for v in volumes["model"]} == {"qwen3-32b", "llama"}
    assert report.detector_versions(lake) == [{"detector": "transformer", "version": "1.0.0", "findings": 2}]
