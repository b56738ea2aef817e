"""``misuse-monitor spark <job>``: the batch jobs from the command line.

Each command builds one SparkSession (``--master``, local[*] by default), reads the lake at
``--lake`` (or another source for backfill/shadow), and writes under ``--out``; it refuses
to replace a non-empty output (``<out>`` for backfill, ``<out>/<job>/`` for the others)
unless ``--overwrite`` is given. The same
jobs run under ``spark-submit pipeline/spark/<job>.py`` with the same flags.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pipeline.settings import Settings

app = typer.Typer(help="Spark batch jobs: backfill, aggregates, offenders, campaigns, shadow.", no_args_is_help=True)
console = Console()

MasterOpt = Annotated[str, typer.Option(help="Spark master URL: local[*], local[2], spark://host:7077, yarn...")]
LakeOpt = Annotated[Path | None, typer.Option(help="Lake root holding verdicts/ (default: settings lake.path)")]
OutOpt = Annotated[Path, typer.Option(help="Output root (job results go to <out>/<job>/)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file")]
DriverMemOpt = Annotated[str, typer.Option(help="spark.driver.memory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace what an earlier run wrote there (refused by default when not empty)")
]
ConfOpt = Annotated[
    list[str] | None,
    typer.Option("--conf", help="Extra Spark setting key=value (repeatable), e.g. spark.executor.resource.gpu.amount=1"),
]


def _report(as_json: bool, job: str, outputs: dict[str, Path], line: str, **numbers: int) -> None:
    """One JSON document on stdout (``--json``) or the human line."""
    if as_json:
        print(json.dumps({"job": job, "outputs": {k: str(v) for k, v in outputs.items()}, **numbers}, sort_keys=True))
    else:
        console.print(line)


def _refuse_overwrite(targets: list[Path], overwrite: bool) -> None:
    """Checked before the SparkSession starts, so a refusal takes milliseconds (pipeline/spark/output.py)."""
    from pipeline.spark.output import refuse_overwrite

    refuse_overwrite(targets, overwrite)


def _parsed(parse, value, flag: str):  # noqa: ANN001, ANN202
    """``parse(value)``, its ValueError as a usage error (exit 2) naming ``flag``, not an internal one."""
    try:
        return parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def _conf(conf: list[str] | None) -> dict[str, str]:
    from pipeline.spark.backfill import parse_options

    return _parsed(lambda items: parse_options(items, what="--conf"), conf, "--conf")


def _session(master: str, job: str, driver_memory: str = "1g", kafka: bool = False, conf: list[str] | None = None):  # noqa: ANN202
    from pipeline.spark.session import SparkOptions, build_session

    import logging

    session = build_session(
        SparkOptions(
            master=master, app_name=f"misuse-monitor-{job}", driver_memory=driver_memory, kafka=kafka,
            conf=_conf(conf),
        )
    )
    # Spark's WARN lines (e.g. WindowExec's one per global-window stage) describe normal plans;
    # they follow the CLI's --log-level (warning by default shows Spark's errors only).
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        session.sparkContext.setLogLevel("ERROR")
    return session


def _settings(config: Path | None):  # noqa: ANN202
    from pipeline.settings import load_settings

    return load_settings(config)


def _lake_session(master: str, job: str, driver_memory: str, conf: list[str] | None, settings, lake: Path | None,  # noqa: ANN001, ANN202
                  outs: list[Path]):
    """A session and the lake's verdicts, for the jobs that read them. A bad --conf (usage), a
    lake without verdicts and an --out inside the lake's verdicts (input) all fail before the JVM
    starts, which takes seconds of log lines."""
    from pipeline.spark.backfill import lake_verdicts_dir, read_lake_verdicts
    from pipeline.spark.output import refuse_inside_lake

    _conf(conf)
    refuse_inside_lake(outs, [lake or settings.lake.path])
    path = lake_verdicts_dir(lake or settings.lake.path).parent
    spark = _session(master, job, driver_memory, conf=conf)
    return spark, read_lake_verdicts(spark, path)


@app.command()
def backfill(
    out: OutOpt,
    master: MasterOpt = "local[*]",
    lake: LakeOpt = None,
    jsonl: Annotated[list[Path] | None, typer.Option(help="JSONL archive(s) instead of the lake (repeatable, globs ok)")] = None,
    kafka_topic: Annotated[str | None, typer.Option(help="Kafka topic instead of the lake")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap (default: settings)")] = None,
    starting_offsets: Annotated[str, typer.Option(help='earliest or JSON {"topic":{"0":123}}')] = "earliest",
    ending_offsets: Annotated[str, typer.Option(help='latest or JSON {"topic":{"0":456}} (exclusive)')] = "latest",
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names (default: settings)")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Detector option key=value (repeatable)")] = None,
    min_scores: Annotated[str | None, typer.Option(help="Extra thresholds: category=score,...")] = None,
    max_rows_per_file: Annotated[int, typer.Option(min=1, help="Split lake files above this many rows")] = 100_000,
    isolate_crashes: Annotated[bool, typer.Option(
        "--isolate-crashes",
        help="Score in a child process of each worker: a record that crashes a detector (segfault, "
             "out of memory) or hangs it is a scorer_crashed dead letter instead of the end of the job")] = False,  # fmt: skip
    score_timeout: Annotated[float | None, typer.Option(
        min=1, help="With --isolate-crashes: seconds a batch (or a record alone) may take before its scoring process "
                    "is killed (default stream.score_stall_s, 600)")] = None,  # fmt: skip
    config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score history (lake, JSONL or a Kafka range) with the stream's detectors into a lake at --out."""
    from pipeline.spark import backfill as job

    # Every usage error before the SparkSession starts (and before --out is looked at).
    problem = job.check_one_source(lake, jsonl, kafka_topic)
    if problem:
        raise typer.BadParameter(problem, param_hint="--lake/--jsonl/--kafka-topic")
    thresholds = _parsed(job.parse_min_scores, min_scores, "--min-scores")
    options = _parsed(job.parse_options, option, "--option")
    if score_timeout is not None and not isolate_crashes:
        raise typer.BadParameter("only with --isolate-crashes: it bounds the scoring process", param_hint="--score-timeout")
    _conf(conf)
    _refuse_overwrite([out], overwrite)
    settings = _settings(config)
    job.refuse_out_onto_source(out, settings, lake, jsonl or [], kafka_topic)
    from pipeline.cli import detector_names, warn_placeholder_key

    warn_placeholder_key(settings, "the backfilled lake's verdicts, logs and text hashes")
    spec = job.ScoringSpec.from_settings(
        settings, detectors=detector_names(detectors), min_scores=thresholds, options=options,
        isolate_crashes=isolate_crashes, score_timeout_s=score_timeout,
    )
    spark = _session(master, "backfill", driver_memory, kafka=bool(kafka_topic), conf=conf)
    raw = job.read_source(
        spark,
        settings,
        lake=lake,
        jsonl=[str(p) for p in jsonl or []],
        kafka_topic=kafka_topic,
        bootstrap=bootstrap,
        starting_offsets=starting_offsets,
        ending_offsets=ending_offsets,
        out=out,
    )
    result = job.backfill_to_lake(spark, raw, spec, out, max_rows_per_file)
    _report(
        as_json, "backfill", {"lake": out},
        f"[green]{result.verdicts} verdicts ({result.flagged} flagged), {result.dead_letters} dead letters, "
        f"{len(result.files)} files[/green] -> {out}",
        verdicts=result.verdicts, flagged=result.flagged, dead_letters=result.dead_letters, files=len(result.files),
    )


@app.command()
def aggregates(
    out: OutOpt, master: MasterOpt = "local[*]", lake: LakeOpt = None, config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Daily volume, flagged share, severity mix and complied share per tenant/deployment/model/category."""
    _refuse_overwrite([out / "aggregates"], overwrite)
    from pipeline.spark import aggregates as job

    spark, verdicts = _lake_session(master, "aggregates", driver_memory, conf, _settings(config), lake, [out])
    target = job.write(job.run(spark, verdicts), out)
    _report(as_json, "aggregates", {"aggregates": target}, f"[green]aggregates[/green] -> {target}")


@app.command()
def offenders(
    out: OutOpt,
    master: MasterOpt = "local[*]",
    lake: LakeOpt = None,
    half_life_days: Annotated[float, typer.Option(min=0.001, help="Risk halves every this many days")] = 7.0,
    as_of: Annotated[datetime | None, typer.Option(help="Decay reference time, UTC unless it has an offset (default: newest verdict, or now if that is later)")] = None,
    top: Annotated[int, typer.Option(min=1, help="Keep this many users")] = 100,
    config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Users ranked by decayed risk, with the categories and models they touched."""
    _refuse_overwrite([out / "offenders"], overwrite)
    from pipeline.spark import offenders as job

    spark, verdicts = _lake_session(master, "offenders", driver_memory, conf, _settings(config), lake, [out])
    result = job.run(spark, verdicts, half_life_days, as_of, top)
    target = job.write(result, out)
    _report(as_json, "offenders", {"offenders": target}, f"[green]offenders[/green] -> {target}")


@app.command()
def campaigns(
    out: OutOpt,
    master: MasterOpt = "local[*]",
    lake: LakeOpt = None,
    max_distance: Annotated[float, typer.Option(min=0, max=1, help="Max Jaccard distance of near-duplicate prompts")] = 0.6,
    min_users: Annotated[int, typer.Option(min=1, help="Distinct users needed to call it a campaign")] = 3,
    all_records: Annotated[bool, typer.Option(help="Include unflagged records")] = False,
    config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Near-duplicate prompts across users (MinHash LSH) grouped into campaigns."""
    _refuse_overwrite([out / "campaigns"], overwrite)
    from pipeline.spark import campaigns as job

    from pipeline.privacy import LakePolicy

    settings = _settings(config)
    _warn_placeholder_campaign_key(settings)
    spark, verdicts = _lake_session(master, "campaigns", driver_memory, conf, settings, lake, [out])
    policy = LakePolicy.from_settings(settings)
    result = job.run(spark, verdicts, max_distance, min_users, not all_records, policy=policy)
    target = job.write(result, out)
    _report(as_json, "campaigns", {"campaigns": target}, f"[green]campaigns[/green] -> {target}")


@app.command()
def shadow(
    out: OutOpt,
    master: MasterOpt = "local[*]",
    lake: LakeOpt = None,
    jsonl: Annotated[list[Path] | None, typer.Option(help="Source history as JSONL instead of the lake")] = None,
    a_lake: Annotated[Path | None, typer.Option(help="Verdict lake of A (else A is scored here)")] = None,
    b_lake: Annotated[Path | None, typer.Option(help="Verdict lake of B (else B is scored here)")] = None,
    a_detectors: Annotated[str | None, typer.Option()] = None,
    b_detectors: Annotated[str | None, typer.Option()] = None,
    a_option: Annotated[list[str] | None, typer.Option()] = None,
    b_option: Annotated[list[str] | None, typer.Option()] = None,
    a_min_scores: Annotated[str | None, typer.Option(help="category=score,...")] = None,
    b_min_scores: Annotated[str | None, typer.Option(help="category=score,...")] = None,
    labels: Annotated[Path | None, typer.Option(help="Reviewed labels: JSONL/Parquet with request_id, misuse[, categories]")] = None,
    config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare two detector versions or threshold sets: verdict diff, precision/recall on labels."""
    from pipeline.spark import backfill as backfill_job
    from pipeline.spark import shadow as job

    for flag, scores in (("--a-min-scores", a_min_scores), ("--b-min-scores", b_min_scores)):
        _parsed(backfill_job.parse_min_scores, scores, flag)  # usage errors before Spark starts
    for flag, items in (("--a-option", a_option), ("--b-option", b_option)):
        _parsed(backfill_job.parse_options, items, flag)
    _refuse_overwrite([out / "shadow"], overwrite)

    argv = ["--master", master, "--out", str(out), *(["--json"] if as_json else []), *(["--overwrite"] if overwrite else [])]
    pairs = {
        "--config": config, "--lake": lake, "--a-lake": a_lake, "--b-lake": b_lake,
        "--a-detectors": a_detectors, "--b-detectors": b_detectors,
        "--a-min-scores": a_min_scores, "--b-min-scores": b_min_scores, "--labels": labels,
    }
    for flag, value in pairs.items():
        if value is not None:
            argv += [flag, str(value)]
    for flag, values in (("--a-option", a_option), ("--b-option", b_option)):
        for value in values or []:
            argv += [flag, value]
    if jsonl:
        argv += ["--jsonl", *map(str, jsonl)]
    _session(master, "shadow", driver_memory, conf=conf)  # driver memory applies only before the JVM starts
    job.main(argv)


def _warn_placeholder_campaign_key(settings: Settings) -> None:
    """Campaign ids are a hash keyed with pseudonym_key (campaigns.campaign_id): with the shipped
    placeholder anyone can hash a guessed prompt and match it (a review, 2026-12-06)."""
    from pipeline.cli import warn_placeholder_key

    warn_placeholder_key(settings, "campaign ids", "are keyed with the shipped placeholder pseudonym_key; anyone can "
                                                   "confirm a guessed prompt against them")


@app.command(name="all")
def all_jobs(
    out: OutOpt,
    master: MasterOpt = "local[*]",
    lake: LakeOpt = None,
    campaigns_all_records: Annotated[bool, typer.Option(help="Campaigns: include unflagged records")] = False,
    config: ConfigOpt = None,
    driver_memory: DriverMemOpt = "1g",
    conf: ConfOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """aggregates + offenders + campaigns over one lake, in one session (input for `report`)."""
    _refuse_overwrite([out / "aggregates", out / "offenders", out / "campaigns"], overwrite)
    from pipeline.spark import aggregates as agg_job
    from pipeline.spark import campaigns as camp_job
    from pipeline.spark import offenders as off_job

    from pipeline.privacy import LakePolicy

    settings = _settings(config)
    _warn_placeholder_campaign_key(settings)
    spark, verdicts = _lake_session(master, "all", driver_memory, conf, settings, lake, [out])
    verdicts = verdicts.cache()
    policy = LakePolicy.from_settings(settings)
    written = {}
    for name, job, result in (
        ("aggregates", agg_job, agg_job.run(spark, verdicts)),
        ("offenders", off_job, off_job.run(spark, verdicts)),
        ("campaigns", camp_job, camp_job.run(spark, verdicts, flagged_only=not campaigns_all_records, policy=policy)),
    ):
        written[name] = job.write(result, out)
        if not as_json:
            console.print(f"[green]{name}[/green] -> {written[name]}")
    if as_json:
        _report(True, "all", written, "")
