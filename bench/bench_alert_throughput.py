"""Alert-engine throughput per stream replica: 1 replica vs N replicas sharing one alert database.

    .venv/bin/python bench/bench_alert_throughput.py [--records 20000] [--replicas 3] [--batch 500]

Each replica is a process holding its own input partition (as after a rebalance) and feeds
verdicts through what the alerts sink does per micro-batch: ``Alerting.observe_records`` (every
rule of examples/alert-rules.yaml) and ``Alerting.commit`` (alerts, rule state, offsets and the
ownership check in one transaction), plus the once-a-second tick that reads the other
partitions' rate counts. Verdicts are synthetic (no detector: this measures the alert path, not
the models): 30% flagged, 400 users over 4 tenants, 4 models. The database is SQLite (WAL) in a
temporary directory, so N replicas also measure contention on its single writer lock.
Reported: records/s per replica and in total, alerts written, for 1 and for N replicas.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
TOPIC = "bench.logs"


def verdicts(n: int, seed: int) -> list:
    from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side

    rng = random.Random(seed)
    out = []
    now = datetime.now(UTC)
    for i in range(n):
        user = rng.randrange(400)
        flagged = rng.random() < 0.3
        cat = rng.choice([Category.CYBER_ABUSE, Category.MISINFORMATION, Category.JAILBREAK, Category.OTHER_HARM])
        out.append(
            MisuseVerdict(
                request_id=f"r-{seed}-{i}", timestamp=now, model=rng.choice(["m1", "m2", "m3", "m4"]), deployment="prod",
                tenant_id=f"t{user % 4}", user_id=f"u_{user:04d}", flagged=flagged,
                severity=rng.choice([Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]) if flagged else Severity.NONE,
                categories=[cat] if flagged else [], complied=rng.random() < 0.5 if flagged else None,
                findings=[Finding(category=cat, side=Side.PROMPT, score=0.95, detector="rules", detector_version="1",
                                  evidence="write a keylogger")] if flagged else [],
            )
        )
    return out


def replica(db_url: str, partition: int, partitions: int, records: int, batch: int, start: mp.Event, out: mp.Queue) -> None:
    from prometheus_client import CollectorRegistry

    from pipeline.alerts.engine import redact
    from pipeline.alerts.rules import load_rules
    from pipeline.alerts.service import Alerting
    from pipeline.alerts.settings import AlertSettings
    from pipeline.schemas import InferenceLog
    from pipeline.sinks.base import ScoredRecord, SourcePosition

    redact("warm up the redactor before the clock starts")
    settings = AlertSettings(db_url=db_url, notify="direct", run_dispatcher=False)
    alerting = Alerting.build(settings, CollectorRegistry(), rules=load_rules(REPO / "examples" / "alert-rules.yaml"))
    alerting.on_assigned([(TOPIC, partition)], partitions)
    log = InferenceLog.model_validate({"schema": "inference-log/v1", "request_id": "r", "timestamp": datetime.now(UTC),
                                       "model": "m", "prompt": "p"})
    items = [ScoredRecord(log=log, verdict=v, position=SourcePosition(TOPIC, partition, i))
             for i, v in enumerate(verdicts(records, seed=partition))]
    start.wait()
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        alerting.observe_records(items[i : i + batch])
        alerting.commit()
        alerting.tick()
    seconds = time.perf_counter() - t0
    out.put({"partition": partition, "records": len(items), "seconds": seconds, "alerts": len(alerting.engine.alerts)})
    alerting.close()


def run(replicas: int, records: int, batch: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'alerts.db'}"
        from pipeline.alerts.state import create_db_engine

        create_db_engine(db_url).dispose()  # create the schema once, before the replicas race
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=replica, args=(db_url, p, replicas, records, batch, start, out)) for p in range(replicas)]
        for p in procs:
            p.start()
        time.sleep(1.0)
        start.set()
        results = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(60)
    return sorted(results, key=lambda r: r["partition"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20000, help="verdicts per replica")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="verdicts per micro-batch (one commit each)")
    args = parser.parse_args()
    console = Console()
    table = Table(title=f"alert path throughput per replica ({args.records} verdicts each, batch {args.batch}, SQLite)")
    for col in ("replicas", "replica", "records/s", "alerts held", "total records/s"):
        table.add_column(col)
    summary = {}
    for n in (1, args.replicas):
        results = run(n, args.records, args.batch)
        total = sum(r["records"] for r in results) / max(r["seconds"] for r in results)
        summary[n] = {"per_replica": [round(r["records"] / r["seconds"], 1) for r in results], "total": round(total, 1)}
        for r in results:
            table.add_row(str(n), str(r["partition"]), f"{r['records'] / r['seconds']:,.0f}", str(r["alerts"]), f"{total:,.0f}")
    console.print(table)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
