"""What language routing costs the default detector (`transformer_routed`, issue 12).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_routing.py [--route-records 2000] [--records 300]

1. Routes of ``--route-records`` simulated records (seed 11): how many go to the English member
   only, to both, to the multilingual member only, and the routing time per record
   (``RoutedTransformerDetector.routes``: CLD2 over chunks of every screened text; no model).
2. Records/s of the routed default against its English member alone on the same ``--records``
   simulated records (after 8 warm-up records), interleaved batch by batch, each with its own
   score and window-feature caches, so load changes on a shared machine hit both alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route-records", type=int, default=2000)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from detectors.base import DetectorConfig
    from detectors.registry import build
    from detectors.routed import RoutedTransformerDetector
    from detectors.transformer import LRUCache
    from pipeline.simulate import simulate

    end = datetime(2026, 1, 2, tzinfo=UTC)
    logs = [r.log for r in simulate(args.route_records, seed=11, end=end)]
    started = time.perf_counter()
    routes = Counter(RoutedTransformerDetector.routes(lg) for lg in logs)
    per_record_ms = 1000 * (time.perf_counter() - started) / len(logs)
    names = {(True, False): "English only", (True, True): "both", (False, True): "multilingual only"}
    print(f"routes of {len(logs)} simulated records: "
          + ", ".join(f"{names[k]} {routes.get(k, 0)}" for k in names) + f"; {per_record_ms:.2f} ms per record to route")

    (routed,) = build(["transformer_routed"], DetectorConfig())
    english = routed.english
    records = [r.log for r in simulate(args.records, seed=11, end=end)]
    routed.detect(records[-8:])  # warm-up, both members included when routed there
    records = records[:-8]
    caches = {name: (LRUCache(4096), LRUCache(8192)) for name in ("english member alone", "routed default")}
    seconds = dict.fromkeys(caches, 0.0)
    for b in range(0, len(records), args.batch):
        batch = records[b : b + args.batch]
        for name, (score_cache, feature_cache) in caches.items():
            english.cache, english.feature_cache = score_cache, feature_cache
            t0 = time.perf_counter()
            (english.detect if name == "english member alone" else routed.detect)(batch)
            seconds[name] += time.perf_counter() - t0
    rates = {name: len(records) / s for name, s in seconds.items()}
    print(", ".join(f"{name} {rate:.2f} records/s" for name, rate in rates.items())
          + f"; routed / English alone {rates['routed default'] / rates['english member alone']:.3f}"
          + f"; routed {routed.routed}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
