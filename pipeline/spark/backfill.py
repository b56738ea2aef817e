"""Backfill / re-score: run the streaming detectors over history and write verdicts to a lake.

Sources (all normalised to ``value, source_topic, source_partition, source_offset``):

- the Parquet lake (``log_json`` of each stored verdict; the original source position is kept,
  so a re-scored lake has the same file names as the one it came from),
- JSONL archives (topic ``file``, partition = index of the file in sorted order, offset =
  1-based line number, like ``misuse-monitor classify`` numbers lines),
- a Kafka topic range (``spark-sql-kafka``, resolved from Maven Central).

Scoring runs inside ``mapInArrow`` with :class:`pipeline.scoring.Scorer`, the object the
stream and ``classify`` use (same decode, detectors, merge order and verdict policy), so a
backfilled verdict equals the streamed one for the same record. Invalid records become
dead-letter rows with the decode reason; nothing is dropped.

Lake output: verdict rows are hash-partitioned by (date, topic, partition) and sorted by
offset, and each task writes its groups through :class:`pipeline.lake.LakeWriter` (the
stream's writer): files named by offset range, overlapping files trimmed. Hash partitioning
puts each (date, topic, partition) in exactly one task, so no two tasks trim the same files.
Spark's own ``partitionBy(date)`` writer was not used: it names files ``part-*`` and cannot
trim a replayed range, which would break "each source offset stored exactly once".
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import BinaryType, IntegerType, LongType, StringType, StructField, StructType

from detectors.base import DetectorConfig
from pipeline.decode import too_large
from pipeline.fslock import exclusive_lock, shared_lock
from pipeline.lake import LAKE_LOCK, LAKE_SCHEMA, LakeFile, LakeWriter, file_name, to_rows
from pipeline.plugins import parse_names
from pipeline.privacy import LakePolicy
from pipeline.schemas import InferenceLog, MisuseVerdict
from pipeline.score_worker import ProcessScorer
from pipeline.scoring import RecordError, Scorer
from pipeline.settings import Settings, load_settings
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.spark.output import add_overwrite_argument, bounded, refuse_inside_lake, refuse_overwrite
from pipeline.stdio import open_private
from pipeline.trusted import TrustedPrompts
from pipeline.verdicts import Pseudonymizer, build_verdict

FILE_TOPIC = "file"
# The length of a raw value before run() cut it to the record limit (a column of its own).
VALUE_BYTES = "value_bytes"
# Marks an encrypted lake log in the raw ``value`` column (see read_lake_logs).
ENCRYPTED_MAGIC = b"mm-aesgcm-v1:"
RAW_SCHEMA = StructType(
    [
        StructField("value", BinaryType()),
        StructField("source_topic", StringType()),
        StructField("source_partition", IntegerType()),
        StructField("source_offset", LongType()),
    ]
)
# Scored rows: the lake columns, plus the reason and original bytes of rejected records.
SCORED_ARROW_SCHEMA = pa.schema(
    [
        *LAKE_SCHEMA,
        pa.field("error_reason", pa.string()),
        pa.field("error_detail", pa.string()),
        pa.field("raw_value", pa.binary()),
    ]
)
SCORED_SCHEMA = from_arrow_schema(SCORED_ARROW_SCHEMA)
LAKE_COLUMNS = LAKE_SCHEMA.names
DEAD_LETTER_COLUMNS = ["source_topic", "source_partition", "source_offset", "error_reason", "error_detail", "raw_value"]
WRITTEN_ARROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("kind", pa.string()),  # "verdicts" | "dead_letters"
        ("date", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("first_offset", pa.int64()),
        ("last_offset", pa.int64()),
        ("rows", pa.int64()),
        ("flagged", pa.int64()),
    ]
)
DEAD_LETTER_ARROW_SCHEMA = pa.schema([SCORED_ARROW_SCHEMA.field(c) for c in DEAD_LETTER_COLUMNS])


class BackfillError(RuntimeError):
    """The backfill could not read its source or write its output."""


@dataclass(frozen=True)
class ScoringSpec:
    """Everything a worker needs to score records; pickled into each task.

    ``min_scores`` (category -> minimum calibrated score) is an extra threshold set applied
    to the detectors' findings before the verdict is built, for re-scoring and shadow runs;
    empty means exactly the stream's thresholds.
    """

    detectors: tuple[str, ...]
    config: DetectorConfig
    pseudonym_key: bytes
    max_record_bytes: int
    batch_size: int = 256
    min_scores: tuple[tuple[str, float], ...] = ()
    # What the output lake keeps of each record (the same policy as the stream's lake sink).
    lake_policy: LakePolicy = LakePolicy()
    # detectors.trusted_system_prompts: not screened, as in the stream (pipeline/trusted.py).
    trusted_system_prompts: tuple[str, ...] = ()
    # Score in a child process of each Python worker (pipeline/score_worker.py, as the stream's
    # stream.scoring=process): a record that crashes a detector (a native crash, an out-of-memory
    # kill) becomes a scorer_crashed dead letter instead of the end of the whole job.
    isolate_crashes: bool = False
    # With isolate_crashes, a scoring process that has not answered a batch (or a record alone)
    # within this is killed as if it had crashed: a record that hangs a detector is dead-lettered
    # too. The stream's stream.score_stall_s, and for the same reason: a batch of the default
    # detector takes about a minute of CPU.
    score_timeout_s: float = 600.0
    # Builds the scorer in place of the detector registry: a module-level function of the spec,
    # so that a worker, and its scoring process, can import it (tests; detectors of your own).
    scorer_factory: Callable[[ScoringSpec], Scorer] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        detectors: Sequence[str] | None = None,
        min_scores: Mapping[str, float] | None = None,
        options: Mapping[str, str] | None = None,
        isolate_crashes: bool = False,
        score_timeout_s: float | None = None,
    ) -> ScoringSpec:
        config = settings.detectors.config()
        if options:
            config = dataclasses.replace(config, options={**config.options, **options})
        return cls(
            detectors=tuple(detectors or settings.detectors.enabled),
            config=config,
            pseudonym_key=settings.pseudonym_key.get_secret_value().encode("utf-8"),
            max_record_bytes=settings.batch.max_record_bytes,
            batch_size=settings.batch.max_records,
            min_scores=tuple(sorted((min_scores or {}).items())),
            lake_policy=LakePolicy.from_settings(settings),
            trusted_system_prompts=tuple(settings.detectors.trusted_system_prompts),
            isolate_crashes=isolate_crashes,
            score_timeout_s=score_timeout_s or settings.stream.score_stall_s,
        )

    @property
    def cache_key(self) -> tuple:
        # DetectorConfig holds a dict (unhashable); its repr is stable for equal configs.
        return (self.detectors, repr(self.config), self.pseudonym_key, self.min_scores, self.trusted_system_prompts,
                self.isolate_crashes, self.score_timeout_s, self.scorer_factory)  # fmt: skip


# One Scorer per Python worker process, built lazily in the first task that needs it.
# Spark reuses Python workers across tasks (spark.python.worker.reuse, set by session.py),
# so a model is loaded once per worker rather than once per task or batch; with one worker
# per executor core this is "one model per executor slot". The detector picks the GPU when
# DetectorConfig.device is "auto" and the executor has one. Building at import would load
# models in the driver too and break the no-side-effects-at-import rule.
# With isolate_crashes the cached object is a ProcessScorer, whose child holds the models.
_SCORERS: dict[tuple, Scorer | ProcessScorer] = {}


def _scorer(spec: ScoringSpec) -> Scorer | ProcessScorer:
    scorer = _SCORERS.get(spec.cache_key)
    if scorer is None:
        scorer = _build_scorer(spec)
        _SCORERS[spec.cache_key] = scorer
    return scorer


def _build_scorer(spec: ScoringSpec) -> Scorer | ProcessScorer:
    from pyspark import TaskContext

    task = TaskContext.get()
    if spec.config.threads is None and task is not None:
        # A detector left to its default uses every core of the machine; in a task it gets
        # spark.task.cpus, or N concurrent workers would each start os.cpu_count() threads.
        spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, threads=task.cpus()))
    if not spec.isolate_crashes:
        return _inline_scorer(spec)
    from prometheus_client import CollectorRegistry

    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import BatchSettings, StreamSettings

    # What the scoring process reads of the settings: the record limit; no warm-up (a backfill
    # has no group to join, its first batch is as good a warm-up as any).
    settings = Settings.model_construct(batch=BatchSettings(max_record_bytes=spec.max_record_bytes),
                                        stream=StreamSettings(warm_up_records=0))  # fmt: skip
    return ProcessScorer(settings, PipelineMetrics(CollectorRegistry()), functools.partial(_child_scorer, spec),
                         answer_timeout_s=spec.score_timeout_s)  # fmt: skip


def _inline_scorer(spec: ScoringSpec) -> Scorer:
    if spec.scorer_factory is not None:
        return spec.scorer_factory(spec)
    from detectors.registry import build

    return Scorer(build(list(spec.detectors), spec.config), Pseudonymizer(spec.pseudonym_key),
                  trusted=TrustedPrompts(spec.trusted_system_prompts))


def _child_scorer(spec: ScoringSpec, settings: Settings, metrics: object) -> Scorer:
    """The scorer of an isolated worker's scoring process (ProcessScorer's factory)."""
    return _inline_scorer(spec)


def apply_min_scores(
    log: InferenceLog, verdict: MisuseVerdict, min_scores: Mapping[str, float], pseudonymize: Pseudonymizer
) -> MisuseVerdict:
    """Rebuild the verdict without findings below the category's minimum score."""
    kept = [f for f in verdict.findings if f.score >= min_scores.get(f.category.value, 0.0)]
    if len(kept) == len(verdict.findings):
        return verdict
    return build_verdict(log, kept, pseudonymize)


def score_rows(rows: Sequence[Mapping], scorer: Scorer | ProcessScorer, spec: ScoringSpec) -> pa.Table:
    """Raw rows (RAW_SCHEMA dicts) -> scored rows (SCORED_ARROW_SCHEMA), one per input."""
    pending: list[tuple[SourcePosition, bytes, bytes]] = []  # position, the row's bytes, the value to decode
    out: list[dict] = []
    for row in rows:
        position = SourcePosition(row["source_topic"], row["source_partition"], row["source_offset"])
        size = row.get(VALUE_BYTES)
        if row["value"] is not None and size is not None and size > len(row["value"]):  # cut in the JVM (run): its head is kept
            exc = too_large(size, spec.max_record_bytes)
            detail = f"{exc.detail} (the dead letter keeps the first {len(row['value'])})"
            out.append(_dead_letter(position, exc.reason.value, detail, row["value"]))
            continue
        try:
            value = decrypt_value(row["value"], spec.lake_policy) if row["value"] else row["value"]
        except ValueError as exc:  # no key, another key, or a tampered row: a dead letter, not a crash
            out.append(_dead_letter(position, "undecryptable", f"{type(exc).__name__}: {exc}"[:300], row["value"]))
            continue
        pending.append((position, row["value"], value))
    # Both scorers decode and score the same way (Scorer.score_values, the stream's unit of work)
    # and return each verdict's JSON, which the lake row keeps unless min_scores rebuilt it.
    thresholds = dict(spec.min_scores)
    pseudonymize = Pseudonymizer(spec.pseudonym_key)
    records: list[ScoredRecord] = []
    results = scorer.score_values([value for _, _, value in pending], spec.max_record_bytes)
    for (position, raw, _), result in zip(pending, results, strict=True):
        if isinstance(result, RecordError):  # it did not decode, or a detector failed on it alone
            out.append(_dead_letter(position, result.reason, result.detail, raw))
            continue
        log, verdict, verdict_json = result
        if thresholds:
            kept = apply_min_scores(log, verdict, thresholds, pseudonymize)
            verdict, verdict_json = kept, (verdict_json if kept is verdict else None)
        records.append(ScoredRecord(log, verdict, position, verdict_json))
    out.extend(to_rows(records, spec.lake_policy))
    # Column by column (error rows lack the verdict columns): from_pylist is ~50x slower here.
    return pa.Table.from_pydict({name: [row.get(name) for row in out] for name in SCORED_ARROW_SCHEMA.names}, schema=SCORED_ARROW_SCHEMA)


def _dead_letter(position: SourcePosition, reason: str, detail: str, raw: bytes | None) -> dict:
    """A scored row that is a dead letter: its source position, why, and the bytes it came as."""
    return {
        "source_topic": position.topic,
        "source_partition": position.partition,
        "source_offset": position.offset,
        "error_reason": reason,
        "error_detail": detail,
        "raw_value": raw,
    }


def _score_batches(spec: ScoringSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    scorer = _scorer(spec)
    for batch in batches:
        rows = batch.to_pylist()
        for start in range(0, len(rows), spec.batch_size):
            yield from score_rows(rows[start : start + spec.batch_size], scorer, spec).to_batches()


def run(spark: SparkSession, raw: DataFrame, spec: ScoringSpec) -> DataFrame:
    """Score raw records (RAW_SCHEMA) -> one row per input (SCORED_SCHEMA), lazily.

    Rows with ``error_reason`` set are dead letters; the others are lake rows.
    """
    missing = set(RAW_SCHEMA.fieldNames()) - set(raw.columns)
    if missing:
        raise BackfillError(f"backfill input lacks columns {sorted(missing)}")
    # A value over twice the record limit is cut to its first limit + 1 bytes here, in the JVM,
    # before a shuffle or the Python workers see it; score_rows dead-letters it as too_large
    # with its real size. A 100 MB JSONL line crashed the whole job with Java's OutOfMemoryError
    # while it was handed to Python (a hostile review, 2026-12-05). Twice: a lake's encrypted
    # log carries an envelope, and a value near the limit keeps the path it had (decode judges it).
    limit = spec.max_record_bytes
    size = F.length("value")
    raw = raw.select(
        F.when(size > 2 * limit, F.substring("value", 1, limit + 1)).otherwise(F.col("value")).alias("value"),
        *RAW_SCHEMA.fieldNames()[1:],
        size.alias(VALUE_BYTES),
    )
    slots = spark.sparkContext.defaultParallelism
    if raw.rdd.getNumPartitions() < slots:
        # A JSONL file under spark.sql.files.openCostInBytes (4 MB) is one split, a topic may
        # have one partition: spread the records or a single core scores them all. Twice the
        # slots evens out records of very different cost (long completions).
        raw = raw.repartition(2 * slots)
    return raw.mapInArrow(functools.partial(_score_batches, spec), SCORED_SCHEMA)


# --- sources ---------------------------------------------------------------------------------


def read_lake_verdicts(spark: SparkSession, lake: Path | str) -> DataFrame:
    """Every verdict row of a lake, with the in-file ``date`` column (string).

    recursiveFileLookup turns off partition discovery, so ``date=...`` directories do not
    add a second, type-inferred ``date`` column next to the one stored in the files.
    """
    return (
        spark.read.schema(from_arrow_schema(LAKE_SCHEMA))
        .option("recursiveFileLookup", "true")
        .parquet(*map(str, lake_verdict_files(lake)))
    )


def first_per_request(verdicts: DataFrame) -> DataFrame:
    """One row per ``request_id`` (the idempotency key, design.md): the first by source position
    (shadow compares the verdicts of one record this way)."""
    return _first_row(verdicts, ["request_id"], POSITION)


def one_per_request(verdicts: DataFrame) -> DataFrame:
    """One row per replayed record for the jobs that count (aggregates, offenders, campaigns):
    rows alike in ``request_id`` and in the keyed hashes of their texts are one record, counted
    as its most severe copy (flagged first), then the first by source position.

    A record replayed by a producer (a gateway's spill file delivered twice, a client's retry)
    is stored at each offset it was consumed from; counted once per offset, it doubled its
    user's risk and the day's records (a hostile review, 2026-12-07). The texts are part of the
    key because some producers let the client choose the id (LiteLLM's ``x-litellm-call-id``):
    by the id alone, six different attacks under one id counted as one, and a flagged record
    could hide behind a benign one sent first (a review of this change, 2026-12-07). The tenant
    and user are too: by id and texts alone, three accounts sending one prompt under one fixed
    id counted as one record of one user, so the campaign went unseen and two of them were never
    ranked (a hostile review, 2026-12-07). So is the timestamp: a replay is the same bytes, so the
    same time, and a client that sent one attack five times, hours apart, under one id it chose
    counted as one record, five times less risk than another user's five (a hostile review,
    2026-12-07; the events table, keyed with the time, counted five). A retry the model served
    again counts again, as the events table counts it."""
    from pipeline.schemas import Severity

    rank = F.coalesce(F.array_position(F.array(*[F.lit(s.value) for s in Severity]), F.col("severity")), F.lit(0))
    return _first_row(verdicts, ["request_id", "tenant_id", "user_id", "timestamp", "prompt_hash", "completion_hash"],
                      [F.col("flagged").desc_nulls_last(), rank.desc(), *POSITION])


POSITION = ["source_topic", "source_partition", "source_offset"]


def _first_row(verdicts: DataFrame, keys: list[str], order: list) -> DataFrame:
    """The first row of each group of ``keys`` in ``order``."""
    window = Window.partitionBy(*keys).orderBy(*order)
    return verdicts.withColumn("_n", F.row_number().over(window)).where(F.col("_n") == 1).drop("_n")


def lake_verdict_files(lake: Path | str) -> list[Path]:
    """The lake's verdict files: ``verdicts/date=*/<topic>-<partition>-<first>-<last>.parquet``,
    as the lake writes them, and nothing else under ``verdicts/`` (a job's output written there
    was read as verdicts, a hostile review, 2026-12-06); BackfillError when there is none."""
    path = Path(lake) / "verdicts"
    files = sorted(p for p in path.glob("date=*/*.parquet") if LakeFile.parse(p) is not None)
    if not files:
        raise BackfillError(f"no verdict files under {path}")
    for file in files:
        _check_lake_columns(file)
    return files


# Columns every lake file has had since the first lake (others, added later, read as null from
# older files). Read with the lake's schema imposed, a file without one of these read it as null
# too: aggregates counted records with flagged and every severity empty, and exited 0 (a hostile
# review, 2026-12-07). The footer alone is read, so this costs a file open per file.
CORE_LAKE_COLUMNS = ("request_id", "timestamp", "date", "model", "tenant_id", "user_id", "flagged", "severity",
                     "categories", "source_topic", "source_partition", "source_offset")


def _check_lake_columns(file: Path) -> None:
    try:
        names = set(pq.read_schema(file).names)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BackfillError(f"{file} is not a readable Parquet file: {exc}") from exc
    if missing := [c for c in CORE_LAKE_COLUMNS if c not in names]:
        raise BackfillError(f"{file} is not a lake verdict file: column(s) {', '.join(missing)} missing")


def lake_verdicts_dir(lake: Path | str) -> Path:
    """The lake's verdicts folder; BackfillError when it holds no verdict file. Cheap, so callers
    can check before Spark starts (a JVM start is seconds of log lines before the error)."""
    lake_verdict_files(lake)
    return Path(lake) / "verdicts"


def read_lake_logs(spark: SparkSession, lake: Path | str) -> DataFrame:
    """History from a lake: the stored log at its original source position.

    Only rows whose text the lake kept (``lake.raw_text``: all rows, flagged ones, or none)
    can be re-scored; the others are left out here (docs/privacy.md). An encrypted log
    travels as ENCRYPTED_MAGIC + request id + NUL + ciphertext and is decrypted in the
    worker with the lake key of the settings (the key never enters a Spark plan).
    """
    verdicts = read_lake_verdicts(spark, lake)
    value = F.when(F.col("log_json").isNotNull(), F.encode("log_json", "UTF-8")).otherwise(
        F.concat(F.lit(ENCRYPTED_MAGIC), F.encode("request_id", "UTF-8"), F.lit(b"\0"), F.col("log_json_encrypted"))
    )
    return verdicts.where(F.col("log_json").isNotNull() | F.col("log_json_encrypted").isNotNull()).select(
        value.alias("value"), "source_topic", "source_partition", "source_offset"
    )


def decrypt_value(value: bytes, policy: LakePolicy) -> bytes:
    """The plain log of a value from :func:`read_lake_logs` (unchanged unless encrypted)."""
    if not value.startswith(ENCRYPTED_MAGIC):
        return value
    cipher = policy.cipher
    if cipher is None:
        raise ValueError("the lake row is encrypted and no lake.encryption_key is set")
    request_id, _, blob = value[len(ENCRYPTED_MAGIC) :].partition(b"\0")
    return cipher.decrypt(blob, request_id.decode("utf-8")).encode("utf-8")


JSONL_PARTITIONS = "jsonl_partitions.json"  # in a backfilled lake: each archive's partition number


def jsonl_partitions(files: Sequence[str], manifest: Path | None) -> dict[str, int]:
    """A partition number per file (real paths): the one ``manifest`` already gives its content
    (its first line, :func:`first_line_key`) or, for a map written before contents were keyed,
    its path; else the next free one, in sorted order. Written back to ``manifest``.

    Numbered by sorted position alone, a second backfill with one more archive shifted every
    later file's partition: its records were stored again under new offsets beside the old
    ones, and the new file's range trimmed another file's rows (a hostile review, 2026-12-06).
    Keyed by path alone, a rotated archive (``cur.jsonl`` renamed ``cur.jsonl.1``) got a new
    partition and every record was stored twice (a hostile review, 2026-12-07). A file that
    grew keeps its first line, so its partition. Two files of one run with the same first line
    are the same log twice: refused.
    """
    known: dict[str, int] = {}
    if manifest is not None and manifest.is_file():
        try:
            known = {str(k): int(v) for k, v in json.loads(manifest.read_text()).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise BackfillError(f"{manifest} is not a JSONL partition map ({type(exc).__name__}); move it away") from None
    keys = {f: first_line_key(f) for f in files}
    first_with: dict[str, str] = {}
    for file in files:
        if (key := keys[file]) is not None and (other := first_with.setdefault(key, file)) != file:
            raise BackfillError(f"{other} and {file} begin with the same line: the same log twice (a rotated copy?); "
                                "give one of them")
    content_of = {v: k for k, v in known.items() if k.startswith(_FIRST_LINE)}  # partition -> its content key
    numbers: dict[str, int] = {}
    for file in files:
        key = keys[file]
        if key is not None and key in known:
            numbers[file] = known[key]
        elif file in known and content_of.get(known[file]) in (None, key):  # same path, same or unrecorded content
            numbers[file] = known[file]
    following = max([*known.values(), *numbers.values()], default=-1) + 1
    for file in files:
        if file not in numbers:
            numbers[file] = following
            following += 1
    if manifest is not None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        partial = manifest.with_name(f".{manifest.name}.tmp")
        contents = {keys[f]: n for f, n in numbers.items() if keys[f] is not None}
        partial.write_text(json.dumps({**known, **numbers, **contents}, indent=1, sort_keys=True) + "\n")
        os.replace(partial, manifest)  # a run killed while writing leaves the old map whole
    return numbers


_FIRST_LINE = "first-line:"


def first_line_key(file: str) -> str | None:
    """``first-line:<sha256>`` of a JSONL file's first line (read through gzip for ``.gz``, as
    Spark reads it), or None for an empty or unreadable file. A log's first line holds a
    request id and a time: two files that begin with the same one hold the same log."""
    import gzip
    import hashlib

    try:
        with (gzip.open if file.endswith(".gz") else open)(file, "rb") as fh:
            line = fh.readline(1 << 20)
    except (OSError, EOFError):  # gzip.BadGzipFile is an OSError
        return None
    line = line.rstrip(b"\r\n")
    return _FIRST_LINE + hashlib.sha256(line).hexdigest() if line.strip() else None


def read_jsonl(spark: SparkSession, paths: Sequence[str | Path], manifest: Path | None = None) -> DataFrame:
    """Lines of JSONL archives as raw bytes (invalid UTF-8 is kept for the dead letters).

    Files are expanded (globs allowed), resolved (a symlink, or the same file named twice, is
    read once: it was read twice, a hostile review, 2026-12-06) and sorted; partition = the
    file's number in ``manifest`` (:func:`jsonl_partitions`; without one, its index in that
    order), offset = 1-based line number, lines ending at ``\n`` only (Spark's text source
    also ends them at a lone ``\r``, which JSON allows inside a record as whitespace).
    Numbering stays in the JVM (no Python round trip): Spark's text source yields each split's
    lines in order, so a line's number is the number of lines in the splits before its split
    (by byte offset, ``input_file_block_start``) plus its position in its own split
    (``monotonically_increasing_id`` is consecutive within one).
    """
    named = sorted({f for p in paths for f in (glob.glob(str(p)) or [str(p)])})
    missing = [f for f in named if not Path(f).is_file()]
    if not named or missing:
        raise BackfillError(f"JSONL input not found: {missing or list(paths)}")
    files = sorted({os.path.realpath(f) for f in named})
    numbers = jsonl_partitions(files, manifest)
    frames = []
    for file in files:
        index = numbers[file]
        # The text source hands lines over as undecoded bytes; casting to binary keeps them.
        lines = spark.read.option("lineSep", "\n").text(file).select(
            F.col("value").cast("binary").alias("value"),
            F.input_file_block_start().alias("_block"),
            F.monotonically_increasing_id().alias("_id"),
        )
        blocks = sorted(
            (r["_block"], r["n"], r["first_id"])
            for r in lines.groupBy("_block").agg(F.count(F.lit(1)).alias("n"), F.min("_id").alias("first_id")).collect()
        )
        if not blocks:
            continue  # an empty file: no lines (its index stays taken, so the others keep their partition)
        base, lines_before = [], 0
        for block, count, first_id in blocks:
            base.append((block, lines_before - first_id))
            lines_before += count
        shift = F.create_map(*[F.lit(x) for pair in base for x in pair])
        frames.append(
            lines.select(
                "value",
                F.lit(FILE_TOPIC).alias("source_topic"),
                F.lit(index).cast("int").alias("source_partition"),
                (F.col("_id") + shift[F.col("_block")] + 1).alias("source_offset"),
            )
        )
    result = spark.createDataFrame([], RAW_SCHEMA)  # every file empty: zero records, not an error
    for frame in frames:
        result = result.unionByName(frame)
    return result


def read_kafka(
    spark: SparkSession,
    bootstrap: str,
    topic: str,
    starting_offsets: str = "earliest",
    ending_offsets: str = "latest",
    options: Mapping[str, str] | None = None,
) -> DataFrame:
    """A bounded range of a topic. Offsets: earliest/latest or Spark's JSON form,
    e.g. ``{"logs":{"0":100,"1":-2}}`` (-2 earliest, -1 latest); the end is exclusive.

    Needs a session built with ``SparkOptions(kafka=True)``. ``options`` are passed through
    (``kafka.security.protocol``, ``kafka.sasl.mechanism``...).
    """
    reader = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("endingOffsets", ending_offsets)
        # A missing offset (retention) must fail the backfill, not silently skip history.
        .option("failOnDataLoss", "true")
        .option("kafka.max.partition.fetch.bytes", str(16 * 1024 * 1024))
    )
    for key, value in (options or {}).items():
        reader = reader.option(key, value)
    return reader.load().select(
        "value",
        F.col("topic").alias("source_topic"),
        F.col("partition").cast("int").alias("source_partition"),
        F.col("offset").alias("source_offset"),
    )


def kafka_options_from_settings(settings: Settings) -> dict[str, str]:
    """Security settings of the stream's consumer, as spark-sql-kafka ``kafka.*`` options."""
    k = settings.kafka
    opts = {"kafka.security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        opts["kafka.sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_plain_username and k.sasl_plain_password:
        user, password = k.sasl_plain_username, k.sasl_plain_password.get_secret_value()
        opts["kafka.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{user}" password="{password}";'
        )
    if k.ssl_cafile:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = k.ssl_cafile
    return opts


# --- outputs ---------------------------------------------------------------------------------


def verdict_rows(scored: DataFrame) -> DataFrame:
    return scored.where(F.col("error_reason").isNull()).select(*LAKE_COLUMNS)


def dead_letter_rows(scored: DataFrame) -> DataFrame:
    return scored.where(F.col("error_reason").isNotNull()).select(*DEAD_LETTER_COLUMNS)


def _write_dead_letters(directory: Path, topic: str, partition: int, table: pa.Table) -> Path:
    """Dead letters of one offset range, replacing the overlapping part of earlier runs."""
    offsets = table.column("source_offset").to_pylist()
    first, last = min(offsets), max(offsets)
    target = directory / file_name(topic, partition, first, last)
    with shared_lock(directory.parent / LAKE_LOCK):  # no `lake prune` meanwhile, as the lake's writer
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(table, target)
        for existing in LakeWriter.files(directory, topic, partition):
            if existing.path == target or not existing.overlaps(first, last):
                continue
            old = pq.read_table(existing.path, schema=DEAD_LETTER_ARROW_SCHEMA)
            _keep_only(existing, old.filter(pc.or_(pc.less(old["source_offset"], first), pc.greater(old["source_offset"], last))))
    return target


def _keep_only(existing: LakeFile, kept: pa.Table) -> None:
    """Replace ``existing`` by its rows ``kept`` (named by their range), or delete it if none.

    The kept rows are as old as before: `lake prune` goes by a dead-letter file's write time,
    and a re-run over one offset gave 99 rows of a 60-day-old run a fresh one (a privacy
    review, 2026-12-06)."""
    written = existing.path.stat()
    kept_name = file_name(existing.topic, existing.partition, *_range(kept)) if kept.num_rows else None
    if kept_name is not None:
        _atomic_write(kept, existing.path.with_name(kept_name))
        os.utime(existing.path.with_name(kept_name), ns=(written.st_atime_ns, written.st_mtime_ns))
    if existing.path.name != kept_name:
        existing.path.unlink(missing_ok=True)


def _range(table: pa.Table) -> tuple[int, int]:
    return (pc.min(table["source_offset"]).as_py(), pc.max(table["source_offset"]).as_py())


def _atomic_write(table: pa.Table, target: Path) -> None:
    # Same recipe as the lake writer: readers never see a half-written file.
    # Dead letters hold the records' original bytes, prompts included: owner-only, as the
    # gateway's spill file (pipeline.stdio.open_private).
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)  # one left by a crash keeps whatever mode it had
    with open_private(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    os.replace(tmp, target)


def _write_groups(root: str, max_rows_per_file: int, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Runs in a task: scored rows sorted by (date, topic, partition, offset) -> files.

    Verdict groups go through the stream's LakeWriter; dead letters (date null) to
    ``<root>/dead_letters/<topic>-<partition>-<first>-<last>.parquet`` with the same
    replace-the-overlap rule, so re-runs neither duplicate nor lose them.
    """
    writer = LakeWriter(Path(root))
    written: list[dict] = []
    pending: list[pa.Table] = []
    pending_key: tuple | None = None
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending or pending_key is None:
            return
        table = pa.concat_tables(pending)
        date, topic, partition = pending_key
        if topic is None or partition is None or table.column("source_offset").null_count:
            raise BackfillError("every scored row needs a source position (topic, partition, offset)")
        if date is None:
            kind, flagged = "dead_letters", 0
            path = _write_dead_letters(Path(root) / "dead_letters", topic, partition, table.select(DEAD_LETTER_COLUMNS).cast(DEAD_LETTER_ARROW_SCHEMA))
        else:
            kind, flagged = "verdicts", pc.sum(table["flagged"]).as_py() or 0
            path = writer.write_range(date, topic, partition, table.select(LAKE_COLUMNS).cast(LAKE_SCHEMA))
        first, last = _range(table)
        written.append(
            {
                "path": str(path), "kind": kind, "date": date, "source_topic": topic, "source_partition": partition,
                "first_offset": first, "last_offset": last, "rows": table.num_rows, "flagged": int(flagged),
            }
        )
        pending, pending_rows = [], 0

    for batch in batches:
        table = pa.Table.from_batches([batch])
        keys = list(
            zip(
                table.column("date").to_pylist(),
                table.column("source_topic").to_pylist(),
                table.column("source_partition").to_pylist(),
                strict=True,
            )
        )
        start = 0
        for i in range(len(keys) + 1):
            if i < len(keys) and keys[i] == keys[start]:
                continue
            segment = table.slice(start, i - start)
            if segment.num_rows:
                if keys[start] != pending_key:
                    flush()
                    pending_key = keys[start]
                # Split by size in offset order: consecutive chunks never overlap.
                while segment.num_rows:
                    room = max_rows_per_file - pending_rows
                    pending.append(segment.slice(0, room))
                    pending_rows += min(room, segment.num_rows)
                    segment = segment.slice(room)
                    if pending_rows >= max_rows_per_file:
                        flush()
            start = i
    flush()
    yield from pa.Table.from_pylist(written, schema=WRITTEN_ARROW_SCHEMA).to_batches()


def write_outputs(scored: DataFrame, root: Path | str, max_rows_per_file: int = 100_000) -> DataFrame:
    """Write scored rows (verdicts in the lake layout, dead letters beside them) in one pass.

    Returns one row per file written (computed eagerly). Rows are hash-partitioned by
    (date, topic, partition), so each such group (and the trimming of its older files)
    belongs to exactly one task; dead letters have a null date and group per topic-partition.
    """
    keys = ["date", "source_topic", "source_partition"]
    written = (
        scored.repartition(*keys)
        .sortWithinPartitions(*keys, "source_offset")
        .mapInArrow(
            functools.partial(_write_groups, str(Path(root).resolve()), max_rows_per_file),
            from_arrow_schema(WRITTEN_ARROW_SCHEMA),
        )
    )
    return written.localCheckpoint(eager=True).orderBy("kind", "date", "source_topic", "source_partition", "first_offset")


@dataclass(frozen=True)
class BackfillResult:
    verdicts: int
    flagged: int
    dead_letters: int
    files: list[str] = field(default_factory=list)


def backfill_to_lake(
    spark: SparkSession, raw: DataFrame, spec: ScoringSpec, out: Path | str, max_rows_per_file: int = 100_000
) -> BackfillResult:
    """Score ``raw`` once and write verdicts (lake layout, ``<out>/verdicts/``) and dead
    letters (``<out>/dead_letters/``: position, reason, detail, original bytes) under ``out``."""
    files = write_outputs(run(spark, raw, spec), out, max_rows_per_file).collect()
    drop_earlier_copies(Path(out), files)
    verdict_files = [f for f in files if f["kind"] == "verdicts"]
    return BackfillResult(
        verdicts=sum(f["rows"] for f in verdict_files),
        flagged=sum(f["flagged"] for f in verdict_files),
        dead_letters=sum(f["rows"] for f in files if f["kind"] == "dead_letters"),
        files=[f["path"] for f in verdict_files],
    )


def drop_earlier_copies(root: Path, written: Sequence[Mapping]) -> int:
    """Remove, from files this run did not write, the rows at an offset it did; how many.

    A task trims only the files of its own kind and date (the ranges it rewrites), so a record
    fixed since the last run (a dead letter then, a verdict now) kept its old dead letter with
    its raw bytes, a verdict that became a dead letter stayed counted, and a record whose date
    changed was stored under both dates (a hostile review, 2026-12-07). Run on the driver once
    every task has written: each (topic, partition) this run wrote is read back by offset and
    compared with the lake's other files of it. A crash before this leaves the copies for the
    next run, as a crash mid-write does."""
    new_paths = {Path(f["path"]).resolve() for f in written}
    offsets: dict[tuple[str, int], list[pa.Array]] = {}
    for f in written:
        try:
            column = pq.read_table(f["path"], columns=["source_offset"]).column(0).combine_chunks()
        except FileNotFoundError:  # `lake prune` took it since (its date was past retention)
            continue
        offsets.setdefault((f["source_topic"], f["source_partition"]), []).append(column)
    dropped = 0
    for (topic, partition), arrays in offsets.items():
        done = pa.concat_arrays(arrays).cast(pa.int64())
        lo, hi = pc.min(done).as_py(), pc.max(done).as_py()
        folders = [(d, LAKE_SCHEMA) for d in sorted((root / "verdicts").glob("date=*"))]
        folders.append((root / "dead_letters", DEAD_LETTER_ARROW_SCHEMA))
        for folder, schema in folders:
            with shared_lock(root / LAKE_LOCK):  # no `lake prune` meanwhile
                if not folder.is_dir():
                    continue
                with exclusive_lock(folder / f".{topic}-{partition}.lock"):
                    for existing in LakeWriter.files(folder, topic, partition):
                        if existing.path.resolve() in new_paths or not existing.overlaps(lo, hi):
                            continue
                        table = pq.read_table(existing.path, schema=schema)
                        kept = table.filter(pc.invert(pc.is_in(table["source_offset"], value_set=done)))
                        if kept.num_rows < table.num_rows:
                            dropped += table.num_rows - kept.num_rows
                            _keep_only(existing, kept)
    return dropped


def parse_min_scores(text: str | None) -> dict[str, float]:
    """``jailbreak=0.7,cyber_abuse=0.85`` -> {"jailbreak": 0.7, "cyber_abuse": 0.85}."""
    from pipeline.schemas import Category

    result: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, value = part.partition("=")
        if name not in {c.value for c in Category} or not value:
            raise ValueError(f"bad threshold {part!r}: expected <category>=<score>, categories {[c.value for c in Category]}")
        try:
            score = float(value)
        except ValueError:
            raise ValueError(f"bad threshold {part!r}: {value!r} is not a number") from None
        if not 0.0 <= score <= 1.0:  # scores are calibrated probabilities; `not` also rejects nan
            raise ValueError(f"bad threshold {part!r}: the score must be from 0 to 1")
        result[name] = score
    return result


def parse_options(items: Sequence[str] | None, what: str = "detector option") -> dict[str, str]:
    """``["threshold=0.7", "window=256"]`` -> {"threshold": "0.7", "window": "256"}."""
    result = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad {what} {item!r}: expected key=value")
        result[key] = value
    return result


def check_one_source(lake: Path | None, jsonl: Sequence[str | Path] | None, kafka_topic: str | None) -> str | None:
    """Why the sources given are not one (None when they are): a second one used to be ignored."""
    given = [flag for flag, value in (("--lake", lake), ("--jsonl", jsonl), ("--kafka-topic", kafka_topic)) if value]
    if len(given) > 1:
        return f"choose one source, not {' and '.join(given)} (none given: the lake of the settings)"
    return None


def refuse_out_onto_source(
    out: Path, settings: Settings, lake: Path | None, jsonl: Sequence[object], kafka_topic: str | None
) -> None:
    """InputError for a backfill ``out`` inside or onto its source lake, which is the settings' lake
    when no source is named (the check looked at ``--lake`` only, and was bypassed so)."""
    source = None if jsonl or kafka_topic else (lake or settings.lake.path)
    refuse_inside_lake([out], [source], source_lake=source)


def read_source(
    spark: SparkSession,
    settings: Settings,
    *,
    lake: Path | None = None,
    jsonl: Sequence[str] = (),
    kafka_topic: str | None = None,
    bootstrap: str | None = None,
    starting_offsets: str = "earliest",
    ending_offsets: str = "latest",
    out: Path | None = None,
) -> DataFrame:
    """Pick exactly one source: --jsonl, --kafka-topic or (default) the lake. ``out``: the lake
    the records go to, whose JSONL partition map numbers the archives (:func:`jsonl_partitions`)."""
    problem = check_one_source(lake, jsonl, kafka_topic)
    if problem:
        raise BackfillError(problem)
    if jsonl:
        return read_jsonl(spark, jsonl, None if out is None else Path(out) / JSONL_PARTITIONS)
    if kafka_topic:
        return read_kafka(
            spark,
            bootstrap or settings.kafka.bootstrap_servers,
            kafka_topic,
            starting_offsets,
            ending_offsets,
            kafka_options_from_settings(settings),
        )
    return read_lake_logs(spark, lake or settings.lake.path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backfill", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[*]")
    p.add_argument("--config", type=Path, default=None, help="YAML settings file")
    p.add_argument("--lake", type=Path, default=None, help="source lake (default: settings lake.path)")
    p.add_argument("--jsonl", nargs="*", default=[], help="JSONL archives instead of the lake")
    p.add_argument("--kafka-topic", default=None, help="Kafka topic instead of the lake")
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--starting-offsets", default="earliest")
    p.add_argument("--ending-offsets", default="latest")
    p.add_argument("--out", type=Path, required=True, help="output lake root")
    add_overwrite_argument(p)
    p.add_argument("--detectors", default=None, help="comma-separated detector names")
    p.add_argument("--option", action="append", default=[], help="detector option key=value")
    p.add_argument("--min-scores", default=None, help="category=score,... extra thresholds")
    p.add_argument("--max-rows-per-file", type=bounded(int, 1), default=100_000)
    p.add_argument("--isolate-crashes", action="store_true",
                   help="score in a child process of each worker: a record that crashes or hangs a detector is a dead letter")
    p.add_argument("--score-timeout", type=bounded(float, 1), default=None,
                   help="with --isolate-crashes: seconds a batch may take (default stream.score_stall_s, 600)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.spark.session import SparkOptions, build_session

    parser = build_parser()
    args = parser.parse_args(argv)
    problem = check_one_source(args.lake, args.jsonl, args.kafka_topic)
    if problem:
        parser.error(problem)  # exit 2, before Spark starts
    try:
        min_scores, options = parse_min_scores(args.min_scores), parse_options(args.option)
    except ValueError as exc:
        parser.error(str(exc))
    if args.score_timeout is not None and (not args.isolate_crashes or args.score_timeout <= 0):
        parser.error("--score-timeout takes seconds above 0, and only with --isolate-crashes (it bounds the scoring process)")
    refuse_overwrite([args.out], args.overwrite)  # before Spark starts: a mistyped --out costs nothing
    settings = load_settings(args.config)
    refuse_out_onto_source(args.out, settings, args.lake, args.jsonl, args.kafka_topic)
    spec = ScoringSpec.from_settings(
        settings, detectors=parse_names(args.detectors), min_scores=min_scores, options=options,
        isolate_crashes=args.isolate_crashes, score_timeout_s=args.score_timeout,
    )
    spark = build_session(SparkOptions(master=args.master, app_name="misuse-monitor-backfill", kafka=bool(args.kafka_topic)))
    raw = read_source(
        spark,
        settings,
        lake=args.lake,
        jsonl=args.jsonl,
        kafka_topic=args.kafka_topic,
        bootstrap=args.bootstrap,
        starting_offsets=args.starting_offsets,
        ending_offsets=args.ending_offsets,
        out=args.out,
    )
    result = backfill_to_lake(spark, raw, spec, args.out, args.max_rows_per_file)
    print(
        f"{result.verdicts} verdicts ({result.flagged} flagged), {result.dead_letters} dead letters, "
        f"{len(result.files)} files -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    # Re-import through the package so functions shipped to workers pickle by reference
    # (and share the worker's detector cache) instead of by value from __main__.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.exits import run_script
    from pipeline.spark import backfill as _job

    sys.exit(run_script("backfill", _job.main, sys.argv[1:]))
