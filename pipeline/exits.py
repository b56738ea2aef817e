"""Exit codes and one-line messages for the errors a user can cause.

``misuse-monitor``'s entry point (``pipeline.cli.main``) turns an exception into one line on
stderr and a distinct exit code, the way kcat, promtool and amtool behave, so scripts can
branch on the code and people read the cause instead of a traceback (``--debug`` still
shows it). The codes are documented in README.md ("Exit codes"); a test checks both agree.

Why a table of exception types rather than ``except`` clauses in every command: commands
raise the library's own exceptions (pydantic, PyYAML, kafka-python, psycopg) from deep
inside, and one place that knows how to phrase each keeps the commands free of wrappers.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes of ``misuse-monitor`` (README.md lists them)."""

    OK = 0
    INTERNAL = 1  # a bug: the message says so and --debug shows the traceback
    USAGE = 2  # bad command line (click's own convention)
    CONFIG = 3  # settings file, MM_* variable or value invalid
    INPUT = 4  # an input file missing, unreadable or not in the expected format
    KAFKA_UNREACHABLE = 5  # no broker answered within kafka.connect_timeout_s
    DATABASE_UNREACHABLE = 6  # PostgreSQL (or another database) did not answer
    INVALID_RECORDS = 7  # classify: some input lines were invalid (without --allow-errors)
    SERVICE_UNREACHABLE = 8  # an HTTP service (Prometheus, Alertmanager, Grafana) did not answer
    OUTAGE = 9  # stream: a sink or the broker stayed down past stream.outage_deadline_s
    DETECTOR_FAILED = 10  # stream: a detector failed on every record, a known-good one included, or the scoring process died; spark: a Python worker crashed
    CHECK_FAILED = 11  # a check found a problem: stale generated files, a dashboard query without data
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
    PIPE_CLOSED = 141  # the reader of stdout went away (`... -o - | head`): 128 + SIGPIPE, as a C tool reports it


class UserError(Exception):
    """An error the user can fix; ``code`` is the exit status, the message is the whole story."""

    code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigError(UserError):
    code = ExitCode.CONFIG


class InputError(UserError):
    code = ExitCode.INPUT


class Unreachable(UserError):
    """A service did not accept a connection within the timeout (checked before models load)."""

    code = ExitCode.SERVICE_UNREACHABLE


# --------------------------------------------------------------------------- config errors


def _fields_at(loc: Iterable[Any]) -> list[str] | None:
    """The valid keys of the settings section at ``loc`` (None when loc leaves the models)."""
    from pydantic import BaseModel

    from pipeline.settings import Settings

    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def _inner_types(annotation: Any) -> list[Any]:
    """``annotation`` and the types inside it (``SecretStr | None``, ``list[SecretStr]``...)."""
    from typing import get_args

    found, todo = [], [annotation]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(get_args(current))
    return found


# Names that suggest a credential, for fields the models do not type as SecretStr (a config
# key the models do not know, a str field holding a URL with a password in it).
_SECRET_WORDS = ("key", "password", "secret", "token", "url")


def is_secret_field(loc: Iterable[Any]) -> bool:
    """Does ``loc`` name a setting whose value must never be echoed in a message?

    A field typed ``SecretStr`` anywhere in Settings (``kafka.sasl_plain_password``,
    ``pseudonym_key``, ``alerts.receivers.0.url``), one whose name looks like a credential, or
    a place that takes a section or an entry (a model): a value given there in place of the
    mapping is often the secret itself, as a receiver written as its bare Slack webhook URL
    (``alerts.receivers.2: ... (got 'https://hooks.slack.com/services/...')``, an on-call
    review, 2026-12-06).
    """
    from pydantic import BaseModel, SecretStr

    from pipeline.settings import Settings

    loc = [str(p) for p in loc]
    if any(word in part.lower() for part in loc for word in _SECRET_WORDS):
        return True
    annotations: list[Any] = [Settings]
    for part in loc:
        models = [a for a in annotations if isinstance(a, type) and issubclass(a, BaseModel)]
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            annotations = [t for f in fields for t in _inner_types(f.annotation)]
        # else a list index or dict key: the element types are already in ``annotations``
    return any(isinstance(a, type) and issubclass(a, SecretStr | BaseModel) for a in annotations)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid name (difflib), or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def first_line(exc: BaseException, empty: str = "", max_chars: int | None = None) -> str:
    """The first line of ``str(exc)`` (at most ``max_chars``), or ``empty`` when it says nothing:
    messages stay one line when a library's error text runs on (an HTML page, a traceback)."""
    text = str(exc).strip()
    return text.splitlines()[0][:max_chars] if text else empty


def describe_validation_error(exc: Any, source: str = "settings", root: tuple[str, ...] = ()) -> str:
    """A pydantic ValidationError of Settings as one line naming each key (with did-you-mean).

    ``root``: where the validated model sits in Settings (``("alerts",)`` for an AlertSettings
    read on its own), so keys, suggestions and secret fields are those of that section."""
    parts = []
    for err in exc.errors():
        loc = [*root, *(str(p) for p in err["loc"])]
        key = ".".join(loc) or "(root)"
        if err["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1]) or []
            near = suggest(loc[-1], valid)
            hint = f"; did you mean {'.'.join([*loc[:-1], near])}?" if near else (
                f"; valid keys: {', '.join(valid)}" if valid else ""
            )
            parts.append(f"{key}: unknown key{hint}")
        else:
            value = err.get("input")
            hidden = isinstance(value, dict | list) or value is None or is_secret_field(loc)
            shown = "" if hidden else f" (got {value!r})"
            parts.append(f"{key}: {err['msg']}{shown}")
    return f"{source}: " + "; ".join(parts)


def describe_yaml_error(exc: Any) -> str:
    where, problem = yaml_error_parts(exc)
    return f"invalid YAML at {where or 'config file'}: {problem}"


def yaml_error_parts(exc: Any, source: str | None = None) -> tuple[str | None, str]:
    """Where a YAML error is (``file:line:column``, the file named ``source`` when the text was
    parsed from a string; None without a mark) and what it is, in one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source or mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else None
    return where, getattr(exc, "problem", None) or str(exc).splitlines()[0]


# --------------------------------------------------------------------------- MM_* variables

# MM_ variables that are not settings but are read by this project (tools, tests, provisioning).
KNOWN_NON_SETTINGS = {"MM_CONFIG", "MM_RUN_DIR", "MM_PG_BIN", "MM_PG_RUN_AS", "MM_DEBUG"}
KNOWN_PREFIXES = ("MM_TEST_", "MM_GRAFANA_")


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """One line per ``MM_*`` variable that no setting reads, with the closest valid name.

    pydantic-settings ignores them silently (a single underscore, a misspelt section), so a
    typo like ``MM_KAFKA_BOOTSTRAP_SERVERS`` would otherwise leave the default broker in place.
    Nested names under a known section are not checked here: Settings rejects those itself.
    """
    return [line for _, line, _ in _unknown_env_vars(environ)]


# Words in a variable's name that say it holds a secret (the URL settings are not among them:
# a misspelt one leaves a default address, it does not leave data unprotected).
_SECRET_VARIABLE_WORDS = ("KEY", "PASSWORD", "SECRET", "TOKEN")


def misspelt_secret_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """The lines of :func:`unknown_env_vars` for variables whose name says they hold a secret and
    whose closest valid name is a secret setting (``MM_LAKE__ENCRYPTION_KEY``, ``MM_PSEUDONYM_KEY``,
    ``MM_KAFKA__SASL_PLAIN_PASSWORD``...): another program's ``MM_*_PASSWORD`` is only warned of.

    A warning was not enough there: with ``MM_LAKE_ENCRYPTION_KEY`` (one underscore) the stream
    ran and kept every log in the lake unencrypted, and ``MM_PSEUDONYM__KEY`` left the placeholder
    key in place (hostile review, 2026-12-07). Loading the settings refuses to with one (exit 3)."""
    return [
        line for var, line, near in _unknown_env_vars(environ)
        if any(w in var.upper() for w in _SECRET_VARIABLE_WORDS) and near is not None and _names_a_secret_setting(near)
    ]


def _names_a_secret_setting(variable: str) -> bool:
    """Whether ``MM_SECTION__KEY`` or ``MM_KEY`` is a setting typed as a secret."""
    from pydantic import SecretStr

    from pipeline.settings import Settings

    loc = [part.lower() for part in variable.removeprefix("MM_").split("__")]
    if loc[0] not in Settings.model_fields or (len(loc) > 1 and loc[1] not in (_fields_at(loc[:1]) or [])):
        return False  # one of our own variables (MM_CONFIG), not a setting
    model: Any = Settings
    for part in loc[:-1]:
        model = model.model_fields[part].annotation
    return SecretStr in _inner_types(model.model_fields[loc[-1]].annotation)


def _unknown_env_vars(environ: dict[str, str] | None) -> list[tuple[str, str, str | None]]:
    from pipeline.settings import Settings

    environ = dict(os.environ) if environ is None else environ
    # Only sections take nested names: MM_PSEUDONYM_KEY__KEY is read by no setting (pseudonym_key
    # is a value), and was neither reported nor suggested rightly ("did you mean
    # MM_PSEUDONYM_KEY__KEY?" for MM_PSEUDONYM__KEY).
    sections = {name.upper(): name for name in Settings.model_fields if _fields_at([name]) is not None}
    # The variables our own code reads are suggested too: MM_CONFG said no "did you mean MM_CONFIG?".
    valid = [f"MM_{s.upper()}" for s in Settings.model_fields] + sorted(KNOWN_NON_SETTINGS)
    for name in Settings.model_fields:
        valid += [f"MM_{name.upper()}__{k.upper()}" for k in _fields_at([name]) or []]
    top_level = {name.upper() for name in Settings.model_fields}
    problems = []
    for var in sorted(environ):
        # pydantic-settings matches names in any case (MM_batch__max_records is read), so they are
        # compared upper-cased; the non-settings are read by our own code in exactly this case.
        name = var.upper()
        if not name.startswith("MM_") or var in KNOWN_NON_SETTINGS or var.startswith(KNOWN_PREFIXES):
            continue
        if name[3:] in top_level:
            continue  # a setting itself (MM_PSEUDONYM_KEY, MM_SINKS, MM_KAFKA: Settings reads them)
        head = name[3:].split("__", 1)[0]
        if head in sections and ("__" in name[3:] or name[3:] == head):
            continue  # a real section: Settings validates the key itself
        rest = name[3:].split("__", 1)[1] if "__" in name[3:] else None
        section = suggest(head, sections) if rest else None
        near = f"MM_{section}__{rest}" if section else suggest(name, valid)
        problems.append((var, f"{var} is not a setting{f' (did you mean {near}?)' if near else ''}; it is ignored", near))
    return problems


def bind_error(exc: OSError, host: str, port: int, how_to_change: str) -> ConfigError:
    """One line for an address a server of ours cannot listen on: the port is taken (a second
    stream member on the same host, with the same port), the host is not an address of this
    machine, or the port is privileged. Without it the user saw "internal error: OSError"."""
    taken = exc.errno == errno.EADDRINUSE
    hint = " (another process listens there; each process on one host needs its own port)" if taken else ""
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}; {how_to_change}")


# --------------------------------------------------------------------------- exceptions -> lines

# Import names that differ from the distribution's name on PyPI.
_DISTRIBUTION_OF_MODULE = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def extra_providing(module: str) -> str | None:
    """The optional extra of misuse-monitor (pyproject.toml) that installs ``module``, from the
    installed package's metadata; None when no extra lists it (or the metadata is missing)."""
    from importlib import metadata

    top = module.split(".")[0]
    wanted = _normalized(_DISTRIBUTION_OF_MODULE.get(top, top))
    try:
        requirements = metadata.requires("misuse-monitor") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:  # e.g. 'torch==2.15.0; extra == "detector"'
        found = re.match(r"\s*([A-Za-z0-9_.-]+)[^;]*;.*extra\s*==\s*[\"']([^\"']+)[\"']", requirement)
        if found and _normalized(found[1]) == wanted and found[2] != "all":
            return found[2]
    return None


def _missing_module(exc: ModuleNotFoundError) -> tuple[ExitCode, str] | None:
    """A third-party module an optional extra provides (exit 3 with the install line), else None:
    a missing module of this project itself is a bug."""
    module = exc.name or ""
    if not module or module.split(".")[0] in ("pipeline", "detectors", "dashboards"):
        return None
    extra = extra_providing(module)
    hint = (
        f"pip install 'misuse-monitor[{extra}]'" if extra
        else "install it, or every optional extra: pip install 'misuse-monitor[all]'"
    )
    return ExitCode.CONFIG, f"module {module!r} is not installed; this command needs it: {hint}"


def _without_password(text: str) -> str:
    """``scheme://user:***@host``: a URL's password never reaches a message."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _java_text(exc: BaseException) -> str:
    """str() of a Py4JJavaError asks the JVM for the Java stack trace; "" once it is gone."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - py4j raises its own errors when the gateway is closed
        return ""


_SPARK_READ_ERROR = re.compile(r"\[(FAILED_READ_FILE|PATH_NOT_FOUND)[^\]]*\] ([^\n]*)")


def _spark_read_error(text: str) -> str | None:
    """The line of a Spark error that says which input file it could not read (a lake file of
    the wrong schema, a labels file that is not there), without the SQLSTATE; None for other
    errors. Such a job ended "internal error: Py4JJavaError" without naming the file (a hostile
    review, 2026-12-06)."""
    m = _SPARK_READ_ERROR.search(text)
    if m is None:
        return None
    line = re.sub(r"\s*SQLSTATE: \w+\.?$", "", m.group(2))
    line = re.sub(r"file:/+", "/", line)
    return line[:500]


# SQLSTATEs of a database set up wrong for us: a read-only transaction, not authorised (two), no
# such schema, insufficient privilege. Exact codes: the rest of their classes (25P02, an aborted
# transaction; 42601, a syntax error) are bugs of ours.
_DATABASE_SETUP_SQLSTATES = ("25006", "28000", "28P01", "3F000", "42501")

# How a failed Spark task reaches the driver: the JVM's error, or PySpark's for a Python exception.
SPARK_TASK_ERRORS = ("Py4JJavaError", "PythonException")
# What a task's error says first when the input is at fault: the rest of its line is the message
# (exit 4). A task cannot raise InputError to the driver: it arrives as a Spark error.
SPARK_TASK_INPUT_ERROR = "misuse-monitor input error:"


# Ctrl-C, remembered: a KeyboardInterrupt raised inside a finaliser (``__del__``; the regex
# module's run while patterns compile) is printed as "Exception ignored" and lost, and `classify`
# then ran on to its last line (a newcomer review, 2026-12-07). Long loops call
# :func:`raise_if_interrupted` once per batch or record.
_interrupted = threading.Event()


def _on_interrupt(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def remember_interrupts() -> Callable[[], None]:
    """Install the Ctrl-C handler where Python's own is (in the main thread; not where the parent
    ignores Ctrl-C, as shells do for ``cmd &`` in a script, or ``trap '' INT``: the handler had
    made such runs stop at a Ctrl-C meant for something else; a review of my diff, 2026-12-07).
    Returns what puts the handler before back and forgets a Ctrl-C it saw (a Ctrl-C remembered
    past it stopped every later command of the process)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return lambda: None
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _on_interrupt)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()

    return restore


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came while :func:`remember_interrupts`'s handler was in
    place, lost or not."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def classify_exception(exc: BaseException) -> tuple[ExitCode, str]:
    """(exit code, one-line message) for an exception that ended a command."""
    if isinstance(exc, UserError):
        return exc.code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if name == "ValidationError" and module.startswith("pydantic"):
        title = getattr(exc, "title", "")
        if title == "Settings":
            return ExitCode.CONFIG, describe_validation_error(exc)
        return ExitCode.INPUT, describe_validation_error(exc, source=f"invalid {title or 'input'}")
    if module.startswith("yaml"):
        return ExitCode.CONFIG, describe_yaml_error(exc)
    if module.startswith("kafka"):
        if name in ("NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError"):
            # kafka-python's str() of a bare error is its class name: "KafkaTimeoutError: KafkaTimeoutError".
            detail = str(exc) if str(exc) not in ("", name) else "no broker answered"
            # Its str() of an error with a message starts with the class name already.
            return ExitCode.KAFKA_UNREACHABLE, f"kafka: {detail}" if detail.startswith(name) else f"kafka: {name}: {detail}"
        return ExitCode.INTERNAL, f"kafka: {name}: {exc}"
    if module.startswith(("psycopg", "sqlalchemy")) and name in ("OperationalError", "ConnectionTimeout"):
        first = first_line(exc, name)
        return ExitCode.DATABASE_UNREACHABLE, f"database: {first}"
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    if module.startswith("sqlalchemy") and sqlstate in _DATABASE_SETUP_SQLSTATES:
        # A read-only database (a standby), a role without the privilege, a search_path naming no
        # schema: the operator's to fix, not a bug (internal error, exit 1, until a hostile review,
        # 2026-12-07). The first line of the server's message: no statement parameters.
        server = first_line(getattr(exc, "orig", exc), name)
        return ExitCode.CONFIG, (f"database: {server} (SQLSTATE {sqlstate}); check the role's privileges, that "
                                 "the database is not read-only, and the URL's search_path")  # fmt: skip
    if module.startswith("sqlalchemy") and any(c.__name__ == "ArgumentError" for c in type(exc).__mro__):
        # A database URL SQLAlchemy cannot parse or has no dialect for (--url, --alerts-db, *.db_url).
        first = first_line(exc, name)
        example = "sqlite:///data/alerts.db or postgresql+psycopg://user:password@host:5432/db"
        return ExitCode.CONFIG, f"database URL: {_without_password(first)} (expected e.g. {example})"
    if isinstance(exc, ModuleNotFoundError) and (missing := _missing_module(exc)) is not None:
        return missing
    if module.startswith("httpx") and name in ("ConnectError", "ConnectTimeout"):
        return ExitCode.SERVICE_UNREACHABLE, f"http: {exc}"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        target = exc.filename or str(exc)
        return ExitCode.INPUT, f"{exc.strerror or name}: {target}" if exc.filename else str(exc)
    if name == "SettingsError" and module.startswith("pydantic_settings"):  # e.g. a list variable that is not JSON
        return ExitCode.CONFIG, f"settings: {exc} (list and object variables take JSON, e.g. MM_DETECTORS__ENABLED='[\"rules\"]')"
    if name == "ModelLoadError":  # a model directory missing, incomplete or not an artifact
        return ExitCode.CONFIG, f"model: {exc}"
    if name == "SparkSetupError":
        return ExitCode.CONFIG, f"spark: {exc}"
    if name == "Py4JJavaError" and "Python worker exited unexpectedly" in _java_text(exc):
        # A native crash or an out-of-memory kill in a task's Python worker: inside a detector
        # (backfill, shadow) that is likely one record, which crashes it again on every run.
        return ExitCode.DETECTOR_FAILED, (
            "spark: a Python worker exited unexpectedly (a native crash or an out-of-memory kill, e.g. in a "
            "detector on one record) and the job stopped without writing its output; a record that crashes a "
            "detector does so on every run: rerun the backfill with --isolate-crashes to dead-letter it as "
            "scorer_crashed and score the rest (docs/spark.md)"
        )
    # --isolate-crashes: the scoring process could not start, or more records than one batch may
    # hold each ended it (not taken to be the records' fault: a broken device, no memory).
    died = [ln for ln in _java_text(exc).splitlines() if "WorkerDied:" in ln] if name in SPARK_TASK_ERRORS else []
    if died:
        reason = died[-1].split("WorkerDied:", 1)[1].strip()
        return ExitCode.DETECTOR_FAILED, f"spark: a worker's scoring process: {reason}; the job wrote nothing"
    told = [ln for ln in _java_text(exc).splitlines() if SPARK_TASK_INPUT_ERROR in ln] if name in SPARK_TASK_ERRORS else []
    if told:
        return ExitCode.INPUT, "spark: " + told[-1].split(SPARK_TASK_INPUT_ERROR, 1)[1].strip()
    if name in (*SPARK_TASK_ERRORS, "AnalysisException") and (read := _spark_read_error(_java_text(exc))):
        return ExitCode.INPUT, f"spark: {read}"
    if name == "BackfillError":  # no input to score (an empty or missing lake, no matching files)
        return ExitCode.INPUT, f"spark: {exc}"  # every job reads the lake through backfill
    if isinstance(exc, UnicodeDecodeError):
        return ExitCode.INPUT, f"input is not UTF-8 text: {exc.reason} at byte {exc.start}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT):
        return ExitCode.INPUT, f"{exc.strerror}: {exc.filename}" if exc.filename else f"{exc.strerror or name}"
    if name == "DeliveryError":  # records the broker did not take (it went away mid-run)
        return ExitCode.KAFKA_UNREACHABLE, f"kafka: {exc}"
    if name == "RegistryError":  # an unknown detector or sink name
        return ExitCode.CONFIG, str(exc)
    if name == "ForeignTableError":  # postgres.url names a database whose misuse_events is not ours
        return ExitCode.CONFIG, f"database: {exc}"
    if name == "OutageError":
        return ExitCode.OUTAGE, f"outage: {exc}"
    if name == "DetectorFailure":
        return ExitCode.DETECTOR_FAILED, f"detector failure: {exc}"
    if name == "WorkerDied":
        return ExitCode.DETECTOR_FAILED, f"scoring process: {exc}"
    if name == "AlertStoreError":  # the alert database missing, not creatable or too old
        return ExitCode.CONFIG, f"alerts: {exc}"
    if name == "AlertRulesError":
        return ExitCode.CONFIG, f"alert rules: {exc}"
    if name in ("LabelsError", "ReportError", "CorpusUnavailableError"):
        return ExitCode.INPUT, str(exc)
    first = first_line(exc)
    return ExitCode.INTERNAL, f"internal error: {name}{': ' + first if first else ''} (rerun with --debug for the traceback)"


def run_script(name: str, main: Callable[[list[str]], int], argv: list[str]) -> int:
    """Exit code of ``main(argv)`` for a job started as a script (``spark-submit
    pipeline/spark/<job>.py``): an error the user can fix is one stderr line and its code, as
    ``misuse-monitor spark <job>`` reports it; a bug keeps its traceback (exit 1). Until
    2026-12-04 a missing input under spark-submit was a traceback and exit 1."""
    try:
        return main(argv)
    except Exception as exc:  # noqa: BLE001 - sorted by classify_exception; bugs are re-raised
        code, message = classify_exception(exc)
        if code == ExitCode.INTERNAL:
            raise
        print(f"{name}: error: {message}", file=sys.stderr)
        return int(code)
