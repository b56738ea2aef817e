"""Start-up checks: is the broker / database there at all, before anything slow happens.

kafka-python retries an unreachable bootstrap address for ``api_version_auto_timeout_ms``
and more, and the stream loads its models before it first talks to Kafka, so a mistyped
address used to cost 30-40 s and end in a long traceback. A TCP connect with a short timeout
answers the question that matters ("does anything listen there?") in milliseconds when the
port is closed and within ``connect_timeout_s`` when the host does not answer; whether the
listener is really Kafka (or PostgreSQL) is left to the client that follows.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from pipeline.exits import ConfigError, ExitCode, Unreachable


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    address = address.strip()
    if address.startswith("["):  # [ipv6]:port
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return host, int(port)


def first_reachable(addresses: list[str], timeout_s: float, default_port: int) -> str | None:
    """The first ``host:port`` that accepts a TCP connection within ``timeout_s`` (None if none)."""
    deadline = time.monotonic() + timeout_s
    for address in addresses:
        try:
            host, port = _host_port(address, default_port)
        except ValueError:
            continue
        remaining = max(0.05, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=remaining):
                return address
        except OSError:
            continue
    return None


def kafka_reachable(kafka) -> bool:  # noqa: ANN001 - KafkaSettings (kept import-light)
    """Does one bootstrap server accept a connection within ``kafka.connect_timeout_s``?"""
    servers = [s for s in kafka.bootstrap_servers.split(",") if s.strip()]
    return first_reachable(servers, kafka.connect_timeout_s, 9092) is not None


def require_kafka(kafka) -> None:  # noqa: ANN001 - KafkaSettings (kept import-light)
    """Raise :class:`Unreachable` (exit 5) unless one bootstrap server accepts a connection."""
    if not kafka_reachable(kafka):
        raise Unreachable(
            f"kafka: no broker reachable at {kafka.bootstrap_servers} within {kafka.connect_timeout_s:g}s "
            "(set kafka.bootstrap_servers / MM_KAFKA__BOOTSTRAP_SERVERS; `make kafka-up` starts a local one)",
            ExitCode.KAFKA_UNREACHABLE,
        )


def require_postgres(url: str, timeout_s: float) -> None:
    """Raise :class:`Unreachable` (exit 6) unless the URL's host:port accepts a connection.

    Unix-socket URLs (no host) are not checked here: the driver reports those at once.
    """
    # Read as SQLAlchemy reads it, for the sinks connect through SQLAlchemy: urlsplit ended the
    # address part at a "#", "/" or "?" in the password, so the check dialled a host made of the
    # user name and printed the password's first characters as the port ("port 'Tr0ub4dor'", a
    # hostile review and the review of its fix, 2026-12-07); an unclosed "[" was exit 1. Nothing
    # of the URL is shown when it cannot be read.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        host, port = parsed.host, parsed.port
        if (host and "@" in host) or (port is not None and not 0 <= port <= 65535):
            # SQLAlchemy ends the password at its first "@", so the rest of it read as the host
            # ("not reachable at tPart@127.0.0.1"; the review of this change).
            raise ValueError("an '@' in the password, or a port out of range")
    except (ValueError, ArgumentError):  # a port that is not a number, an unclosed IPv6 bracket, the above
        raise ConfigError(
            "database URL: its host and port cannot be read (the port must be a number from 0 to 65535, and a "
            "password holding '@' or ':' must be percent-encoded; postgres.url / MM_POSTGRES__URL)"
        ) from None
    if not host:
        return
    address = f"{host}:{port or 5432}"
    if first_reachable([address], timeout_s, 5432) is None:
        raise Unreachable(
            f"database: PostgreSQL not reachable at {address} within {timeout_s:g}s (set postgres.url / MM_POSTGRES__URL)",
            ExitCode.DATABASE_UNREACHABLE,
        )


def require_writable(directory: Path, setting: str, variable: str) -> None:
    """Fail the start in a line, before the models load, where ``directory`` (the folder of
    ``setting``, set by ``variable``) could not be written. Creates nothing: the folder is made
    at the first batch (a start that fails on a wrong broker address leaves no folder behind).

    Without it, a lake path that is a file was retried as an outage until the deadline (15
    minutes by default), then exit 9, and each restart re-sent that batch's verdicts (a hostile
    review, 2026-12-06)."""
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = "it is a file" if existing == directory.absolute() else f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is not writable by this user"
    else:
        return
    raise ConfigError(f"{setting} {directory}: cannot write there ({why}); set {variable} to a writable folder")

