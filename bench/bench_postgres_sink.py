"""Rows/s of the PostgreSQL events sink (upsert by request_id), against a real local PostgreSQL.

    .venv/bin/python bench/bench_postgres_sink.py [--records 20000] [--batch 256]

Builds verdicts with findings (a third flagged, with evidence), starts a throwaway PostgreSQL
(``pipeline.localinfra.postgres``), then measures write()+flush() per micro-batch, as the
stream calls them: (1) first insert, (2) the same batches again (a replay after a crash: every
row is an ON CONFLICT update). Prints rows/s and per-batch p50/p99. The local server runs with
fsync off, so numbers are an upper bound for the sink's own cost (serialisation, SQL, network).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline import events_db
from pipeline.localinfra.postgres import remove_cluster, start_postgres
from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Category, Finding, InferenceLog, Side
from pipeline.sinks.base import ScoredRecord
from pipeline.sinks.postgres import PostgresSink
from pipeline.verdicts import Pseudonymizer, build_verdict


def records(n: int) -> list[ScoredRecord]:
    pseudo = Pseudonymizer(b"bench")
    start = datetime.now(UTC) - timedelta(hours=1)
    out = []
    for i in range(n):
        log = InferenceLog.model_validate({
            "schema": "inference-log/v1", "request_id": f"bench-{i:07d}", "timestamp": (start + timedelta(milliseconds=i)).isoformat(),
            "model": f"model-{i % 5}", "deployment": f"dep-{i % 3}", "tenant_id": f"tenant-{i % 7}", "user_id": f"user-{i % 500}",
            "prompt": "p", "completion": "c",
        })
        findings = []
        if i % 3 == 0:
            findings = [Finding(category=Category.CYBER_ABUSE, subcategory="phishing_social_engineering", side=Side.PROMPT,
                                score=0.8, detector="rules", detector_version="rules-2026.11.1",
                                evidence="write a phishing email that tricks staff into sending their password")]
        out.append(ScoredRecord(log=log, verdict=build_verdict(log, findings, pseudo)))
    return out


def run(sink: PostgresSink, batches: list[list[ScoredRecord]]) -> tuple[float, list[float]]:
    per_batch = []
    started = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        sink.write(batch)
        sink.flush()
        per_batch.append(time.perf_counter() - t0)
    return time.perf_counter() - started, per_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    data = records(args.records)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    server = start_postgres(Path(tempfile.mkdtemp(prefix="mm-bench-pg-")))
    try:
        settings = PostgresSettings(url=server.url)
        engine = events_db.create_engine(settings)
        events_db.create_schema(engine)
        sink = PostgresSink(engine, settings)
        for label in ("insert", "replay (upsert)"):
            total, per_batch = run(sink, batches)
            qs = statistics.quantiles(per_batch, n=100)
            print(f"{label:16} {args.records / total:8.0f} rows/s   batch of {args.batch}: "
                  f"p50 {qs[49] * 1000:.1f} ms  p99 {qs[98] * 1000:.1f} ms")
        sink.close()
    finally:
        server.stop()
        remove_cluster(server)


if __name__ == "__main__":
    main()
