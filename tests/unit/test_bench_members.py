"""The group rate of bench/bench_stream_members.py: counted from the moment every member is
reading, up to the measured records, on the machine's one monotonic clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_stream_members as members_bench  # noqa: E402


def test_the_window_starts_when_the_last_member_reads_and_ends_at_the_measured_records():
    members = [
        {"first_batch_at": 10.0, "timeline": [(10.5, 100), (11.0, 300), (12.0, 600), (13.0, 700)]},
        {"first_batch_at": 11.0, "timeline": [(11.5, 200), (12.0, 400)]},
    ]
    # Member 0 alone had committed 100 when member 1 started (t=11.0); together they reach 900
    # of the measured records at t=12.0, when member 1's commit takes the sum to 1,000.
    rate, records, seconds = members_bench.group_rate(members, measured=900)
    assert (records, seconds) == (900, 1.0)
    assert rate == pytest.approx(900.0)


def test_too_few_committed_records_stop_the_bench():
    members = [{"first_batch_at": 1.0, "timeline": [(1.5, 10)]}]
    with pytest.raises(SystemExit, match="committed 10 of 20"):
        members_bench.group_rate(members, measured=20)


def test_a_member_that_got_no_records_does_not_hold_the_window_back():
    members = [
        {"first_batch_at": 2.0, "timeline": [(3.0, 50), (4.0, 100)]},
        {"first_batch_at": None, "timeline": []},  # its partitions held nothing
    ]
    rate, records, seconds = members_bench.group_rate(members, measured=100)
    assert (records, seconds, rate) == (100, 2.0, 50.0)
