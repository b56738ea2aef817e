"""`misuse-monitor` command line. Settings are built here, at the process edge."""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.decode import DecodeError, decode_log, key_fields_of, too_large
from pipeline.schemas import InferenceLog, contract_json_schemas
from pipeline.settings import Settings, load_settings
from pipeline.stdio import LongLine, count_lines, is_dash, open_input, open_output, output_path_or_dash, output_path_problem, path_or_dash, same_file

app = typer.Typer(
    help="Streaming misuse detection for open-weight model serving logs.", no_args_is_help=True,
    pretty_exceptions_enable=False,  # main() prints one line (or the plain traceback with --debug)
)
schemas_app = typer.Typer(help="The versioned JSON contracts.")
app.add_typer(schemas_app, name="schemas")
# soft_wrap: a line on a non-terminal was wrapped at 80 columns, splitting the paths and commands
# it names (a newcomer review, 2026-12-07); one message is one line, as README promises.
console = Console(stderr=True, soft_wrap=True)

CONTRACTS_DIR = Path(__file__).parent / "contracts"
MIN_PRODUCE_RATE = 0.001  # records per second: `produce --rate`, one per 1000 s at the slowest
GLOBAL_OPTIONS = ("--debug", "--log-level", "--log-format")  # the app's own options (_global_options), before any command
LOG_LEVELS = ("debug", "info", "warning", "error")
def _env_flag(name: str) -> bool:
    """An on/off variable: unset, empty, 0, false, no and off are off (MM_DEBUG=0 turned tracebacks on)."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


# Set by the app callback; read by main() when a command fails.
_state = {"debug": _env_flag("MM_DEBUG")}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"misuse-monitor {version('misuse-monitor')}")
        except PackageNotFoundError:
            typer.echo("misuse-monitor (not installed: running from a source tree)")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", help=f"Log level: {', '.join(LOG_LEVELS)}", case_sensitive=False)
    ] = "warning",
    log_format: Annotated[str, typer.Option("--log-format", help="Log lines as text or json (one object per line)")] = "text",
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when a command fails")] = False,
) -> None:
    """Streaming misuse detection for open-weight model serving logs.

    Errors are one line on stderr with a distinct exit code (README.md, "Exit codes").
    """
    del version
    from pipeline.exits import unknown_env_vars
    from pipeline.logs import configure_logging

    _state["debug"] = _state["debug"] or debug
    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    if log_format not in ("text", "json"):
        raise typer.BadParameter(f"{log_format!r} is not text or json", param_hint="--log-format")
    configure_logging(log_level.lower(), log_format)
    # A misspelt secret is warned of here too: commands that load the settings then refuse it
    # (pipeline/settings.py, load_settings), the others (lake keygen, simulate) only warn.
    for problem in unknown_env_vars():
        typer.echo(f"misuse-monitor: warning: {problem}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn a failure into one stderr line and an exit code.

    Typer's own ``app()`` prints a rich traceback (100+ lines) for any exception; a user who
    mistyped a broker address needs the cause and a status a script can test (pipeline/exits.py).
    """
    import sys
    import traceback

    # typer 0.29 vendors click; its exceptions are these (typer is pinned in pyproject.toml).
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption
    from typer._click.utils import PacifyFlushWrapper
    from typer.exceptions import Abort

    from pipeline.exits import ExitCode, classify_exception, remember_interrupts

    _state["debug"] = _env_flag("MM_DEBUG")  # the callback sets it from --debug
    restore = remember_interrupts()
    try:
        result = app(args=argv, prog_name="misuse-monitor", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        return ExitCode.USAGE
    except ClickException as exc:
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "misuse-monitor"
        hint = ""
        parent = exc.ctx.parent if isinstance(exc, NoSuchOption) and getattr(exc, "ctx", None) else None
        if isinstance(exc, NoSuchOption) and exc.option_name in GLOBAL_OPTIONS and command != "misuse-monitor":
            # A newcomer review (2026-12-07): `simulate ... --debug` said only "No such option".
            hint = f"; {exc.option_name} is a global option: put it before the command (misuse-monitor {exc.option_name} ...)"
        elif parent is not None and parent.parent is not None and any(exc.option_name in p.opts for p in parent.command.params):
            # `alerts test --config x` (hostile review, 2026-12-07): the group's option goes before its command.
            hint = f"; {exc.option_name} is an option of '{parent.command_path}': put it before '{exc.ctx.info_name}'"
        print(f"{command}: error: {exc.format_message()}{hint} (see '{command} --help')", file=sys.stderr)
        return exc.exit_code
    except (Abort, KeyboardInterrupt):
        print("misuse-monitor: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except SystemExit as exc:
        # typer turns EPIPE on stdout (`simulate -o - | head`) into a silent sys.exit(1), the code
        # of a bug; it marks that case by wrapping stdout in click's PacifyFlushWrapper.
        if exc.code == 1 and isinstance(sys.stdout, PacifyFlushWrapper):
            return ExitCode.PIPE_CLOSED
        raise
    except Exception as exc:  # noqa: BLE001 - every failure leaves as one line and a code
        code, line = classify_exception(exc)
        if _state["debug"]:
            traceback.print_exc()
        print(f"misuse-monitor: error: {line}", file=sys.stderr)
        return code
    finally:
        restore()
    if result == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into Exit(130), which returns it here
        print("misuse-monitor: interrupted", file=sys.stderr)
    return result if isinstance(result, int) else ExitCode.OK


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    """The settings with the command line's overrides (``section__key=value``), each validated as
    the settings file's value would be (``--metrics-port 70000`` used to fail later, deep in
    the HTTP server, as an internal error)."""
    from pydantic import ValidationError

    settings = load_settings(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        target, name = (getattr(settings, section), key) if key else (settings, section)
        try:
            target.__pydantic_validator__.validate_assignment(target, name, value)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            raise typer.BadParameter(f"{dotted.replace('__', '.')} = {value!r}: {problem}") from None
    return settings


class _Progress(Progress):
    """A progress bar whose every step is a place to stop at Ctrl-C, even one Python lost."""

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        from pipeline.exits import raise_if_interrupted

        raise_if_interrupted()
        super().advance(task_id, advance)


def _progress() -> Progress:
    return _Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


def not_jsonl_hint(first_line: bytes | None) -> str | None:
    """What to do when the input is JSON but not JSONL, from its first line: a pretty-printed
    document or a JSON array made every line an error with a parser message that did not say so."""
    raw = first_line or b""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark (Windows "Unicode" exports)
        return "the input is UTF-16 text, not UTF-8; convert it with: iconv -f UTF-16 -t UTF-8 FILE"
    head = raw.strip().removeprefix(b"\xef\xbb\xbf")
    if head == b"{":
        return "the input looks like pretty-printed JSON, not JSONL (one object per line); convert it with: jq -c . FILE"
    if head.startswith(b"["):
        return "the input looks like a JSON array, not JSONL (one object per line); convert it with: jq -c '.[]' FILE"
    return None


def _existing_or_dash(path: Path) -> Path:
    """'-' (stdin), an existing file, or a pipe (`/dev/stdin`, `<(zcat f)`): anything readable
    but a directory (typer's own exists check has no '-' exception here)."""
    if not is_dash(path) and (not path.exists() or path.is_dir()):
        raise typer.BadParameter(f"file '{path}' does not exist or is not a file")
    return path


@app.command()
def produce(
    file: Annotated[
        Path, typer.Argument(parser=path_or_dash, callback=lambda p: _existing_or_dash(p), help="JSONL of inference logs ('-': stdin)")
    ],
    topic: Annotated[str | None, typer.Option(help="Target topic (default: kafka.input_topic)")] = None,
    rate: Annotated[float | None, typer.Option(min=0, help="Records per second, from 0.001 (default or 0: as fast as possible)")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    create_topic: Annotated[bool, typer.Option("--create-topic", help="Create the topic if it does not exist")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout")] = False,
    from_line: Annotated[int, typer.Option(min=1, help="Start at this line (a replay the broker stopped says where)")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Replay a JSONL file (gzip read decompressed) into Kafka, line by line, bytes unchanged (bad lines included).

    Every non-empty line is sent, whatever it holds: the key is the one the gateway would give it
    (a hash of tenant and user, else the request id: pipeline.producer.record_key) when the hardened
    decoder's bounded parse can read it (pipeline/decode.py), else none, so a hostile line
    (100,000-deep JSON, invalid UTF-8) is replayed unkeyed instead of stopping the replay.
    A line the broker refuses outright (over the producer's max request size) is reported by
    line number and skipped, and the command then exits 4 (input). When the broker goes away or
    hangs mid-replay, the error (exit 5) names the last line known delivered and the
    ``--from-line`` that resumes after it.
    """
    from kafka.errors import KafkaError

    from pipeline.preflight import require_kafka
    from pipeline.producer import DeliveryError, GatewayProducer
    from pipeline.topics import topic_name_problem

    if topic is not None and (problem := topic_name_problem(topic)):
        raise typer.BadParameter(problem, param_hint="--topic")
    # 1e-10 paced the second record 317 years out, 1e-300 was an internal error (OverflowError in
    # the sleep), inf or nan paced nothing: one record per 1000 s is the slowest (hostile review).
    if rate and not (math.isfinite(rate) and rate >= MIN_PRODUCE_RATE):
        raise typer.BadParameter(f"{rate:g} is not a rate: 0 (as fast as possible) or from {MIN_PRODUCE_RATE:g} "
                                 "records per second", param_hint="--rate")  # fmt: skip
    settings = _settings(config, kafka__bootstrap_servers=bootstrap)
    require_kafka(settings.kafka)  # seconds, not kafka-python's retries, for a wrong address
    _require_topic(settings, topic or settings.kafka.input_topic, create_topic)
    total = count_lines(file)
    sent = 0
    started = time.monotonic()
    refused: list[str] = []
    delivered_to = from_line - 1  # every line up to this one is delivered (or was skipped)
    try:
        limit = settings.kafka.max_request_size
        with (
            GatewayProducer(settings.kafka, topic) as producer,
            _progress() as progress,
            open_input(file, max_line_bytes=limit) as fh,
        ):
            task = progress.add_task(f"producing to {producer.topic}", total=total)
            for line_no, line in enumerate(fh, start=1):
                if isinstance(line, LongLine):  # no producer could send it: refused, never held whole
                    if line_no >= from_line:
                        refused.append(f"line {line_no}: {line.size} bytes, over kafka.max_request_size ({limit})")
                    progress.advance(task)
                    continue
                line = line.rstrip(b"\r\n")
                if line_no == 1 and (hint := not_jsonl_hint(line)):  # a warning only: every line is still sent
                    console.print(f"[yellow]warning: {hint}[/yellow]")
                if not line or line_no < from_line:  # no record on an empty line (a blank separator or the file's end)
                    progress.advance(task)
                    continue
                producer.send_raw(line, key=_request_id_key(line), label=f"line {line_no}")
                sent += 1
                progress.advance(task)
                if rate:
                    # Pace against the start time so rounding errors do not accumulate.
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if sent % 5000 == 0:
                    sent -= _flush_refusing_records(producer, refused)
                    delivered_to = line_no
            sent -= _flush_refusing_records(producer, refused)
    except (KafkaError, DeliveryError) as exc:
        from pipeline.exits import ExitCode, UserError, classify_exception

        raise UserError(
            f"{classify_exception(exc)[1]}; lines up to {delivered_to} are delivered, later ones may not be: resume with "
            f"--from-line {delivered_to + 1} (lines after it that did arrive are then sent twice)",
            ExitCode.KAFKA_UNREACHABLE,
        ) from exc
    elapsed = time.monotonic() - started
    if as_json:
        print(json.dumps({"topic": producer.topic, "delivered": sent, "refused": refused, "seconds": round(elapsed, 3)},
                         sort_keys=True))
    else:
        console.print(f"[green]delivered {sent} records to {producer.topic}[/green] in {elapsed:.1f}s")
    if refused:
        from pipeline.exits import ExitCode

        for problem in refused[:20]:
            console.print(f"[red]not sent: {escape(problem)}[/red]")
        console.print(f"[red]{len(refused)} line(s) refused by the producer[/red]")
        raise typer.Exit(ExitCode.INPUT)


def _flush_refusing_records(producer, refused: list[str]) -> int:  # noqa: ANN001 - GatewayProducer
    """Flush; record-level failures (too large: retrying cannot help) go to ``refused`` by line,
    and their count is returned; any other failure (the broker gone) ends the command.
    kafka-python reports an oversized record through its future, at flush, not from send()."""
    from pipeline.producer import DeliveryError, record_level

    try:
        producer.flush()
    except DeliveryError as exc:
        own = [(label, err) for label, err in exc.failures if record_level(err)]
        if len(own) < len(exc.failures):
            raise
        refused.extend(f"{label}: {type(err).__name__}" for label, err in own)
        producer.forget_failed()
        return len(own)
    return 0


def detector_names(csv: str | None) -> list[str] | None:
    """``--detectors`` as names (:func:`pipeline.plugins.parse_names`); naming none is a usage error."""
    from pipeline.plugins import parse_names

    try:
        return parse_names(csv)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--detectors") from None


def _require_topic(settings: Settings, topic: str, create: bool) -> None:
    """Refuse a topic that does not exist (a typo would otherwise auto-create it), or create it."""
    from pipeline.topics import TopicMissing, require_topic

    try:
        if require_topic(settings.kafka, topic, create=create):
            console.print(f"created topic {topic}")
    except TopicMissing as exc:
        raise typer.BadParameter(str(exc), param_hint="--topic") from exc


def _request_id_key(line: bytes) -> bytes | None:
    """The record key the gateway would give the line (tenant and user, else the request id:
    pipeline.producer.record_key); bounded parse, never raises; None leaves a bad line unkeyed."""
    from pipeline.producer import record_key

    tenant, user, rid = key_fields_of(line)
    try:
        return record_key(tenant, user, rid or "")
    except UnicodeEncodeError:  # a lone surrogate in an id: the line is dead-lettered anyway
        return None


@app.command()
def stream(
    config: ConfigOpt = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic: Annotated[str | None, typer.Option(help="Input topic")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id")] = None,
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names")] = None,
    lake: Annotated[Path | None, typer.Option(help="Parquet lake root")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 disables)")] = None,
    max_idle: Annotated[float | None, typer.Option(
        min=0, help="Exit after this many seconds without records, once the broker confirms every partition was read"
        " to its end (demo/backfill)")] = None,
    create_topic: Annotated[
        bool, typer.Option("--create-topic", help="Create the input topic if it does not exist")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the end-of-run summary as JSON on stdout")] = False,
    dev: Annotated[
        bool, typer.Option("--dev", help="Local demo: accept the shipped placeholder pseudonym_key (with a warning)")
    ] = False,
) -> None:
    """Run the streaming job: consume, detect, write verdicts, commit. SIGTERM ends it cleanly.

    Refuses to start with the shipped placeholder ``pseudonym_key`` unless ``--dev`` is given
    (docs/privacy.md: why refuse rather than generate a key)."""
    # A SIGTERM while the stream starts (an orchestrator stopping a starting pod) is a graceful
    # stop too: remembered here, honoured before the first poll, so the stream exits 0 and leaves
    # the group cleanly instead of dying of the default handler. Ctrl-C still aborts at once.
    term_during_start = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: term_during_start.set())
    from pipeline.exits import bind_error
    from pipeline.metrics import PipelineMetrics
    from pipeline.preflight import require_kafka, require_postgres, require_writable
    from pipeline.runner import Pipeline
    from pipeline.scoring_journal import journal_dir

    settings = _settings(
        config,
        kafka__bootstrap_servers=bootstrap,
        kafka__input_topic=topic,
        kafka__group_id=group,
        detectors__enabled=detector_names(detectors),
        lake__path=lake,
        metrics__port=metrics_port,
    )
    # The journal is needed whatever stream.scoring says; the lake where it is a sink.
    require_writable(journal_dir(settings), "stream.journal_dir", "MM_STREAM__JOURNAL_DIR")
    if "lake" in settings.sinks:
        require_writable(settings.lake.path, "lake.path", "MM_LAKE__PATH (or --lake)")
    # Fail in seconds on a wrong address, before the models load (pipeline/preflight.py).
    require_kafka(settings.kafka)
    _require_topic(settings, settings.kafka.input_topic, create_topic)
    if "postgres" in settings.sinks:
        require_postgres(settings.postgres.url.get_secret_value(), settings.postgres.connect_timeout_s)
    _require_pseudonym_key(settings, dev)
    metrics = PipelineMetrics.from_settings(settings.metrics)
    if settings.metrics.port:
        try:
            metrics.serve(settings.metrics.host, settings.metrics.port)
        except OSError as exc:
            raise bind_error(exc, settings.metrics.host, settings.metrics.port,
                             "set another with --metrics-port or MM_METRICS__PORT (0 turns /metrics off)") from exc
    console.print(
        f"streaming {settings.kafka.input_topic} -> sinks {settings.sinks} with detectors {settings.detectors.enabled}",
        soft_wrap=True,
    )
    with console.status("loading detectors") as status:
        pipeline = Pipeline.from_settings(settings, metrics)
        pipeline.install_signal_handlers()
        if term_during_start.is_set():
            pipeline.stop()
        status.update(f"waiting for records on {settings.kafka.input_topic}")
        stats = pipeline.run(max_idle_s=max_idle, on_batch=lambda st: status.update(progress_line(st)))
    if as_json:
        typer.echo(json.dumps(summary_dict(stats, settings), sort_keys=True))
    else:
        print_summary(stats, settings)


def _require_pseudonym_key(settings: Settings, dev: bool) -> None:
    from pipeline.exits import ConfigError
    from pipeline.privacy import DEFAULT_PSEUDONYM_KEY, PrivacyKeyError, check_pseudonym_key

    key = settings.pseudonym_key.get_secret_value()
    try:
        check_pseudonym_key(key, dev=dev)
    except PrivacyKeyError as exc:
        raise ConfigError(str(exc)) from exc
    if dev and key == DEFAULT_PSEUDONYM_KEY:
        typer.echo("misuse-monitor: warning: --dev: pseudonyms use the shipped placeholder key; anyone can reverse them", err=True)


def warn_placeholder_key(
    settings: Settings, what: str,
    consequence: str = "pseudonymise user ids with the shipped placeholder key; anyone can reverse them",
) -> None:
    """One warning line on stderr when ``pseudonym_key`` is the shipped placeholder: the
    pseudonyms ``what`` writes can then be reversed by anyone who can guess user ids (or, as
    ``consequence`` says, another keyed hash can be matched). ``stream`` refuses such a key
    (``--dev`` aside); offline tools warn, so a first try on a file works."""
    from pipeline.privacy import DEFAULT_PSEUDONYM_KEY

    if settings.pseudonym_key.get_secret_value() == DEFAULT_PSEUDONYM_KEY:
        typer.echo(f"misuse-monitor: warning: {what} {consequence} (set MM_PSEUDONYM_KEY, see docs/privacy.md)", err=True)


def progress_line(stats) -> str:  # noqa: ANN001 - RunStats, imported lazily
    """The live line under a running stream: records, flagged, dead letters, rate since the first batch."""
    elapsed = time.perf_counter() - stats.first_batch_at if stats.first_batch_at else 0.0
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    return (
        f"{stats.records:,} records  {stats.flagged:,} flagged  {stats.dead_letters:,} dead letters  "
        f"{rate:,.1f} records/s"
    )


def summary_dict(stats, settings: Settings) -> dict:  # noqa: ANN001 - RunStats, imported lazily
    """The numbers of the summary tables (``stream --json``)."""
    return {
        "records": stats.records, "verdicts": stats.verdicts, "flagged": stats.flagged,
        "dead_letters": stats.dead_letters, "batches": stats.batches,
        "by_category": dict(sorted(stats.by_category.items())), "by_severity": dict(sorted(stats.by_severity.items())),
        "records_per_s": round(stats.records / stats.busy_s, 1) if stats.busy_s else 0.0,
        "verdict_topic": settings.kafka.verdict_topic, "dead_letter_topic": settings.kafka.dead_letter_topic,
        "lake": str(settings.lake.path) if "lake" in settings.sinks else None,
    }


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
        where.add_row(sink, escape(locations.get(sink, "see its settings")))
    where.add_row("dead letters", escape(f"Kafka topic {settings.kafka.dead_letter_topic}"))
    console.print(where)


@app.command()
def classify(
    input: Annotated[
        Path, typer.Argument(parser=path_or_dash, callback=lambda p: _existing_or_dash(p), help="JSONL of inference-log/v1 ('-': stdin)")
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", parser=output_path_or_dash, help="JSONL out, one line per input line ('-': stdout)"),
    ],
    config: ConfigOpt = None,
    detectors: Annotated[str | None, typer.Option(help="Comma-separated detector names")] = None,
    allow_errors: Annotated[
        bool, typer.Option("--allow-errors", help="Exit 0 even when some lines could not be decoded or scored")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout")] = False,
) -> None:
    """Score a file with the same decode, detectors and thresholds as the stream.

    Writes exactly one line per input line, in input order: a misuse-verdict/v1, or a
    misuse-error/v1 ``{"schema", "line", "reason", "detail"}`` (plus ``request_id`` when the line
    decoded) for a line that could not be decoded (the dead-letter reasons of the stream) or
    that a detector failed on (``detector_error``). Progress and the summary go to stderr, so
    ``-o -`` is a clean stream. Exits 7 when any line errored, unless ``--allow-errors``.
    """
    from pipeline.exits import ExitCode
    from pipeline.scoring import Scorer

    if as_json and is_dash(output):
        raise typer.BadParameter("--json prints to stdout, which -o - already uses", param_hint="--json")
    if same_file(input, output):
        raise typer.BadParameter(f"'{output}' is the input file: writing it would empty it before it is read",
                                 param_hint="--output")
    if problem := output_path_problem(output, creates_folders=False):  # before the models load
        raise typer.BadParameter(problem, param_hint="--output")
    settings = _settings(config, detectors__enabled=detector_names(detectors))
    warn_placeholder_key(settings, "the verdicts")
    scorer = Scorer.from_settings(settings)
    total = count_lines(input)
    counts = {"verdicts": 0, "flagged": 0, "errors": 0}
    first_line: bytes | None = None
    try:
        with (
            open_input(input, max_line_bytes=settings.batch.max_record_bytes) as src,
            open_output(output) as dst,
            _progress() as progress,
        ):
            task = progress.add_task("classifying", total=total)
            for lines in _batched(enumerate(src, start=1), settings.batch.max_records):
                if first_line is None and not isinstance(lines[0][1], LongLine):
                    first_line = lines[0][1]
                for _, result in classify_lines(lines, scorer, settings.batch.max_record_bytes):
                    dst.write(result + "\n")
                    if result.startswith(_ERROR_PREFIX):
                        counts["errors"] += 1
                    else:
                        counts["verdicts"] += 1
                        counts["flagged"] += '"flagged":true' in result
                dst.flush()  # a reader of -o - sees each batch as it is done
                progress.advance(task, len(lines))
    finally:
        scorer.close()
    where = "stdout" if is_dash(output) else output
    if as_json:
        print(json.dumps({**counts, "output": str(where)}, sort_keys=True))
    else:
        console.print(
            f"[green]{counts['verdicts']} verdicts ({counts['flagged']} flagged), {counts['errors']} error lines[/green] -> {where}"
        )
    if counts["errors"] and not allow_errors:
        console.print(f"[red]{counts['errors']} line(s) could not be classified (see their misuse-error/v1 lines); "
                      "--allow-errors accepts that[/red]")
        if hint := not_jsonl_hint(first_line):
            console.print(f"[yellow]hint: {hint}[/yellow]")
        raise typer.Exit(ExitCode.INVALID_RECORDS)


class ClassifyError(BaseModel):
    """One misuse-error/v1 line of ``classify``: why input line ``line`` has no verdict."""

    model_config = ConfigDict(frozen=True)

    schema_: Literal["misuse-error/v1"] = Field(default="misuse-error/v1", alias="schema")
    line: int = Field(ge=1, description="1-based input line number")
    reason: str = Field(description="Bounded label: a decode reason, detector_error or verdict_error")
    detail: str = Field(description="What was wrong, naming the field")
    request_id: str | None = Field(default=None, description="Set when the line decoded but could not be scored")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


_ERROR_PREFIX = '{"schema":"misuse-error/v1"'


def classify_lines(lines: list[tuple[int, bytes | LongLine]], scorer, max_bytes: int) -> list[tuple[int, str]]:  # noqa: ANN001
    """Verdict or misuse-error/v1 JSON for each (line number, bytes): one each, in input order.

    Decode raises only DecodeError, and ``Scorer.score_each`` isolates a detector failure to its
    record, so one poison line costs its own line and nothing else. A detector that fails on a
    known-good record too (``DetectorFailure``) is not the input's fault and is raised.
    """
    from pipeline.scoring import RecordError

    decoded: list[tuple[int, InferenceLog]] = []
    results: dict[int, str] = {}
    for line_no, raw in lines:
        try:
            if isinstance(raw, LongLine):  # read in pieces and dropped (pipeline/stdio.py)
                raise too_large(raw.size, max_bytes)
            decoded.append((line_no, decode_log(raw.rstrip(b"\r\n"), max_bytes)))
        except DecodeError as exc:
            results[line_no] = ClassifyError(line=line_no, reason=exc.reason.value, detail=exc.detail).to_json()
    outcomes = scorer.score_each([log for _, log in decoded]) if decoded else []
    for (line_no, log), outcome in zip(decoded, outcomes, strict=True):
        if isinstance(outcome, RecordError):
            error = ClassifyError(line=line_no, reason=outcome.reason, detail=outcome.detail, request_id=log.request_id)
            results[line_no] = error.to_json()
            continue
        try:
            results[line_no] = outcome.to_json()
        except ValueError as exc:  # pydantic serialisation of a verdict this record made invalid
            error = ClassifyError(line=line_no, reason="verdict_error", detail=repr(exc)[:500], request_id=log.request_id)
            results[line_no] = error.to_json()
    return [(line_no, results[line_no]) for line_no, _ in lines]


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
    from pipeline.exits import ExitCode

    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"'{out}' is a file; --out takes a directory", param_hint="--out")
    stale, missing = [], []
    for name, schema in contract_json_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        path = out / name
        if check:
            if not path.exists():
                missing.append(name)
            elif path.read_text() != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale or missing:
        found = "; ".join(
            f"{what} contract files in {out}: {', '.join(names)}" for what, names in (("stale", stale), ("missing", missing)) if names
        )
        again = "" if out == CONTRACTS_DIR else f" --out {shlex.quote(str(out))}"
        console.print(f"[red]{found}; run `misuse-monitor schemas export{again}`[/red]", soft_wrap=True)
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _wire_subcommands() -> None:
    """Commands that live next to the code they drive (each module imports its heavy
    dependencies inside its commands, so `misuse-monitor --help` stays fast)."""
    from dashboards.cli import app as dashboards_app
    from detectors.training import cli as training_cli
    from pipeline.alerts.cli import app as alerts_app
    from pipeline.events_cli import app as events_app
    from pipeline.gateway.cli import gateway_command
    from pipeline.lag_exporter import lag_exporter
    from pipeline.privacy_cli import lake_app, pseudonym_app
    from pipeline.report import report_command
    from pipeline.simulate import simulate_command
    from pipeline.spark.cli import app as spark_app

    app.command("simulate")(simulate_command)
    app.command("train")(training_cli.train)
    app.command("evaluate")(training_cli.evaluate)
    app.add_typer(training_cli.app, name="model")  # model train|evaluate|ship
    app.command("report")(report_command)
    app.command("gateway")(gateway_command)
    app.command("lag-exporter")(lag_exporter)
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(dashboards_app, name="dashboards")
    app.add_typer(events_app, name="events")
    app.add_typer(spark_app, name="spark")
    app.add_typer(lake_app, name="lake")
    app.add_typer(pseudonym_app, name="pseudonym")


_wire_subcommands()


def _help_for_the_terminal(doc: str) -> str:
    """A docstring as ``--help`` should show it: each paragraph one line, for rich to wrap.

    typer joins the lines of a help text's first paragraph but keeps every line break of the
    others, so at 80 columns they came out ragged; and reStructuredText's double backticks were
    printed as they are. Paragraphs stay apart, and so do the lines of a list (lines that start
    with "-", "*" or a number and a dot).
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = paragraph.splitlines()
        if any(re.match(r"\s*(?:[-*]|\d+\.)\s", line) for line in lines[1:]):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs).replace("``", "'")


def _reflow_help(typer_app: typer.Typer) -> None:
    """Give every command and group of ``typer_app`` its help text reflowed (see above)."""
    for info in typer_app.registered_commands:
        doc = info.help if info.help is not None else inspect.getdoc(info.callback)
        if doc:
            info.help = _help_for_the_terminal(doc)
    for group in typer_app.registered_groups:
        _reflow_help(group.typer_instance)


_reflow_help(app)

if __name__ == "__main__":
    raise SystemExit(main())
