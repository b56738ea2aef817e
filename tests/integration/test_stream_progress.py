"""What a newcomer sees while `misuse-monitor stream` runs in a terminal: a live progress line
(records, flagged, dead letters, rate) that ends on the run's totals, and no ERROR or warning
lines for normal events (topics that exist, records longer than the backbone's 512 tokens, model
weights loading), with the default detector.

The terminal is rich's own override (``TTY_COMPATIBLE=1``, ``TTY_INTERACTIVE=1``): rich draws a
live status only on a terminal, and on a pipe prints nothing of it (tests/integration/
test_quickstart.py runs the demo the same way)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.localinfra.kafka import create_topic
from tests.fixtures.terminal import PROGRESS, TERMINAL_ENV, WARNING_LINE, terminal_text
from tests.integration.test_stream import FIXTURES, _finish, _record, _records_consumed, _stream_env

pytestmark = [pytest.mark.kafka, pytest.mark.ml, pytest.mark.slow]


def test_stream_shows_a_live_progress_line_and_no_warnings(kafka_bootstrap, kafka_topic_factory, tmp_path: Path) -> None:
    topic = kafka_topic_factory(partitions=3)
    for name in (f"{topic}.verdicts", f"{topic}.dlq"):  # as `make demo` does (pipeline/demo.py topics)
        create_topic(kafka_bootstrap, name, partitions=3)
    good = [_record(i) for i in range(120)]
    # One record well past the backbone's 512 tokens: windowed, not a tokenizer warning.
    good.append({**_record(500), "request_id": "req-long", "prompt": " ".join(["please review this paragraph"] * 400)})
    malformed = (FIXTURES / "malformed.jsonl").read_bytes().splitlines()
    src = tmp_path / "traffic.jsonl"
    src.write_bytes(b"\n".join([json.dumps(r).encode() for r in good] + malformed) + b"\n")
    # Small batches: the line has several batches to move through.
    env = _stream_env(kafka_bootstrap, topic, tmp_path, "g-progress", MM_DETECTORS__ENABLED='["transformer"]',
                      MM_BATCH__MAX_RECORDS="32", **TERMINAL_ENV)
    produced = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(src), "--topic", topic],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "stream", "--max-idle", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out = terminal_text(_finish(proc, timeout=600))
    total = len(good) + len(malformed)
    assert _records_consumed(out) == total, out[-4000:]

    frames = [tuple(int(g.replace(",", "")) for g in m.groups()[:3]) for m in PROGRESS.finditer(out)]
    assert frames, "no progress line while streaming:\n" + out[-4000:]
    records = [f[0] for f in frames]
    assert records == sorted(records) and 0 < records[0]  # it moves forward, batch by batch
    assert len(set(records)) >= 2, f"the progress line never moved: {sorted(set(records))}"
    flagged = int(re.search(r"flagged\s*│\s*(\d+)", out).group(1))
    dead = int(re.search(r"dead letters\s*│\s*(\d+)", out).group(1))
    assert dead == len(malformed)
    assert frames[-1] == (total, flagged, dead), f"last progress frame {frames[-1]} != summary {(total, flagged, dead)}"

    assert not re.search(r"^(.* )?(ERROR|Traceback)", out, re.M), out[-4000:]
    assert not WARNING_LINE.search(out), "warning lines in a normal run:\n" + "\n".join(
        m.group(0) for m in WARNING_LINE.finditer(out))
