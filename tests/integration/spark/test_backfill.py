"""Backfill verdicts equal the verdicts of classify and of the real stream for the same records."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipeline.cli import classify_lines
from pipeline.lake import LakeWriter
from pipeline.producer import GatewayProducer
from pipeline.scoring import Scorer
from pipeline.settings import KafkaSettings
from pipeline.spark import backfill

from .conftest import INVALID_LINES, SimulatedHistory


def _lake_by_offset(lake: Path) -> dict[tuple[str, int, int], str]:
    table = LakeWriter(lake).read()
    keys = zip(
        table.column("source_topic").to_pylist(),
        table.column("source_partition").to_pylist(),
        table.column("source_offset").to_pylist(),
        strict=True,
    )
    result: dict[tuple[str, int, int], str] = {}
    for key, verdict in zip(keys, table.column("verdict_json").to_pylist(), strict=True):
        assert key not in result, f"source offset {key} stored twice"
        result[key] = verdict
    return result


def test_jsonl_backfill_equals_classify(history: SimulatedHistory, history_lake: Path) -> None:
    scorer = Scorer.from_settings(history.settings)
    try:
        expected = dict(
            classify_lines(list(enumerate(history.lines, start=1)), scorer, history.settings.batch.max_record_bytes)
        )
    finally:
        scorer.close()
    verdicts = {offset: v for (topic, part, offset), v in _lake_by_offset(history_lake).items()}
    assert {(t, p) for t, p, _ in _lake_by_offset(history_lake)} == {("file", 0)}
    classified = {n: v for n, v in expected.items() if '"misuse-verdict/v1"' in v}
    assert verdicts == classified  # byte-identical JSON, line by line
    assert sum(json.loads(v)["flagged"] for v in verdicts.values()) > 20

    dead = pq.read_table(history_lake / "dead_letters").to_pylist()
    errors = {n: json.loads(v) for n, v in expected.items() if n not in classified}
    assert {d["source_offset"]: d["error_reason"] for d in dead} == {n: e["reason"] for n, e in errors.items()}
    assert sorted(d["raw_value"] for d in dead) == sorted(INVALID_LINES)


def test_rescore_from_lake_keeps_verdicts_and_positions(
    spark: SparkSession, history: SimulatedHistory, history_lake: Path, tmp_path: Path
) -> None:
    spec = backfill.ScoringSpec.from_settings(history.settings)
    out = tmp_path / "rescored"
    result = backfill.backfill_to_lake(spark, backfill.read_lake_logs(spark, history_lake), spec, out, max_rows_per_file=200)
    assert result.dead_letters == 0
    assert _lake_by_offset(out) == _lake_by_offset(history_lake)
    # A replay of the same history into the same lake leaves each offset stored once.
    backfill.backfill_to_lake(spark, backfill.read_lake_logs(spark, history_lake), spec, out, max_rows_per_file=350)
    assert _lake_by_offset(out) == _lake_by_offset(history_lake)


def test_a_flagged_only_encrypted_lake_rescores_its_flagged_rows(
    spark: SparkSession, history: SimulatedHistory, tmp_path: Path
) -> None:
    """Under raw_text "flagged" only flagged rows keep their (encrypted) log: those, and only
    those, can be re-scored, and only with the lake key."""
    from pydantic import SecretStr

    from pipeline.privacy import TextCipher

    lake_settings = history.settings.lake.model_copy(update={"raw_text": "flagged", "encryption_key": SecretStr(TextCipher.generate())})
    spec = backfill.ScoringSpec.from_settings(history.settings.model_copy(update={"lake": lake_settings}))
    source = tmp_path / "source"
    backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [history.jsonl]), spec, source)
    rows = LakeWriter(source).read().to_pylist()
    flagged = {(r["source_topic"], r["source_partition"], r["source_offset"]) for r in rows if r["flagged"]}
    assert 0 < len(flagged) < len(rows)
    assert all(r["log_json"] is None for r in rows)
    assert all((r["log_json_encrypted"] is not None) == r["flagged"] for r in rows)

    result = backfill.backfill_to_lake(spark, backfill.read_lake_logs(spark, source), spec, tmp_path / "rescored")
    assert result.dead_letters == 0 and result.verdicts == len(flagged)
    assert _lake_by_offset(tmp_path / "rescored") == {k: v for k, v in _lake_by_offset(source).items() if k in flagged}

    without_key = dataclasses.replace(spec, lake_policy=dataclasses.replace(spec.lake_policy, encryption_key_b64=None))
    result = backfill.backfill_to_lake(spark, backfill.read_lake_logs(spark, source), without_key, tmp_path / "no-key")
    assert result.verdicts == 0 and result.dead_letters == len(flagged)
    dead = pq.read_table(tmp_path / "no-key" / "dead_letters").to_pylist()
    assert {d["error_reason"] for d in dead} == {"undecryptable"}


def test_threshold_set_only_removes_weak_findings(spark: SparkSession, history: SimulatedHistory, history_lake: Path) -> None:
    strict = backfill.ScoringSpec.from_settings(history.settings, min_scores={c: 0.75 for c in ("cyber_abuse", "jailbreak")})
    rows = backfill.verdict_rows(backfill.run(spark, backfill.read_lake_logs(spark, history_lake), strict)).collect()
    base = {k[2]: json.loads(v) for k, v in _lake_by_offset(history_lake).items()}
    weakened = 0
    for row in rows:
        verdict, before = json.loads(row["verdict_json"]), base[row["source_offset"]]
        assert all(f["score"] >= 0.75 for f in verdict["findings"] if f["category"] in ("cyber_abuse", "jailbreak"))
        assert len(verdict["findings"]) <= len(before["findings"])
        weakened += len(verdict["findings"]) < len(before["findings"])
    assert weakened > 0


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_backfill_equals_stream(
    spark: SparkSession, history: SimulatedHistory, kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path
) -> None:
    topic = kafka_topic_factory(partitions=2)
    dlq = kafka_topic_factory(partitions=1)
    lines = history.lines[:300] + history.lines[-2:]  # 300 records and the two invalid ones
    with GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic) as producer:
        for i, line in enumerate(lines):
            producer.send_raw(line, key=str(i).encode())

    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(
        MM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MM_KAFKA__INPUT_TOPIC=topic,
        MM_KAFKA__DEAD_LETTER_TOPIC=dlq,
        MM_KAFKA__GROUP_ID=f"{topic}-stream",
        MM_LAKE__PATH=str(tmp_path / "stream-lake"),
        MM_METRICS__PORT="0",
        MM_DETECTORS__ENABLED='["rules"]',
        MM_SINKS='["lake"]',
    )
    started = time.monotonic()
    stream = subprocess.run(
        # --dev: the same (placeholder) key as history.settings, so pseudonyms compare equal.
        [sys.executable, "-m", "pipeline.cli", "stream", "--max-idle", "5", "--dev"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert stream.returncode == 0, stream.stdout + stream.stderr
    streamed = _lake_by_offset(tmp_path / "stream-lake")
    assert len(streamed) == 300, f"stream wrote {len(streamed)} verdicts in {time.monotonic() - started:.0f}s"

    spec = backfill.ScoringSpec.from_settings(history.settings)
    raw = backfill.read_kafka(spark, kafka_bootstrap, topic, "earliest", "latest")
    result = backfill.backfill_to_lake(spark, raw, spec, tmp_path / "backfill-lake")
    assert result.dead_letters == 2
    assert _lake_by_offset(tmp_path / "backfill-lake") == streamed
