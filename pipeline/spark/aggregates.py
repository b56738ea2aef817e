"""Daily aggregates per tenant, deployment, model and category.

One row per (date, tenant_id, deployment, model, category). ``category`` is ``all`` for the
totals of the group (every record once), otherwise one of the misuse categories (records
whose verdict carries it; a record with two categories counts in both). Columns:

- ``records``: records in the row; ``flagged``: of those, flagged,
- ``flagged_share``: flagged / all records of the (date, tenant, deployment, model) group,
- ``severity_<level>``: severity mix (counts; they add up to ``records``),
- ``with_completion``: records with a completion among the flagged ones, ``complied``: of
  those, where the model produced the harmful content; ``complied_share`` = complied /
  with_completion (null when no flagged record had a completion).

Null tenant/deployment stay null (grouped together), so totals add up to the raw counts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipeline.schemas import Severity
from pipeline.spark.output import add_overwrite_argument, refuse_inside_lake, refuse_overwrite

ALL = "all"
GROUP = ["date", "tenant_id", "deployment", "model"]
KEYS = [*GROUP, "category"]


def run(spark: SparkSession, verdicts: DataFrame) -> DataFrame:
    """Lake verdict rows -> daily aggregates (see module docstring), lazily."""
    from pipeline.spark.backfill import one_per_request

    del spark
    base = one_per_request(verdicts).select(*GROUP, "flagged", "severity", "complied", "categories")
    # Explode to one row per (record, category) plus one "all" row per record.
    labelled = base.withColumn(
        "category",
        F.explode(F.concat(F.array(F.lit(ALL)), F.coalesce(F.col("categories"), F.array().cast("array<string>")))),
    )
    flagged_with_completion = F.col("flagged") & F.col("complied").isNotNull()
    aggs = [
        F.count(F.lit(1)).alias("records"),
        F.sum(F.col("flagged").cast("long")).alias("flagged"),
        *[
            F.sum(F.when(F.col("severity") == s.value, 1).otherwise(0)).cast("long").alias(f"severity_{s.value}")
            for s in Severity
        ],
        F.sum(F.when(flagged_with_completion, 1).otherwise(0)).cast("long").alias("with_completion"),
        F.sum(F.when(flagged_with_completion & F.col("complied"), 1).otherwise(0)).cast("long").alias("complied"),
    ]
    grouped = labelled.groupBy(*KEYS).agg(*aggs)
    group_records = F.max(F.when(F.col("category") == ALL, F.col("records"))).over(Window.partitionBy(*GROUP))
    return (
        grouped.withColumn("_group_records", group_records)
        .select(
            *KEYS,
            "records",
            "flagged",
            (F.col("flagged") / F.col("_group_records")).alias("flagged_share"),
            *[f"severity_{s.value}" for s in Severity],
            "with_completion",
            "complied",
            F.when(F.col("with_completion") > 0, F.col("complied") / F.col("with_completion")).alias("complied_share"),
        )
        .orderBy(*KEYS)
    )


def write(result: DataFrame, out: Path | str) -> Path:
    """``<out>/aggregates/`` as one Parquet file (small: one row per day x group x category)."""
    target = Path(out) / "aggregates"
    result.coalesce(1).write.mode("overwrite").parquet(str(target))
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aggregates", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[*]")
    p.add_argument("--lake", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    add_overwrite_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.spark.backfill import read_lake_verdicts
    from pipeline.spark.session import SparkOptions, build_session

    args = build_parser().parse_args(argv)
    refuse_overwrite([args.out / "aggregates"], args.overwrite)  # before Spark starts: a mistyped --out costs nothing
    refuse_inside_lake([args.out / "aggregates"], [args.lake])
    spark = build_session(SparkOptions(master=args.master, app_name="misuse-monitor-aggregates"))
    print(f"aggregates -> {write(run(spark, read_lake_verdicts(spark, args.lake)), args.out)}")
    return 0


if __name__ == "__main__":
    # Import through the package so shipped functions pickle by reference (see backfill.py).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.exits import run_script
    from pipeline.spark import aggregates as _job

    sys.exit(run_script("aggregates", _job.main, sys.argv[1:]))
