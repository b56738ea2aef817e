"""Interleaved A/B of stream configurations on one topic, for effects smaller than the load's noise.

    .venv/bin/python bench/bench_stream_ab.py RECORDS DETECTORS ROUNDS ARM [ARM ...]

Without arguments (``make bench``): 20,000 records, ``noop``, 3 rounds of the defaults alone.

An ARM is a space-separated list of environment assignments for the stream process ("" for the
defaults), e.g. ``"MM_BATCH__MAX_RECORDS=1024"`` or ``"MALLOC_ARENA_MAX=2"``. The records (plus
three 10 MB ones, and a tail that fills the last batch: ``bench_stream.produce_backlog``) are
produced once to a real local broker; each round runs every arm in turn as
a fresh process and consumer group over the whole topic, and prints its rate (first batch to last
commit), process CPU per record over the same span, and its own peak RSS (VmHWM).

``MM_BENCH_ROOT=/path`` in an arm runs that arm on another checkout of the project (its
``pipeline`` and ``detectors`` packages, with this venv): A/B of a code change against its base,
e.g. ``git archive BASE | tar -x -C /tmp/base`` then arms ``"MM_BENCH_ROOT=/tmp/base" ""``.
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
from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402

CHILD = r"""
import json, sys, time
started = time.perf_counter()
sys.path[:0] = sys.argv[7:9]
import bench_stream as b
from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
bootstrap, topic, lake, group, detectors, expect = sys.argv[1:7]
settings = b.make_settings(detectors.split(","), bootstrap, topic, lake)
settings.kafka.group_id = group
pipeline = Pipeline.from_settings(settings, PipelineMetrics())
getattr(pipeline, "start_up", pipeline.scorer.preload)()  # older checkouts: preload alone
ready_s = time.perf_counter() - started
cpu = {"start": time.process_time()}
stats = pipeline.run(max_records=int(expect), on_batch=lambda _: cpu.__setitem__("end", time.process_time()))
print(json.dumps({"verdicts": stats.verdicts, "seconds": stats.active_s, "cpu_s": cpu.get("end", cpu["start"]) - cpu["start"],
                  "rss_mb": b.peak_rss_mb(), "ready_s": ready_s}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=int, nargs="?", default=20000)
    parser.add_argument("detectors", nargs="?", default="noop")
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    parser.add_argument("arms", nargs="*", default=[""], help='environment assignments per arm; "" for the defaults')
    args = parser.parse_args()
    n, detectors, rounds, arms = args.records, args.detectors, args.rounds, args.arms
    if n < 1 or rounds < 1:
        parser.error("RECORDS and ROUNDS must be positive")
    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        try:
            topic = f"ab.{int(time.time())}"
            create_topic(broker.bootstrap, topic, 3)
            lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(n, seed=11)]
            sent = b.produce_backlog(lines, broker.bootstrap, topic)
            results: dict[str, list[dict]] = {arm: [] for arm in arms}
            for r in range(rounds):
                for a, arm in enumerate(arms):
                    env = dict(os.environ)
                    env.update(kv.split("=", 1) for kv in arm.split())
                    arm_root = env.pop("MM_BENCH_ROOT", root)
                    child = subprocess.run(
                        [sys.executable, "-c", CHILD, broker.bootstrap, topic, f"{tmp}/lake-{r}-{a}", f"ab-{r}-{a}",
                         detectors, str(sent), str(Path(arm_root) / "bench"), arm_root],
                        env=env, capture_output=True, text=True,
                    )
                    if child.returncode != 0:
                        raise SystemExit(f"arm {arm!r} failed:\n{child.stderr[-3000:]}")
                    d = json.loads(child.stdout.strip().splitlines()[-1])
                    d["rate"] = d["verdicts"] / d["seconds"]
                    results[arm].append(d)
                    print(f"round {r} [{arm or 'defaults'}] {d['rate']:,.2f} rec/s, {d['cpu_s'] / d['verdicts'] * 1e6:,.0f} us CPU/rec, "
                          f"peak RSS {d['rss_mb']:,.0f} MB, start-up {d['ready_s']:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            broker.stop()
    for arm, runs in results.items():
        rates = sorted(d["rate"] for d in runs)
        print(f"[{arm or 'defaults'}] median {rates[len(rates) // 2]:,.2f} rec/s; peak RSS {[round(d['rss_mb']) for d in runs]} MB")


if __name__ == "__main__":
    main()
