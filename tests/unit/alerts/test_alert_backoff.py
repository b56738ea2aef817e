"""Retry schedule: exponential, capped, jittered so retries of many rows spread out."""

from __future__ import annotations

import random

from pipeline.alerts.delivery import backoff_delay


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    for attempts, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (20, 300.0)]:
        delays = [backoff_delay(attempts, 1.0, 300.0, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3  # actually jittered
