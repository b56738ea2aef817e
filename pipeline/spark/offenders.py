"""Users ranked by decayed risk, with the categories and models they touched.

risk(user) = sum over the user's verdicts of weight(severity) * 0.5 ** (age_days / half_life),
with age measured back from ``as_of`` (default: the newest verdict in the input, so the
ranking of a fixed history does not change with the day the job runs; a time without an offset
is UTC, whatever the machine's time zone). Weights grow
faster than linearly so one critical case outranks a handful of low ones. Verdicts
without a user id are left out (nobody to rank).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipeline.spark.output import add_overwrite_argument, bounded, refuse_inside_lake, refuse_overwrite

SEVERITY_WEIGHTS: Mapping[str, float] = {"none": 0.0, "low": 1.0, "medium": 3.0, "high": 7.0, "critical": 15.0}
DEFAULT_HALF_LIFE_DAYS = 7.0


def run(
    spark: SparkSession,
    verdicts: DataFrame,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    as_of: datetime | None = None,
    top: int | None = 100,
    weights: Mapping[str, float] = SEVERITY_WEIGHTS,
) -> DataFrame:
    """Lake verdict rows -> one row per user of a tenant with risk > 0, highest risk first (rank 1).

    User ids are the tenant's own (a request's ``user`` field): user "1042" of two tenants is two
    people under one pseudonym, as the producer's keys and the alert engine hold it, so each is
    ranked on its own (their risks were added up; a hostile review, 2026-12-07)."""
    del spark
    if half_life_days <= 0:
        raise ValueError("half_life_days must be > 0")
    if as_of is not None and as_of.tzinfo is None:
        # pyspark reads a naive datetime in the Python process's local time zone, not the
        # session's (UTC): 2026-11-27 in Tokyo was 2026-11-26 15:00 UTC, and every risk moved.
        as_of = as_of.replace(tzinfo=UTC)
    from pipeline.spark.backfill import one_per_request

    rows = one_per_request(verdicts).where(F.col("user_id").isNotNull()).withColumn("_tenant", F.coalesce("tenant_id", F.lit("")))
    # Default: the newest verdict, but never after now. One record dated 2199 (timestamps up to
    # 2200 are valid) made every other risk decay to 0 and emptied the ranking but for its user
    # (a hostile review, 2026-12-06); a future record's age is 0 (below), so it weighs in full.
    newest = F.max("timestamp").over(Window.partitionBy())
    reference = F.lit(as_of).cast("timestamp") if as_of else F.least(newest, F.current_timestamp())
    weight = F.create_map(*[x for k, v in sorted(weights.items()) for x in (F.lit(k), F.lit(float(v)))])
    age_days = (F.col("timestamp").cast("double") - F.col("_ref").cast("double")) / -86400.0
    scored = (
        rows.withColumn("_ref", reference)
        .withColumn("_age_days", F.greatest(age_days, F.lit(0.0)))
        .withColumn(
            "_risk",
            F.coalesce(weight[F.col("severity")], F.lit(0.0)) * F.pow(F.lit(0.5), F.col("_age_days") / half_life_days),
        )
    )
    flagged = F.col("flagged")
    per_user = scored.groupBy("user_id", "_tenant").agg(
        F.sum("_risk").alias("risk"),
        F.count(F.lit(1)).alias("records"),
        F.sum(flagged.cast("long")).alias("flagged"),
        F.sum(F.when(flagged & F.col("complied"), 1).otherwise(0)).cast("long").alias("complied"),
        F.max(F.when(flagged, F.col("timestamp"))).alias("last_flagged_at"),
        F.min("timestamp").alias("first_seen"),
        F.max("timestamp").alias("last_seen"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("categories")))).alias("categories"),
        F.array_sort(F.collect_set(F.when(flagged, F.col("model")))).alias("models"),
        F.countDistinct("model").alias("models_used"),
        F.array_sort(F.collect_set("tenant_id")).alias("tenants"),
        F.max(
            F.when(F.col("severity") == "critical", 4)
            .when(F.col("severity") == "high", 3)
            .when(F.col("severity") == "medium", 2)
            .when(F.col("severity") == "low", 1)
            .otherwise(0)
        ).alias("_max_rank"),
    )
    ranked = (
        per_user.where(F.col("risk") > 0)
        .withColumn("flagged_share", F.col("flagged") / F.col("records"))
        .withColumn(
            "max_severity",
            F.element_at(F.array(*[F.lit(s) for s in ("none", "low", "medium", "high", "critical")]), F.col("_max_rank") + 1),
        )
        .withColumn("rank", F.row_number().over(Window.orderBy(F.desc("risk"), F.asc("user_id"), F.asc("_tenant"))))
        .drop("_max_rank")
    )
    if top is not None:
        ranked = ranked.where(F.col("rank") <= top)
    ranked = ranked.join(_dominant_category(rows), ["user_id", "_tenant"], "left")
    return ranked.select(
        "rank", "user_id", "risk", "records", "flagged", "flagged_share", "complied", "max_severity",
        "categories", "dominant_category", "models", "models_used", "tenants", "first_seen", "last_seen",
        "last_flagged_at",
    ).orderBy("rank")


def _dominant_category(rows: DataFrame) -> DataFrame:
    """(user_id, _tenant) -> the category on most of the user's flagged verdicts (ties: alphabetical), so a
    report can colour a user by what they mostly do rather than by the first category listed."""
    per_category = (
        rows.where(F.col("flagged"))
        .select("user_id", "_tenant", F.explode("categories").alias("category"))
        .groupBy("user_id", "_tenant", "category")
        .count()
    )
    first = Window.partitionBy("user_id", "_tenant").orderBy(F.desc("count"), F.asc("category"))
    return (
        per_category.withColumn("_n", F.row_number().over(first))
        .where(F.col("_n") == 1)
        .select("user_id", "_tenant", F.col("category").alias("dominant_category"))
    )


def write(result: DataFrame, out: Path | str) -> Path:
    target = Path(out) / "offenders"
    result.coalesce(1).write.mode("overwrite").parquet(str(target))
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="offenders", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[*]")
    p.add_argument("--lake", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    add_overwrite_argument(p)
    p.add_argument("--half-life-days", type=bounded(float, 0.001), default=DEFAULT_HALF_LIFE_DAYS)
    p.add_argument("--as-of", type=datetime.fromisoformat, default=None, help="ISO time, UTC unless it has an offset (default: newest verdict)")
    p.add_argument("--top", type=bounded(int, 1), default=100)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.spark.backfill import read_lake_verdicts
    from pipeline.spark.session import SparkOptions, build_session

    args = build_parser().parse_args(argv)
    refuse_overwrite([args.out / "offenders"], args.overwrite)  # before Spark starts: a mistyped --out costs nothing
    refuse_inside_lake([args.out / "offenders"], [args.lake])
    spark = build_session(SparkOptions(master=args.master, app_name="misuse-monitor-offenders"))
    result = run(spark, read_lake_verdicts(spark, args.lake), args.half_life_days, args.as_of, args.top)
    print(f"offenders -> {write(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.exits import run_script
    from pipeline.spark import offenders as _job

    sys.exit(run_script("offenders", _job.main, sys.argv[1:]))
