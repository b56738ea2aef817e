"""`misuse-monitor` command line. Settings are built here, at the process edge."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.decode import DecodeError, decode_log
from pipeline.schemas import InferenceLog, contract_json_schemas
from pipeline.settings import Settings, load_settings

app = typer.Typer(help="Streaming misuse detection for open-weight model serving logs.", no_args_is_help=True)
schemas_app = typer.Typer(help="The versioned JSON contracts.")
app.add_typer(schemas_app, name="schemas")
console = Console(stderr=True)

CONTRACTS_DIR = Path(__file__).parent / "contracts"
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    settings = load_settings(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        if key:
            setattr(getattr(settings, section), key, value)
        else:
            setattr(settings, section, value)
    return settings


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of inference logs")],
    topic: Annotated[str | None, typer.Option(help="Target topic (default: kafka.input_topic)")] = None,
    rate: Annotated[float | None, typer.Option(help="Records per second (default: as fast as possible)")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay a JSONL file into Kafka, line by line, bytes unchanged (bad lines included)."""
    from pipeline.producer import GatewayProducer

    settings = _settings(config, kafka__bootstrap_servers=bootstrap)
    total = _count_lines(file)
    sent = 0
    started = time.monotonic()
    with GatewayProducer(settings.kafka, topic) as producer, _progress() as progress, file.open("rb") as fh:
        task = progress.add_task(f"producing to {producer.topic}", total=total)
        for line in fh:
            line = line.rstrip(b"\r\n")
            if not line:
                progress.advance(task)
                continue
            producer.send_raw(line, key=_request_id_key(line))
            sent += 1
            progress.advance(task)
            if rate:
                # Pace against the start time so rounding errors do not accumulate.
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if sent % 5000 == 0:
                producer.flush()
    console.print(f"[green]delivered {sent} records to {producer.topic}[/green] in {time.monotonic() - started:.1f}s")


def _request_id_key(line: bytes) -> bytes | None:
    try:
        rid = json.loads(line).get("request_id")
    except (ValueError, AttributeError):
        return None  # malformed lines are replayed as they are, unkeyed
    return str(rid).encode() if rid else None


@app.command()
def stream(
    config: ConfigOpt = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic: Annotated[str | None, typer.Option(help="Input topic")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id")] = None,
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names")] = None,
    lake: Annotated[Path | None, typer.Option(help="Parquet lake root")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 disables)")] = None,
    max_idle: Annotated[float | None, typer.Option(help="Exit after this many idle seconds (demo/backfill)")] = None,
) -> None:
    """Run the streaming job: consume, detect, write verdicts, commit. SIGTERM ends it cleanly."""
    from pipeline.metrics import PipelineMetrics
    from pipeline.runner import Pipeline

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)  # kafka-python's INFO is connection chatter
    settings = _settings(
        config,
        kafka__bootstrap_servers=bootstrap,
        kafka__input_topic=topic,
        kafka__group_id=group,
        detectors__enabled=detectors.split(",") if detectors else None,
        lake__path=lake,
        metrics__port=metrics_port,
    )
    metrics = PipelineMetrics()
    if settings.metrics.port:
        metrics.serve(settings.metrics.host, settings.metrics.port)
    pipeline = Pipeline.from_settings(settings, metrics)
    pipeline.install_signal_handlers()
    console.print(f"streaming {settings.kafka.input_topic} -> sinks {settings.sinks} with detectors {settings.detectors.enabled}")
    stats = pipeline.run(max_idle_s=max_idle)
    print_summary(stats, settings)


def print_summary(stats, settings: Settings) -> None:  # noqa: ANN001 - RunStats, imported lazily
    table = Table(title="misuse-monitor stream summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("records consumed", str(stats.records))
    table.add_row("verdicts written", str(stats.verdicts))
    table.add_row("flagged", f"{stats.flagged} ({stats.flagged / max(stats.verdicts, 1):.1%})")
    for category, n in sorted(stats.by_category.items()):
        table.add_row(f"  category {category}", str(n))
    for severity in ("critical", "high", "medium", "low", "none"):
        if severity in stats.by_severity:
            table.add_row(f"  severity {severity}", str(stats.by_severity[severity]))
    table.add_row("dead letters", str(stats.dead_letters))
    table.add_row("batches", str(stats.batches))
    rate = stats.records / stats.busy_s if stats.busy_s else 0.0
    table.add_row("throughput (records/s of processing)", f"{rate:,.0f}")
    console.print(table)
    where = Table(title="where the verdicts went")
    where.add_column("sink")
    where.add_column("location")
    locations = {
        "verdict_topic": f"Kafka topic {settings.kafka.verdict_topic}",
        "lake": f"Parquet lake {settings.lake.path}/verdicts/date=*/",
        "metrics": f"http://{settings.metrics.host}:{settings.metrics.port}/metrics" if settings.metrics.port else "in-process only",
    }
    for sink in settings.sinks:
        where.add_row(sink, locations.get(sink, "see its settings"))
    where.add_row("dead letters", f"Kafka topic {settings.kafka.dead_letter_topic}")
    console.print(where)


@app.command()
def classify(
    input: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of inference-log/v1")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL of misuse-verdict/v1, one line per input")],
    config: ConfigOpt = None,
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names")] = None,
) -> None:
    """Score a file with the same decode, detectors and thresholds as the stream."""
    from pipeline.scoring import Scorer

    settings = _settings(config, detectors__enabled=detectors.split(",") if detectors else None)
    scorer = Scorer.from_settings(settings)
    total = _count_lines(input)
    counts = {"verdicts": 0, "flagged": 0, "errors": 0}
    try:
        with input.open("rb") as src, output.open("w", encoding="utf-8") as dst, _progress() as progress:
            task = progress.add_task("classifying", total=total)
            for lines in _batched(enumerate(src, start=1), settings.batch.max_records):
                for line_no, result in classify_lines(lines, scorer, settings.batch.max_record_bytes):
                    dst.write(result + "\n")
                    if '"schema":"misuse-error/v1"' in result:
                        counts["errors"] += 1
                    else:
                        counts["verdicts"] += 1
                        counts["flagged"] += '"flagged":true' in result
                progress.advance(task, len(lines))
    finally:
        scorer.close()
    console.print(
        f"[green]{counts['verdicts']} verdicts ({counts['flagged']} flagged), {counts['errors']} invalid lines[/green] -> {output}"
    )


def classify_lines(lines: list[tuple[int, bytes]], scorer, max_bytes: int) -> list[tuple[int, str]]:  # noqa: ANN001
    """Verdict or error JSON for each (line number, bytes), in input order."""
    decoded: dict[int, InferenceLog] = {}
    results: dict[int, str] = {}
    for line_no, raw in lines:
        try:
            decoded[line_no] = decode_log(raw.rstrip(b"\r\n"), max_bytes)
        except DecodeError as exc:
            results[line_no] = json.dumps(
                {"schema": "misuse-error/v1", "line": line_no, "reason": exc.reason.value, "detail": exc.detail},
                separators=(",", ":"),
            )
    verdicts = scorer.score(list(decoded.values())) if decoded else []
    for line_no, verdict in zip(decoded, verdicts, strict=True):
        results[line_no] = verdict.to_json()
    return [(n, results[n]) for n, _ in lines]


def _batched(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Directory for the JSON Schema files")] = CONTRACTS_DIR,
    check: Annotated[bool, typer.Option(help="Fail when the checked-in files are stale")] = False,
) -> None:
    """Write (or --check) the JSON Schema files exported from the pydantic models."""
    stale = []
    for name, schema in contract_json_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        path = out / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        console.print(f"[red]stale contract files: {stale}; run `misuse-monitor schemas export`[/red]")
        raise typer.Exit(1)


def _wire_subcommands() -> None:
    """Commands that live next to the code they drive (each module imports its heavy
    dependencies inside its commands, so `misuse-monitor --help` stays fast)."""
    from dashboards.cli import app as dashboards_app
    from detectors.training import cli as training_cli
    from pipeline.alerts.cli import app as alerts_app
    from pipeline.events_cli import app as events_app
    from pipeline.gateway.cli import gateway_command
    from pipeline.report import report_command
    from pipeline.simulate import simulate_command
    from pipeline.spark.cli import app as spark_app

    app.command("simulate")(simulate_command)
    app.command("train")(training_cli.train)
    app.command("evaluate")(training_cli.evaluate)
    app.add_typer(training_cli.app, name="model")  # model train|evaluate|ship
    app.command("report")(report_command)
    app.command("gateway")(gateway_command)
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(dashboards_app, name="dashboards")
    app.add_typer(events_app, name="events")
    app.add_typer(spark_app, name="spark")


_wire_subcommands()

if __name__ == "__main__":
    app()
