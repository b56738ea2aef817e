"""Campaigns: near-duplicate prompts sent by different users, grouped.

1. The user's latest text of each verdict's stored log (flagged verdicts by default; a log the
   lake keeps encrypted is decrypted with the lake key of the settings), normalised (lower
   case, whitespace collapsed).
2. Distinct texts -> word unigrams + bigrams -> binary HashingTF -> MinHashLSH (Spark MLlib);
   ``approxSimilarityJoin`` finds pairs within ``max_distance`` Jaccard distance.
3. Connected components of those pairs (union-find on the driver: edges are between
   *distinct* texts, far fewer than records) -> one campaign per component.
4. Per campaign: records, distinct users, users, models, tenants, categories, first/last
   seen and a representative prompt (its most frequent text). Components with fewer than
   ``min_users`` distinct users are not campaigns (one user repeating himself is a repeat
   offender, see offenders.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.ml.feature import HashingTF, MinHashLSH, NGram, RegexTokenizer
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipeline.redact import representative_excerpt
from pipeline.spark.output import add_overwrite_argument, bounded, refuse_inside_lake, refuse_overwrite

if TYPE_CHECKING:
    from pipeline.privacy import LakePolicy

DEFAULT_MAX_DISTANCE = 0.6
DEFAULT_MIN_USERS = 3
_MAX_SHINGLE_CHARS = 4000
_SEED = 20261129  # fixed: the same history always yields the same campaigns


def campaign_id(key: bytes, component: str) -> str:
    """``c_`` and 12 hex characters of a keyed hash of the campaign's first text id.

    The text id is a plain SHA-256 of the normalised prompt (it only joins rows inside the job).
    The campaign id leaves the job, in its output and the report, next to a representative prompt
    whose names and addresses are redacted: were it the text id's first characters, as until
    2026-12-06, anyone with a list of candidate names and addresses could hash guesses of the
    prompt until one matched and so read what the redaction hid (a privacy review recovered
    "John Smith" and his address from nine guesses). Keyed with the pseudonym key, the id is
    stable from run to run for one deployment and means nothing without the key, like the lake's
    text hashes (pipeline/privacy.py)."""
    from pipeline.privacy import text_hash

    return "c_" + text_hash(key, component)[:12]


def _id_key(policy: LakePolicy | None) -> bytes:
    """The pseudonym key; without one (tests that pass no policy), a key of this run only, so
    ids are still unguessable, but differ between runs."""
    if policy is not None and policy.pseudonym_key:
        return policy.pseudonym_key
    return os.urandom(32)


def campaign_text(log_json: str | None, flagged_at: Iterable[str] | None = None) -> str | None:
    """What a campaign varies: the user's texts of a stored inference log (user turns and the
    ``prompt`` field, oldest first, one per line) that the record's findings name
    (``flagged_at``: their locations), else all of them.

    Not only the latest turn: a campaign ending each conversation with a different harmless
    turn was never found, and four different attacks that each ended in "continue please" were
    one campaign (a hostile review, 2026-12-07). The findings say which turn was the attack; a
    record without findings on the user's texts (flagged on the completion, or unflagged with
    ``--all-records``) is read whole. Not :attr:`InferenceLog.prompt_text`: that includes the
    deployment's system prompt, which every user of a deployment shares, so unrelated short
    prompts would look near-duplicate. None when the log is not stored or does not parse.
    """
    if not log_json:
        return None
    from pipeline.schemas import InferenceLog, PartKind

    try:
        log = InferenceLog.model_validate(json.loads(log_json))
    except ValueError:  # json.JSONDecodeError and pydantic.ValidationError are ValueErrors
        return None
    texts = [(p.location, p.text) for p in log.screened_parts() if p.kind in (PartKind.USER, PartKind.PROMPT)]
    named = set(flagged_at) if flagged_at is not None else set()
    chosen = [text for location, text in texts if location in named] or [text for _, text in texts]
    return "\n".join(chosen) or None


def _stored_log(verdicts: DataFrame, policy: LakePolicy | None) -> Column:
    """The stored log of each row as JSON text: ``log_json``, or ``log_json_encrypted`` decrypted.

    Without the key, rows that keep their log only encrypted would silently fall out of every
    campaign, so the job stops and says so; a key that does not open this lake's rows likewise
    (checked on one row on the driver before the job runs).
    """
    if "log_json_encrypted" not in verdicts.columns:  # a lake written before encryption existed
        return F.col("log_json")
    from pipeline.exits import SPARK_TASK_INPUT_ERROR
    from pipeline.spark.backfill import ENCRYPTED_MAGIC, BackfillError, decrypt_value

    sealed = verdicts.where(F.col("log_json").isNull() & F.col("log_json_encrypted").isNotNull())
    first = sealed.select("request_id", "log_json_encrypted").first()
    if first is None:
        return F.col("log_json")
    if policy is None or policy.cipher is None:
        raise BackfillError(
            "campaigns: the lake keeps logs encrypted and no lake.encryption_key is set; "
            "pass the settings (--config) that hold the lake's key"
        )

    def opened(request_id: str, blob: bytes) -> str:
        return decrypt_value(ENCRYPTED_MAGIC + request_id.encode("utf-8") + b"\0" + blob, policy).decode("utf-8")

    try:
        opened(first["request_id"], first["log_json_encrypted"])
    except ValueError as exc:  # PrivacyKeyError is a ValueError
        raise BackfillError(f"campaigns: lake.encryption_key does not open this lake's logs ({exc})") from exc
    def opened_in_task(request_id: str, blob: bytes | None) -> str | None:
        """Every row, in the tasks: only the first was tried here, and a row written under another
        key (a rotation left half done) was an internal error with a traceback (a hostile review,
        2026-12-07). Now exit 4, naming the row."""
        if blob is None:
            return None
        try:
            return opened(request_id, blob)
        except ValueError as exc:
            raise ValueError(f"{SPARK_TASK_INPUT_ERROR} campaigns: lake.encryption_key does not open the log of "
                             f"request {request_id!r} ({exc}); rows written under another key cannot be read: "
                             "re-write the lake under one key (docs/privacy.md)") from None

    # Through a lambda: PySpark reads a function's type hints as a pandas UDF's, and warns.
    decrypt = F.udf(lambda rid, blob: opened_in_task(rid, blob), StringType())
    return F.coalesce(F.col("log_json"), decrypt("request_id", "log_json_encrypted"))


def _components(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Union-find: text id -> smallest text id of its component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            parent[hi] = lo
    return {x: find(x) for x in parent}


def run(
    spark: SparkSession,
    verdicts: DataFrame,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    min_users: int = DEFAULT_MIN_USERS,
    flagged_only: bool = True,
    num_hash_tables: int = 5,
    policy: LakePolicy | None = None,
) -> DataFrame:
    """Lake verdict rows -> one row per campaign, largest (by users) first.

    ``policy`` carries the lake key for logs the lake keeps encrypted and the pseudonym key that
    keys campaign ids (``LakePolicy.from_settings``; see :func:`campaign_id`).
    """
    from pipeline.spark.backfill import one_per_request

    rows = one_per_request(verdicts).where(F.col("user_id").isNotNull())
    if flagged_only:
        rows = rows.where(F.col("flagged"))
    log = _stored_log(rows, policy)
    rows = rows.withColumn("_log", log).where(F.col("_log").isNotNull())
    extract = F.udf(lambda log, at: campaign_text(log, list(at) if at is not None else None), StringType(), useArrow=True)
    texts = (
        rows.select("request_id", "timestamp", "user_id", "model", "tenant_id", "categories",
                    extract("_log", F.col("findings.location")).alias("prompt"))
        .where(F.col("prompt").isNotNull())
        .withColumn("norm", F.trim(F.regexp_replace(F.lower("prompt"), r"\s+", " ")))
        .withColumn("text_id", F.sha2("norm", 256))
        .cache()
    )
    distinct = texts.groupBy("text_id").agg(F.first("norm").alias("norm"))
    # (?U): Java's \W is ASCII-only without it, so Cyrillic, Greek and accented words vanished:
    # a Russian campaign went unseen while unrelated Russian prompts sharing two ASCII words
    # ("Acme Bank") were one (a hostile review, 2026-12-07). Scripts written without spaces (CJK)
    # are one word per run of text, so only their exact copies group.
    tokens = RegexTokenizer(inputCol="_norm", outputCol="_words", pattern=r"(?U)\W+", minTokenLength=1).transform(
        distinct.withColumn("_norm", F.substring("norm", 1, _MAX_SHINGLE_CHARS))
    )
    shingles = (
        NGram(n=2, inputCol="_words", outputCol="_bigrams")
        .transform(tokens)
        .withColumn("_shingles", F.concat("_words", "_bigrams"))
        .where(F.size("_shingles") > 0)  # MinHash needs at least one non-zero feature
    )
    features = HashingTF(inputCol="_shingles", outputCol="features", numFeatures=1 << 18, binary=True).transform(shingles)
    features = features.select("text_id", "features").cache()
    lsh = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=num_hash_tables, seed=_SEED).fit(features)
    pairs = (
        lsh.approxSimilarityJoin(features, features, max_distance, distCol="distance")
        .select(F.col("datasetA.text_id").alias("a"), F.col("datasetB.text_id").alias("b"))
        .where(F.col("a") < F.col("b"))
    )
    component_of = _components((r["a"], r["b"]) for r in pairs.toLocalIterator())
    features.unpersist()
    mapping = spark.createDataFrame(
        sorted(component_of.items()), StructType([StructField("text_id", StringType()), StructField("component", StringType())])
    )
    members = texts.join(F.broadcast(mapping), "text_id", "left").withColumn(
        "component", F.coalesce("component", "text_id")
    )
    # Representative: the component's most frequent prompt (ties: the smallest text id).
    by_text = members.groupBy("component", "text_id").agg(F.count(F.lit(1)).alias("_n"), F.first("prompt").alias("_prompt"))
    best = (
        by_text.withColumn("_pick", F.row_number().over(Window.partitionBy("component").orderBy(F.desc("_n"), "text_id")))
        .where(F.col("_pick") == 1)
        .select("component", F.udf(representative_excerpt, StringType(), useArrow=True)("_prompt").alias("representative_prompt"))
    )
    campaigns = (
        members.groupBy("component")
        .agg(
            F.count(F.lit(1)).alias("records"),
            # One user of one tenant: "1042" of two tenants are two users (as the offenders job counts them).
            F.countDistinct(F.coalesce("tenant_id", F.lit("")), "user_id").alias("users"),
            F.countDistinct("text_id").alias("distinct_prompts"),
            F.array_sort(F.collect_set("user_id")).alias("user_ids"),
            F.array_sort(F.collect_set("model")).alias("models"),
            F.array_sort(F.collect_set("tenant_id")).alias("tenants"),
            F.array_sort(F.array_distinct(F.flatten(F.collect_list("categories")))).alias("categories"),
            F.min("timestamp").alias("first_seen"),
            F.max("timestamp").alias("last_seen"),
            F.array_sort(F.collect_list("request_id")).alias("request_ids"),
        )
        .where(F.col("users") >= min_users)
        .join(best, "component")
        .withColumn("campaign_id", F.udf(lambda component, key=_id_key(policy): campaign_id(key, component), StringType())(
            "component"))
    )
    return campaigns.select(
        "campaign_id", "records", "users", "distinct_prompts", "representative_prompt", "user_ids", "models",
        "tenants", "categories", "first_seen", "last_seen", "request_ids",
    ).orderBy(F.desc("users"), F.desc("records"), "campaign_id")


def write(result: DataFrame, out: Path | str) -> Path:
    target = Path(out) / "campaigns"
    result.coalesce(1).write.mode("overwrite").parquet(str(target))
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="campaigns", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[*]")
    p.add_argument("--lake", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    add_overwrite_argument(p)
    p.add_argument("--max-distance", type=bounded(float, 0, 1), default=DEFAULT_MAX_DISTANCE, help="Jaccard distance")
    p.add_argument("--min-users", type=bounded(int, 1), default=DEFAULT_MIN_USERS)
    p.add_argument("--all-records", action="store_true", help="include unflagged records")
    p.add_argument("--config", type=Path, default=None, help="settings with the lake key, for an encrypted lake")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.privacy import LakePolicy
    from pipeline.settings import load_settings
    from pipeline.spark.backfill import read_lake_verdicts
    from pipeline.spark.session import SparkOptions, build_session

    args = build_parser().parse_args(argv)
    refuse_overwrite([args.out / "campaigns"], args.overwrite)  # before Spark starts: a mistyped --out costs nothing
    refuse_inside_lake([args.out / "campaigns"], [args.lake])
    spark = build_session(SparkOptions(master=args.master, app_name="misuse-monitor-campaigns"))
    policy = LakePolicy.from_settings(load_settings(args.config))
    verdicts = read_lake_verdicts(spark, args.lake)
    result = run(spark, verdicts, args.max_distance, args.min_users, not args.all_records, policy=policy)
    print(f"campaigns -> {write(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.exits import run_script
    from pipeline.spark import campaigns as _job

    sys.exit(run_script("campaigns", _job.main, sys.argv[1:]))
