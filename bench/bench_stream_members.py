"""The stream's combined rate with one or more members in its consumer group, on one machine.

    .venv/bin/python bench/bench_stream_members.py RECORDS DETECTORS ROUNDS MEMBERS [MEMBERS ...]

e.g. ``bench/bench_stream_members.py 20000 noop 3 1 2`` (also what it runs without arguments). The records (simulate traffic, then a
tail that keeps the last measured batches full: ``bench_stream.produce_backlog``, without the
10 MB records) are produced once to a real local broker, on a topic of ``--partitions``
partitions (4: an even split for 1, 2 or 4 members). Each round runs every arm in turn: that
many stream processes (the real ``Pipeline``, default sinks, each its own process) join one new
consumer group, load their detectors, then start together and read the whole topic.

The rate is the group's steady rate: records committed by all members from the moment the last
member handed out its first batch (so the group's start-up rebalance is behind it) until the
members together had committed the measured records, divided by that time. Every member reports
when it committed how many records (``perf_counter``, one monotonic clock for the machine). After
each run the lake is read back: every (partition, offset) of the topic must be in it exactly once,
or the bench stops. Also printed: the CPU per record of all members together and each member's
peak RSS.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_stream as b  # noqa: E402
from pipeline.lake import LakeWriter  # noqa: E402
from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402

# One member: load, say "ready", wait for the parent's "go", then read until the topic is done.
MEMBER = r"""
import json, sys, time
sys.path[:0] = sys.argv[6:8]
import bench_stream as b
from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
bootstrap, topic, lake, group, detectors = sys.argv[1:6]
settings = b.make_settings(detectors.split(","), bootstrap, topic, lake)
settings.kafka.group_id = group
pipeline = Pipeline.from_settings(settings, PipelineMetrics())
pipeline.start_up()
print("ready", flush=True)
sys.stdin.readline()
timeline = []
cpu = {"start": time.process_time()}

def committed(stats):
    timeline.append((time.perf_counter(), stats.verdicts + stats.dead_letters))
    cpu["end"] = time.process_time()

stats = pipeline.run(max_idle_s=1.0, on_batch=committed)
print(json.dumps({"first_batch_at": stats.first_batch_at, "timeline": timeline, "rss_mb": b.peak_rss_mb(),
                  "cpu_s": cpu.get("end", cpu["start"]) - cpu["start"]}))
"""


def group_rate(members: list[dict], measured: int) -> tuple[float, int, float]:
    """(records/s, records, seconds) of the group's steady window (see the module docstring)."""
    starts = [m["first_batch_at"] for m in members if m["first_batch_at"] is not None]
    if not starts:
        raise SystemExit("no member handed out a batch")
    start = max(starts)  # a member given no records (none in its partitions) does not hold the window back
    events = sorted((t, i, n) for i, m in enumerate(members) for t, n in m["timeline"])
    latest = [0] * len(members)
    at_start = None
    for t, i, n in events:
        if at_start is None and t >= start:
            at_start = sum(latest)
        latest[i] = n
        if sum(latest) >= measured and at_start is not None:
            return (sum(latest) - at_start) / (t - start), sum(latest) - at_start, t - start
    raise SystemExit(f"the members committed {sum(latest)} of {measured} measured records")


def check_lake(lake: Path, topic: str, expected: int) -> None:
    """Every record of the topic in the lake exactly once (the rows are keyed by source offset)."""
    table = LakeWriter(lake).read()
    rows = [(p, o) for p, o, t in zip(table.column("source_partition").to_pylist(), table.column("source_offset").to_pylist(),
                                      table.column("source_topic").to_pylist()) if t == topic]
    if len(rows) != expected or len(set(rows)) != expected:
        raise SystemExit(f"lake holds {len(rows)} rows, {len(set(rows))} distinct offsets; {expected} records were produced")


def run_arm(n_members: int, bootstrap: str, topic: str, lake: Path, group: str, detectors: str, root: str) -> list[dict]:
    procs = [
        subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, topic, str(lake), group, detectors,
                          str(Path(root) / "bench"), root],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        for _ in range(n_members)
    ]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            for other in procs:  # the others would read the topic on their own once stdin closes
                other.kill()
            raise SystemExit(f"a member failed to start:\n{p.communicate()[1][-3000:]}")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            for other in procs:
                other.kill()
            raise SystemExit(f"a member failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=int, nargs="?", default=20000)
    parser.add_argument("detectors", nargs="?", default="noop")
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    parser.add_argument("members", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    if args.records < 1 or args.rounds < 1 or min(args.members) < 1 or args.partitions < max(args.members):
        parser.error("RECORDS, ROUNDS and MEMBERS must be positive, and no arm may have more members than --partitions")
    root = str(Path(__file__).resolve().parents[1])
    results: dict[int, list[float]] = {n: [] for n in args.members}
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        try:
            topic = f"members.{int(time.time())}"
            create_topic(broker.bootstrap, topic, args.partitions)
            lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(args.records, seed=11)]
            measured = b.produce_backlog(lines, broker.bootstrap, topic, big_records=0)
            total = measured + b.TAIL_RECORDS
            for r in range(args.rounds):
                for n in args.members:
                    lake = Path(tmp) / f"lake-{r}-{n}"
                    members = run_arm(n, broker.bootstrap, topic, lake, f"members-{r}-{n}", args.detectors, root)
                    check_lake(lake, topic, total)
                    rate, records, seconds = group_rate(members, measured)
                    cpu_us = sum(m["cpu_s"] for m in members) / total * 1e6
                    results[n].append(rate)
                    print(f"round {r} [{n} member{'s' if n > 1 else ''}] {rate:,.0f} rec/s ({records:,} records in {seconds:.2f} s), "
                          f"{cpu_us:,.0f} us CPU/rec (all members), peak RSS {[round(m['rss_mb']) for m in members]} MB, "
                          f"lake: {total:,} rows, each offset once, load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            broker.stop()
    for n, rates in results.items():
        rates.sort()
        print(f"[{n} member{'s' if n > 1 else ''}] median {rates[len(rates) // 2]:,.0f} rec/s over {len(rates)} rounds")


if __name__ == "__main__":
    main()
