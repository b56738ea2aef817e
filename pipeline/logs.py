"""Process-wide logging for ``misuse-monitor``: one level, text or JSON lines, quiet libraries.

Configured once by the CLI's app callback (``--log-level``, ``--log-format``). JSON lines
carry ``ts``, ``level``, ``logger``, ``message`` (and ``exc`` with the traceback when there
is one) so a log shipper can parse them without a grok pattern.

Below ``debug``, third-party chatter that describes normal events is silenced at its source:
transformers' "sequence length > 512" warning (the detector windows long texts itself, so
the warning is wrong for us), weight-loading progress bars, and tokenizers' fork warning.
These are environment switches because the libraries read them when first imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import unicodedata
from datetime import UTC, datetime
from typing import TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose debug and info lines quote the analysed text.
_TEXT_QUOTING_LOGGERS = ("presidio-analyzer", "presidio-anonymizer", "spacy")
# Libraries whose info lines quote request URLs (which may embed a credential).
_URL_QUOTING_LOGGERS = ("httpx",)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (UTC timestamps, RFC 3339)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif traceback := getattr(record, TRACEBACK, None):
            out["exc"] = str(traceback).rstrip()
        return json.dumps(out, ensure_ascii=False)


# Control characters of a message, shown escaped: a client's request id or text in a message
# forged log lines ("r1\n2026-01-01 ... CRITICAL ...: ALL CLEAR") and coloured the terminal (ESC)
# until a review (2026-12-07). C0 (but tab), DEL, C1 and the Unicode line and paragraph separators;
# a traceback keeps its lines (it is added after the message).
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09} | {
    0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


_TRACEBACK_ESCAPES = {c: e for c, e in _CONTROL_ESCAPES.items() if c != 0x0A}
_CELL_ESCAPES = {**_CONTROL_ESCAPES, 0x09: "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with its control characters shown escaped as in a log message (tab too), for a
    client's value printed to a terminal outside logging: a table cell of the CLI. A model name
    holding ESC and OSC sequences cleared the operator's screen and wrote text of its own in
    `alerts list` (a hostile review, 2026-12-07). Format characters (bidi overrides and
    isolates, zero-width ones) are shown as ``\\u202e`` too: they reorder or hide a cell's text (a
    review of that fix)."""
    text = text.translate(_CELL_ESCAPES)
    if text.isascii():
        return text
    return "".join(_escaped(ch) if unicodedata.category(ch) == "Cf" else ch for ch in text)


def _escaped(ch: str) -> str:
    """``\\u202e``, or ``\\U000e0041`` past U+FFFF (the tag characters that hide text): five hex
    digits after ``\\u`` read as a shorter escape and a digit."""
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


TRACEBACK = "traceback_text"  # extra={TRACEBACK: text}: a traceback as text (another process's), kept in lines


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, one line per message: its control characters escaped. A traceback follows in
    its own lines, whether it is the record's exception or text in ``extra={TRACEBACK: ...}``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's naming
        return super().formatMessage(record).translate(_CONTROL_ESCAPES)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if traceback := getattr(record, TRACEBACK, None):  # its lines kept, its other control characters escaped
            text = f"{text}\n{str(traceback).rstrip().translate(_TRACEBACK_ESCAPES)}"
        return text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream of the
    moment logging was configured. Bound once, it kept a stream that a harness replaced and
    closed (pytest's capture, click's CliRunner), and a late record printed a "--- Logging error
    ---" traceback instead (py4j's "Closing down clientserver connection" at a CI worker's exit)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        pass


# What configure_logging was last called with: a child process (the stream's scoring process)
# configures its own logging the same way, since a spawned interpreter starts with none.
_configured: tuple[str, str] | None = None


def configured_logging() -> tuple[str, str] | None:
    """The (level, format) this process's logging was configured with, if it was."""
    return _configured


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    """Root handler on stderr at ``level``; replaces handlers set before (idempotent)."""
    global _configured
    numeric = _LEVELS[level]
    _configured = (level, fmt)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # The project's own loggers follow the root again: a command run before in this process (the
    # gateway sets "pipeline" to INFO) must not change what the next one prints.
    logging.getLogger("pipeline").setLevel(logging.NOTSET)
    # kafka-python 3.0.12 logs routine events it handles itself as WARNING and even ERROR (a
    # connection the broker closed: "socket disconnected"; a LeaveGroup that timed out). On a busy
    # CI machine an ERROR line after the demo's finished stream failed the quick-start test, its
    # logger name cut off in the report. What matters reaches the user in this project's own
    # words: the start-up check, exceptions, the stream's outage warnings and /healthz. So the
    # client's own log shows only with --log-level debug (as for the gateway). Even then it stops
    # at INFO: kafka-python's DEBUG lines dump the wire ("Sending (key=... value=... headers=...)",
    # "Recv: b'...'", FetchResponse and ProduceRequest reprs), i.e. every raw inference log it
    # fetches and every dead letter it sends, with their keys and the gateway's headers (a privacy
    # review, 2026-12-04, found prompts, user ids and API keys on stderr that way).
    logging.getLogger("kafka").setLevel(logging.INFO if numeric == logging.DEBUG else logging.CRITICAL)
    # py4j (Spark's bridge) logs each connection it opens and closes at INFO: routine, not news.
    logging.getLogger("py4j").setLevel(logging.DEBUG if numeric == logging.DEBUG else logging.WARNING)
    # Presidio's and spaCy's debug lines quote the text they analyse ("Context list is: ...",
    # the matched e-mail address): prompts and PII on stderr, into whatever collects the logs.
    # So they stay at WARNING even with --log-level debug (docs/privacy.md).
    for name in _TEXT_QUOTING_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # httpx logs every request at INFO with its full URL ("HTTP Request: POST https://hooks.slack.com/
    # services/T../B../<token>"): a Slack webhook's credential is its path, and a URL may carry a
    # user and password. Receiver and Alertmanager URLs are secrets (privacy review, 2026-12-04),
    # so httpx speaks only when something goes wrong; deliveries log their outcome themselves.
    for name in _URL_QUOTING_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    if numeric > logging.DEBUG:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        # Presidio warns once per spaCy entity label it does not map (PRODUCT, WORK_OF_ART...),
        # on every analyzer start: configuration chatter, not a problem with the data.
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)


class OncePer:
    """True at most once per ``period_s``: one warning for a burst of the same event (an
    overload, a full spill file, a journal that cannot be written)."""

    def __init__(self, period_s: float = 60.0) -> None:
        self.period_s = period_s
        self._last: float | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.period_s:
            return False
        self._last = now
        return True
