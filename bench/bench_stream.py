"""Stream throughput vs the bare detectors on the same records, and the stream's peak memory.

    .venv/bin/python bench/bench_stream.py [--records 6000] [--detectors noop rules transformer]

For each detector set, in one invocation (so the ratios are measured side by side):
1. Bare: the same records decoded and scored (decode_log + Scorer.score_each, verdicts built)
   with no Kafka and no sink: the ceiling for this hardware.
2. Stream: the records (plus ``--big-records`` 10 MB records, 3 by default, which are
   dead-lettered whole: each costs the stream about 0.3 s of fetching and re-producing) are produced to a
   real local broker and consumed by the real Pipeline with every default sink (verdicts topic,
   Parquet lake, metrics) in a child process whose own peak RSS the kernel reports (VmHWM);
   the rate is from the first batch handed out to the last commit. Four batches' worth of
   further records follow the measured ones, so the last measured batch fills as it would in
   a sustained stream (before 2026-12-03 it waited ``batch.max_wait_ms`` in the timed window).
``--members N`` adds, for each set, a consumer group of N stream processes on one topic of 2N
partitions, without the 10 MB records (bench_stream_members.py: the group's steady rate, and the
lake checked for every offset exactly once); its CPU column sums the members.
``--scoring inline process`` measures each set with ``stream.scoring`` inline and in a worker
process (pipeline/score_worker.py) against the same bare run; a worker's peak RSS is added to
the stream process's (an upper bound: shared library pages count twice) and the CPU it spent on
batches to the stream's CPU.
Targets (issue 10): stream >= 0.90 x bare with `rules` and with the default detector;
>= 5,000 records/s with `noop`; peak RSS < 1.5 GB.
The CPU columns (process CPU per record: every thread, bare loop vs stream from joining the
group to the last commit) move much less with the machine's load than the rates do; their
ratio is what the stream would reach on a core of its own if it were CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.decode import decode_log  # noqa: E402
from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402
from pipeline.memory import peak_rss_mb  # noqa: E402
from pipeline.metrics import PipelineMetrics  # noqa: E402
from pipeline.producer import GatewayProducer  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402

BIG_RECORDS = 3
# Records produced after the measured ones, so that the last measured batch is full (produce_backlog).
TAIL_RECORDS = 4 * Settings().batch.max_records
KEY = "bench-pseudonym-key"
console = Console(width=180)


def make_settings(
    detectors: list[str], bootstrap: str = "", topic: str = "", lake: str = "", scoring: str = "inline"
) -> Settings:
    overrides: dict = {"detectors": {"enabled": detectors}, "metrics": {"port": 0}, "pseudonym_key": KEY,
                       "stream": {"scoring": scoring}}
    if bootstrap:
        overrides["kafka"] = {"bootstrap_servers": bootstrap, "input_topic": topic, "verdict_topic": f"{topic}.verdicts",
                              "dead_letter_topic": f"{topic}.dlq", "group_id": f"bench-{topic}"}
        overrides["lake"] = {"path": lake}
    return Settings(**overrides)


def bare_rate(lines: list[bytes], settings: Settings) -> tuple[float, float]:
    """Records/s of decode + score alone, after a warm-up batch on other records, and the
    process CPU seconds per record."""
    scorer = Scorer.from_settings(settings, PipelineMetrics())
    size, max_bytes = settings.batch.max_records, settings.batch.max_record_bytes
    warm = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(size, seed=99)]
    scorer.score_each([decode_log(line, max_bytes) for line in warm])
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(0, len(lines), size):
        scorer.score_each([decode_log(line, max_bytes) for line in lines[i : i + size]])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    scorer.close()
    return len(lines) / elapsed, cpu / len(lines)


def stream_phase(args: argparse.Namespace) -> None:
    """Runs in a child process: consume everything, print timings and peak RSS as JSON."""
    from pipeline.runner import Pipeline

    settings = make_settings(args.detectors[0].split(","), args.bootstrap, args.topic, args.lake, args.scoring[0])
    pipeline = Pipeline.from_settings(settings, PipelineMetrics())
    pipeline.start_up()  # run() does it too (nothing left to do then): start-up, not per-record CPU
    # Process CPU (every thread) from joining the group to the last commit: models are loaded.
    cpu = {"start": time.process_time()}
    stats = pipeline.run(max_records=args.expect, on_batch=lambda _: cpu.__setitem__("end", time.process_time()))
    rss_mb, cpu_s = peak_rss_mb(), cpu.get("end", cpu["start"]) - cpu["start"]
    # A scoring process (closed by run()) reports its own peak and the CPU its batches took.
    rss_mb += getattr(pipeline.scorer, "peak_rss_mb", None) or 0.0
    cpu_s += getattr(pipeline.scorer, "busy_cpu_s", None) or 0.0
    print(json.dumps({"records": stats.records, "verdicts": stats.verdicts, "dead_letters": stats.dead_letters,
                      "seconds": stats.active_s, "peak_rss_mb": rss_mb, "cpu_s": cpu_s}))


def produce_backlog(lines: list[bytes], bootstrap: str, topic: str, big_records: int = BIG_RECORDS) -> int:
    """Produce ``lines`` with ``big_records`` 10 MB records among them, then TAIL_RECORDS more
    simulated records; returns how many the stream is to measure (the lines and the big ones).

    Why the tail: the stream hands out a partial batch only after ``batch.max_wait_ms`` (500 ms)
    without more records. Without records after the measured ones, the last batch waited that
    long for records that never came, inside the timed window: 542 ms of a 2.66 s `noop` run of
    6,000 records (a throw-away per-batch timeline, 2026-12-03), where a sustained stream fills
    every batch. With the tail the run stops, as before, once the measured records are handed
    out, and its last batch is full; the first batch's start-up costs stay in the window."""
    big = json.dumps({"schema": "inference-log/v1", "request_id": "big", "timestamp": "2026-11-28T00:00:00Z",
                      "model": "m", "prompt": "x" * (10 * 1024 * 1024)}).encode()
    big_at = {k * len(lines) // big_records for k in range(big_records)}
    tail = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(TAIL_RECORDS, seed=12)]
    sent = 0
    with GatewayProducer(make_settings(["noop"], bootstrap, topic).kafka, topic) as producer:  # detectors unused
        for i, line in enumerate(lines):
            producer.send_raw(line)
            sent += 1
            if i in big_at:
                producer.send_raw(big)
                sent += 1
        for line in tail:
            producer.send_raw(line)
    return sent


def stream_rate(
    lines: list[bytes], detectors: str, bootstrap: str, tmp: Path, scoring: str = "inline", big_records: int = BIG_RECORDS
) -> dict:
    topic = f"bench.{detectors.replace(',', '-')}.{scoring}.{int(time.time())}"
    create_topic(bootstrap, topic, 3)
    sent = produce_backlog(lines, bootstrap, topic, big_records)
    child = subprocess.run(
        [sys.executable, __file__, "--phase", "stream", "--detectors", detectors, "--bootstrap", bootstrap,
         "--topic", topic, "--lake", str(tmp / f"lake-{topic}"), "--expect", str(sent), "--scoring", scoring],
        capture_output=True, text=True,
    )
    if child.returncode != 0:
        raise SystemExit(f"stream phase failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["rate"] = result["verdicts"] / result["seconds"]
    return result


def members_rate(lines: list[bytes], detectors: str, bootstrap: str, tmp: Path, members: int) -> tuple[float, float, float]:
    """A consumer group of ``members`` stream processes on a topic of 2 x ``members`` partitions
    (bench_stream_members.py): its steady records/s, CPU seconds per record of all members, and
    the largest member's peak RSS. The lake is checked for every offset exactly once."""
    import bench_stream_members as group

    topic = f"bench.{detectors.replace(',', '-')}.group{members}.{int(time.time())}"
    create_topic(bootstrap, topic, 2 * members)
    measured = produce_backlog(lines, bootstrap, topic, big_records=0)
    lake = tmp / f"lake-{topic}"
    results = group.run_arm(members, bootstrap, topic, lake, f"bench-{topic}", detectors, str(Path(__file__).resolve().parents[1]))
    group.check_lake(lake, topic, measured + TAIL_RECORDS)
    rate, _, _ = group.group_rate(results, measured)
    return rate, sum(m["cpu_s"] for m in results) / (measured + TAIL_RECORDS), max(m["rss_mb"] for m in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--detectors", nargs="+", default=["noop", "rules", ",".join(Settings().detectors.enabled)],
                        help="detector sets to measure, each comma-separated")
    parser.add_argument("--transformer-records", type=int, default=600, help="records for sets with an ML detector")
    parser.add_argument("--scoring", nargs="+", default=["inline"], choices=["inline", "process"],
                        help="stream.scoring modes to measure, each against the same bare run")
    parser.add_argument("--big-records", type=int, default=BIG_RECORDS,
                        help="10 MB records among the measured ones (dead-lettered whole: about 0.3 s each)")
    parser.add_argument("--members", type=int, default=1,
                        help="also measure a consumer group of this many stream processes (bench_stream_members.py)")
    parser.add_argument("--phase", default="all")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--lake", default="")
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.phase == "stream":
        stream_phase(args)
        return
    if args.members < 1:
        parser.error("--members must be at least 1")

    table = Table(title=f"stream vs bare detectors (load average at start {os.getloadavg()[0]:.1f})")
    for col in ("detectors", "records", "bare rec/s", "stream rec/s", "ratio", "bare CPU us/rec", "stream CPU us/rec",
                "CPU ratio", "dead letters", "peak RSS MB", "load after"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        try:
            for detectors in args.detectors:
                ml = any(d not in ("noop", "rules") for d in detectors.split(","))
                n = args.transformer_records if ml else args.records
                lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(n, seed=11)]
                bare, bare_cpu = bare_rate(lines, make_settings(detectors.split(",")))
                for scoring in args.scoring:
                    result = stream_rate(lines, detectors, broker.bootstrap, Path(tmp), scoring, args.big_records)
                    stream_cpu = result["cpu_s"] / max(1, result["verdicts"])
                    label = detectors if args.scoring == ["inline"] else f"{detectors} ({scoring})"
                    table.add_row(label, str(n), f"{bare:,.0f}", f"{result['rate']:,.0f}", f"{result['rate'] / bare:.2f}",
                                  f"{bare_cpu * 1e6:,.0f}", f"{stream_cpu * 1e6:,.0f}", f"{bare_cpu / stream_cpu:.2f}",
                                  str(result["dead_letters"]), f"{result['peak_rss_mb']:,.0f}", f"{os.getloadavg()[0]:.1f}")
                if args.members > 1:
                    rate, cpu_s, rss_mb = members_rate(lines, detectors, broker.bootstrap, Path(tmp), args.members)
                    table.add_row(f"{detectors} ({args.members} members, no 10 MB records)", str(n), f"{bare:,.0f}", f"{rate:,.0f}",
                                  f"{rate / bare:.2f}", f"{bare_cpu * 1e6:,.0f}", f"{cpu_s * 1e6:,.0f}", f"{bare_cpu / cpu_s:.2f}",
                                  "0", f"{rss_mb:,.0f} (largest)", f"{os.getloadavg()[0]:.1f}")
        finally:
            broker.stop()
    console.print(table)
    console.print("targets: ratio >= 0.90 (rules, default); noop stream >= 5,000 rec/s; peak RSS < 1,536 MB")


if __name__ == "__main__":
    main()
