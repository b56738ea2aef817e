"""What Kafka transactions would cost the verdicts topic (issue 10, item 3), side by side in one run.

    .venv/bin/python bench/bench_transactions.py [--records 20000] [--batch 256]

The stream writes the verdicts of one micro-batch and then commits its input offsets. Today the
producer is idempotent and the batch is flushed before the commit (at-least-once: a crash between
flush and commit repeats that batch's verdicts). Exactly-once would wrap each batch in a
transaction (begin, send, send_offsets_to_transaction, commit) and require read_committed
consumers. This measures the producer side of both on a real local broker: same records, same
batch size, one process. The offsets call is left out on both sides, so the number is a lower
bound on the transactional cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.localinfra.kafka import create_topic, start_broker  # noqa: E402


def run(bootstrap: str, topic: str, records: int, batch: int, transactional: bool) -> float:
    options = {"bootstrap_servers": bootstrap, "linger_ms": 20, "batch_size": 1024 * 1024, "enable_idempotence": True}
    if transactional:
        options["transactional_id"] = f"bench-{topic}"
    producer = KafkaProducer(**options)
    if transactional:
        producer.init_transactions()
    value = b'{"schema":"misuse-verdict/v1",' + b"x" * 480 + b"}"
    started = time.perf_counter()
    for start in range(0, records, batch):
        if transactional:
            producer.begin_transaction()
        for i in range(start, min(start + batch, records)):
            producer.send(topic, value, key=str(i).encode())
        if transactional:
            producer.commit_transaction()
        else:
            producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return records / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka", extra_config={"transaction.state.log.replication.factor": "1",
                                                                  "transaction.state.log.min.isr": "1"})
        try:
            rates = {}
            for transactional in (False, True, False, True):  # interleaved: load drifts between runs
                topic = f"verdicts-{'tx' if transactional else 'plain'}-{len(rates)}"
                create_topic(broker.bootstrap, topic, 3)
                rates.setdefault(transactional, []).append(run(broker.bootstrap, topic, args.records, args.batch, transactional))
        finally:
            broker.stop()
    plain, tx = max(rates[False]), max(rates[True])
    print(f"records {args.records}, batch {args.batch}, load average {os.getloadavg()[0]:.1f}")
    print(f"idempotent, flush per batch:   {plain:,.0f} records/s (runs: {', '.join(f'{r:,.0f}' for r in rates[False])})")
    print(f"transaction per batch:         {tx:,.0f} records/s (runs: {', '.join(f'{r:,.0f}' for r in rates[True])})")
    print(f"transactional / idempotent:    {tx / plain:.2f}")


if __name__ == "__main__":
    main()
