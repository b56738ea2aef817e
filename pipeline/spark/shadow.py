"""Shadow comparison: two detector versions or threshold sets over the same history.

Variant A and B are either two verdict lakes (e.g. production vs a backfill with a new
model), or scored here from one source with two :class:`~pipeline.spark.backfill.ScoringSpec`
(different ``--detectors``, detector ``--option``s or ``--min-scores`` threshold sets).
Outputs:

- ``diff``: one row per record whose verdict differs (flagged, severity or categories),
  with both sides and ``change`` in {``added`` (flagged by B only), ``removed``,
  ``severity``, ``categories``}, or that only one variant has a verdict for (``only_a``,
  ``only_b``: e.g. a backfill that could not re-score the records whose text the lake did
  not keep), plus the reviewed label when there is one;
- ``metrics``: where reviewed labels exist, per variant and scope (``any`` = flagged vs
  labelled misuse; then each category when labels carry categories): tp, fp, fn, tn,
  precision, recall, on the labelled records both variants scored (a record one side never
  saw is not that side's miss).

Records are matched on ``request_id`` (the idempotency key); a replayed id keeps its
first occurrence. Labels: JSONL or Parquet with ``request_id``, ``misuse`` (bool) and
optionally ``categories`` (list of category names).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.plugins import parse_names
from pipeline.schemas import Category
from pipeline.spark.backfill import first_per_request
from pipeline.spark.output import add_overwrite_argument, refuse_overwrite

VARIANTS = ("a", "b")
_SIDE_COLUMNS = ["flagged", "severity", "categories"]


def paired(a: DataFrame, b: DataFrame) -> DataFrame:
    """One row per request id present in either variant, with ``<col>_a``/``<col>_b``."""
    def side(df: DataFrame, suffix: str) -> DataFrame:
        return first_per_request(df).select(
            "request_id",
            F.col("timestamp").alias(f"timestamp_{suffix}"),
            F.col("user_id").alias(f"user_id_{suffix}"),
            F.col("model").alias(f"model_{suffix}"),
            *[F.col(c).alias(f"{c}_{suffix}") for c in _SIDE_COLUMNS],
        )

    joined = side(a, "a").join(side(b, "b"), "request_id", "full_outer")
    return joined.select(
        "request_id",
        F.coalesce("timestamp_a", "timestamp_b").alias("timestamp"),
        F.coalesce("user_id_a", "user_id_b").alias("user_id"),
        F.coalesce("model_a", "model_b").alias("model"),
        *[f"{c}_{s}" for c in _SIDE_COLUMNS for s in VARIANTS],
    )


def run(spark: SparkSession, a: DataFrame, b: DataFrame, labels: DataFrame | None = None) -> DataFrame:
    """Verdict rows of A and B (lake columns) -> the verdict diff, lazily."""
    del spark
    pairs = paired(a, b)
    flagged_a = F.coalesce("flagged_a", F.lit(False))
    flagged_b = F.coalesce("flagged_b", F.lit(False))
    change = (
        F.when(F.col("flagged_a").isNull(), "only_b")
        .when(F.col("flagged_b").isNull(), "only_a")
        .when(~flagged_a & flagged_b, "added")
        .when(flagged_a & ~flagged_b, "removed")
        .when(~F.col("severity_a").eqNullSafe(F.col("severity_b")), "severity")
        .when(~F.array_sort("categories_a").eqNullSafe(F.array_sort("categories_b")), "categories")
    )
    diff = pairs.withColumn("change", change).where(F.col("change").isNotNull())
    if labels is not None:
        diff = diff.join(_labels(labels), "request_id", "left")
    return diff.orderBy("timestamp", "request_id")


def _labels(labels: DataFrame) -> DataFrame:
    cols = ["request_id", F.col("misuse").cast("boolean").alias("label_misuse")]
    if "categories" in labels.columns:
        cols.append(F.col("categories").alias("label_categories"))
    else:
        cols.append(F.lit(None).cast("array<string>").alias("label_categories"))
    return labels.select(*cols).dropDuplicates(["request_id"])


def metrics(a: DataFrame, b: DataFrame, labels: DataFrame) -> DataFrame:
    """Precision and recall of each variant on the reviewed records both variants scored."""
    both = F.col("flagged_a").isNotNull() & F.col("flagged_b").isNotNull()
    pairs = paired(a, b).where(both).join(_labels(labels), "request_id", "inner")
    scopes = [("any", F.col("label_misuse"), lambda s: F.coalesce(F.col(f"flagged_{s}"), F.lit(False)))]
    for cat in Category:
        truth = F.coalesce(F.array_contains("label_categories", cat.value), F.lit(False))
        scopes.append(
            (cat.value, truth, lambda s, c=cat.value: F.coalesce(F.array_contains(f"categories_{s}", c), F.lit(False)))
        )
    has_categories = pairs.where(F.col("label_categories").isNotNull()).limit(1).count() > 0
    if not has_categories:
        scopes = scopes[:1]
    # One aggregation pass for every (scope, variant) cell; reshaped into rows below.
    cells = []
    for scope, truth, predicted in scopes:
        for variant in VARIANTS:
            pred = predicted(variant)
            for name, cond in (("tp", pred & truth), ("fp", pred & ~truth), ("fn", ~pred & truth), ("tn", ~pred & ~truth)):
                cells.append(F.sum(cond.cast("long")).alias(f"{scope}|{variant}|{name}"))
    totals = pairs.agg(*cells).first().asDict()
    rows = []
    for scope, _, _ in scopes:
        for variant in VARIANTS:
            tp, fp, fn, tn = (int(totals[f"{scope}|{variant}|{n}"] or 0) for n in ("tp", "fp", "fn", "tn"))
            rows.append(
                (variant, scope, tp, fp, fn, tn, tp / (tp + fp) if tp + fp else None, tp / (tp + fn) if tp + fn else None)
            )
    schema = "variant string, scope string, tp long, fp long, fn long, tn long, precision double, recall double"
    return pairs.sparkSession.createDataFrame(sorted(rows, key=lambda r: (r[1], r[0])), schema)


def read_labels(spark: SparkSession, path: Path | str) -> DataFrame:
    """The labels (``request_id``, boolean ``misuse``, optional ``categories``); InputError naming
    the file when it has not those columns (an internal error with a Java stack trace until a
    hostile review, 2026-12-07)."""
    from pipeline.exits import InputError

    p = str(path)
    labels = spark.read.parquet(p) if p.endswith(".parquet") or Path(p).is_dir() else spark.read.json(p)
    types = dict(labels.dtypes)
    if "_corrupt_record" in types:
        raise InputError(f"--labels {p}: lines that are not JSON objects; one label per line: "
                         '{"request_id": ..., "misuse": true|false}')  # fmt: skip
    missing = [name for name in ("request_id", "misuse") if name not in types]
    if missing:
        raise InputError(f"--labels {p}: no {' or '.join(repr(m) for m in missing)} column (it has: "
                         f"{', '.join(sorted(types)) or 'none'}); one label per line: "
                         '{"request_id": ..., "misuse": true|false}')  # fmt: skip
    kind = types["misuse"]
    if kind.startswith(("array", "struct", "map", "binary")):
        raise InputError(f"--labels {p}: 'misuse' is {kind}, not true or false")
    # true/false, 0/1 and the words Spark casts ("yes", "no", "t", "f", ...), as `evaluate
    # --labels` reads them; anything else (null, 2, 0.5, "maybe") is refused naming its request,
    # not cast to true or silently dropped (the review of this check, 2026-12-07).
    value = F.col("misuse")
    if kind == "boolean":
        bad = value.isNull()
    elif kind == "string":
        bad = value.isNull() | ~F.lower(F.trim(value)).isin(*_LABEL_WORDS)
    else:
        bad = value.isNull() | ~value.isin(0, 1)
    first = labels.where(bad).select("request_id", F.col("misuse").cast("string").alias("misuse")).first()
    if first is not None:
        raise InputError(f"--labels {p}: 'misuse' of request {first['request_id']!r} is {first['misuse']!r}, "
                         "not true or false")  # fmt: skip
    return labels


# The words Spark casts to a boolean.
_LABEL_WORDS = ("true", "false", "t", "f", "yes", "no", "y", "n", "1", "0")


def write(diff: DataFrame, metric_rows: DataFrame | None, out: Path | str) -> Path:
    """``<out>/shadow`` replaced whole, like every job's directory: a run without labels must not
    leave an earlier run's ``metrics`` beside its new ``diff`` (the report would show them)."""
    target = Path(out) / "shadow"
    # Written beside it first, then swapped in: the earlier run's result was deleted before the
    # diff (computed lazily, in the write) was known to succeed, so a run that failed on a
    # damaged lake lost it (a hostile review, 2026-12-07).
    staging, retired = Path(out) / f".shadow.tmp-{os.getpid()}", Path(out) / f".shadow.old-{os.getpid()}"
    _clean_up_after_killed_runs(Path(out), target)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        diff.coalesce(1).write.parquet(str(staging / "diff"))
        if metric_rows is not None:
            metric_rows.coalesce(1).write.parquet(str(staging / "metrics"))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        if retired.exists() and not target.exists():
            retired.rename(target)  # the earlier result back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return target


def _clean_up_after_killed_runs(out: Path, target: Path) -> None:
    """What a run killed mid-write left (``.shadow.tmp-<pid>``, ``.shadow.old-<pid>`` of a pid
    that is gone) goes; an earlier result caught between the two renames is put back."""
    from pipeline.localinfra.base import pid_alive

    for leftover in sorted(out.glob(".shadow.*-*")):
        kind, _, pid = leftover.name.removeprefix(".shadow.").partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if kind == "old" and not target.exists():
            leftover.rename(target)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadow", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[*]")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--a-lake", type=Path, default=None, help="verdicts of A (else scored from the source)")
    p.add_argument("--b-lake", type=Path, default=None, help="verdicts of B (else scored from the source)")
    p.add_argument("--lake", type=Path, default=None, help="source history (lake) when scoring here")
    p.add_argument("--jsonl", nargs="*", default=[], help="source history (JSONL) when scoring here")
    for v in VARIANTS:
        p.add_argument(f"--{v}-detectors", default=None)
        p.add_argument(f"--{v}-option", action="append", default=[])
        p.add_argument(f"--{v}-min-scores", default=None)
    p.add_argument("--labels", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print what was written (and the metrics) as JSON on stdout")
    p.add_argument("--out", type=Path, required=True)
    add_overwrite_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.settings import load_settings
    from pipeline.spark import backfill
    from pipeline.spark.session import SparkOptions, build_session

    parser = build_parser()
    args = parser.parse_args(argv)
    parsed: dict[str, tuple[dict, dict]] = {}
    for v in VARIANTS:  # typos in thresholds and options are usage errors (exit 2), before Spark starts
        try:
            min_scores = backfill.parse_min_scores(getattr(args, f"{v}_min_scores"))
        except ValueError as exc:
            parser.error(f"--{v}-min-scores: {exc}")
        try:
            parsed[v] = (min_scores, backfill.parse_options(getattr(args, f"{v}_option")))
        except ValueError as exc:
            parser.error(f"--{v}-option: {exc}")
    refuse_overwrite([args.out / "shadow"], args.overwrite)  # before Spark starts: a mistyped --out costs nothing
    spark = build_session(SparkOptions(master=args.master, app_name="misuse-monitor-shadow"))
    settings = load_settings(args.config)
    sides: dict[str, DataFrame] = {}
    raw = None
    for v in VARIANTS:
        lake = getattr(args, f"{v}_lake")
        if lake is not None:
            sides[v] = backfill.read_lake_verdicts(spark, lake)
            continue
        if raw is None:
            raw = backfill.read_source(spark, settings, lake=args.lake, jsonl=args.jsonl).cache()
        detectors = getattr(args, f"{v}_detectors")
        min_scores, options = parsed[v]
        spec = backfill.ScoringSpec.from_settings(
            settings, detectors=parse_names(detectors), min_scores=min_scores, options=options
        )
        sides[v] = backfill.verdict_rows(backfill.run(spark, raw, spec)).cache()
    labels = read_labels(spark, args.labels) if args.labels else None
    diff = run(spark, sides["a"], sides["b"], labels)
    metric_rows = metrics(sides["a"], sides["b"], labels) if labels is not None else None
    target = write(diff, metric_rows, args.out)
    if args.json:
        metrics_out = [row.asDict() for row in metric_rows.collect()] if metric_rows is not None else None
        print(json.dumps({"job": "shadow", "outputs": {"shadow": str(target)}, "metrics": metrics_out}, sort_keys=True, default=str))
        return 0
    print(f"shadow -> {target}")
    if metric_rows is not None:
        metric_rows.show(truncate=False)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.exits import run_script
    from pipeline.spark import shadow as _job

    sys.exit(run_script("shadow", _job.main, sys.argv[1:]))
