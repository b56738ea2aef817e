"""Shared plumbing for running real services as local child processes on loopback.

Kafka, PostgreSQL, Prometheus and Alertmanager all need the same few things for dev and tests:
a free port, a way to wait until it accepts connections, a process whose output goes to a log
file, a clean stop (SIGTERM, then SIGKILL), and a small JSON state file so that a separate
``down`` command can find and stop what an earlier ``up`` command started.
Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Self

from pipeline.fslock import exclusive_lock

LOOPBACK = "127.0.0.1"
# What ends an `up` command early (run_service_command turns each into an unwind).
_ENDING_SIGNALS = frozenset({signal.SIGINT, signal.SIGHUP, signal.SIGTERM})


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free right now on ``host``.

    The OS picks it (bind to port 0); another process could still grab it before we use it,
    which is an accepted race for local dev and tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    When ``process`` is given, fail at once if it exits instead of waiting out the timeout, so a
    broken config is reported in seconds, with the tail of ``log_path`` in the message.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_is_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.pid} exited with code {process.returncode} before "
                f"{host}:{port} opened{_log_tail_suffix(log_path)}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_s:.0f}s{_log_tail_suffix(log_path)}")


def log_tail(path: Path | None, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file, or '' when there is none (used in error messages)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 16_384))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _log_tail_suffix(path: Path | None) -> str:
    tail = log_tail(path)
    return f"; last lines of {path}:\n{tail}" if tail else ""


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (a zombie has already exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str] | None:
    """The arguments of ``pid`` (None without procfs)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0")


def _marker_in(marker: str, args: Sequence[str]) -> bool:
    """True when ``marker`` is one whole argument, or an option's value (``--config.file=MARKER``).

    A substring test would take ``/b/a/.run/kafka/server.properties`` (another checkout's broker
    that got the recycled pid) for ``/a/.run/kafka/server.properties``.
    """
    return any(arg == marker or arg.endswith("=" + marker) for arg in args)


def pids_with_argument(marker: str, *also: str) -> list[int]:
    """Live processes with ``marker`` as a whole argument (see :func:`_marker_in`) and every
    string of ``also`` as an argument: a service whose state file was deleted while it ran."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        args = _cmdline(pid)
        if pid != os.getpid() and args and _marker_in(marker, args) and all(a in args for a in also) and pid_alive(pid):
            found.append(pid)
    return sorted(found)


class StateFileError(RuntimeError):
    """A state file that cannot be read or is not what :meth:`LocalService.save` writes."""


def _terminate_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when our parent thread exits."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class LocalService:
    """A locally running service process, started here or re-attached from its state file.

    ``process`` is set only in the Python process that started the service; a ``down`` command
    in another process re-attaches by pid (see :meth:`load`) and signals it directly.
    ``marker`` is a string that must appear in the process command line (e.g. its config path),
    so a recycled pid is never mistaken for our service.
    """

    name: str
    pid: int
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    marker: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ports: Mapping[str, int] | None = None,
        dirs: Mapping[str, str] | None = None,
        info: Mapping[str, str] | None = None,
        marker: str = "",
        detach: bool = False,
        state_file: Path | None = None,
    ) -> LocalService:
        """Start ``argv`` with stdout and stderr appended to ``log_path``.

        ``state_file`` (``up``) is written before the spawn, with pid 0: "starting, find it by
        its marker" (:meth:`load`). So an ``up`` killed with SIGKILL at any instant, even between
        the spawn and the state file that names the pid (the caller's
        :func:`record_while_starting`), leaves a server that ``status`` and ``down`` find.

        ``detach=True`` puts the child in its own session so it outlives the starting command
        and ignores the terminal's Ctrl-C (for ``up``). Otherwise (tests) the child shares the
        terminal's Ctrl-C and, on Linux, gets SIGTERM when the starting thread dies, even by
        SIGKILL, so a killed test run leaves no orphaned server behind.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        starting = cls(name=name, pid=0, log_path=log_path, ports=dict(ports or {}), dirs=dict(dirs or {}),
                       info=dict(info or {}), marker=marker)  # fmt: skip
        if state_file is not None:
            starting.save(state_file)
        # The signals that end `up` (run_service_command) are held while the child is created:
        # one that arrived inside Popen, after the fork, left a detached server nobody knew of
        # (a rehearsal of the suite, 2026-12-04). Delivered on unblocking, they kill it.
        try:
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _ENDING_SIGNALS)
            try:
                with log_path.open("ab") as log:
                    process = subprocess.Popen(
                        list(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=None if env is None else dict(env),
                        cwd=cwd,
                        start_new_session=detach,
                        preexec_fn=None if detach or sys.platform != "linux" else _terminate_with_parent,
                    )
            finally:
                try:
                    # Runs the handlers of signals that came meanwhile (pthread_sigmask checks them).
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                except BaseException:
                    if "process" in locals():
                        process.kill()
                        process.wait()
                    raise
        except BaseException:
            if state_file is not None:  # nothing of ours runs: no "starting" state left behind
                starting.forget(state_file)
            raise
        return replace(starting, pid=process.pid, process=process)

    def is_running(self) -> bool:
        """True while the service process is alive (and is still ours, judged by ``marker``).

        Without a marker a re-attached pid is never taken for ours: ``down`` must not signal
        whatever process now has that pid.
        """
        if self.process is not None:
            return self.process.poll() is None
        if not self.marker or self.pid <= 1 or not pid_alive(self.pid):  # kill(0) would be our group
            return False
        cmdline = _cmdline(self.pid)
        return cmdline is None or _marker_in(self.marker, cmdline)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM and wait up to ``timeout_s`` for a clean shutdown, then SIGKILL."""
        if not self.is_running():
            return
        self._signal(signal.SIGTERM)
        if not self._wait_exit(timeout_s):
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once (tests use this to simulate a crash) and reap the process."""
        if self.is_running():
            self._signal(signal.SIGKILL)
            self._wait_exit(10.0)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited between the check and the signal
            os.kill(self.pid, sig)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(self.pid):
                return True
            time.sleep(0.1)
        return False

    def save(self, state_file: Path) -> None:
        """Write pid, ports, dirs and log path as JSON so another process can :meth:`load` it."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "process"}
        data["log_path"] = str(self.log_path)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(state_file)

    def forget(self, state_file: Path) -> None:
        """Remove ``state_file`` only while it still records this pid, or this start (pid 0):
        never another's state."""
        with contextlib.suppress(StateFileError):
            recorded = LocalService.load(state_file, find_starting=False)
            if recorded is not None and recorded.pid in (self.pid, 0) and recorded.marker == self.marker:
                state_file.unlink(missing_ok=True)

    @classmethod
    def load(cls, state_file: Path, find_starting: bool = True) -> LocalService | None:
        """Re-attach to a service from its state file; None when there is no state file.

        A state written before the spawn has pid 0 (:meth:`start`): with ``find_starting`` the
        process is looked up by its marker (none found: pid 0, not running).

        Raises :class:`StateFileError` (one line, naming the file) when it cannot be read or is
        not a state file (truncated by a crash, edited by hand, a directory).
        """
        if not state_file.exists():
            return None
        try:
            data = json.loads(state_file.read_text())
            service = cls._from_state(data)
            if service.pid == 0 and find_starting:
                found = pids_with_argument(service.marker)
                service.pid = found[0] if found else 0
            return service
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateFileError(
                f"{state_file}: not a readable state file ({reason}); if the service is not running, "
                "delete the file and retry"
            ) from exc

    @classmethod
    def _from_state(cls, data: object) -> LocalService:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)} - {"process"}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"unknown key {unknown[0]!r}")
        for key, kind in (("name", str), ("log_path", str), ("marker", str)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"{key!r} missing or not a string")
        if not data["marker"]:
            raise ValueError("'marker' is empty")
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0 or pid == 1:
            raise ValueError("'pid' missing or not a process id")  # 0: starting (see start)
        for key, kind in (("ports", int), ("dirs", str), ("info", str)):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(v, kind) for v in value.values()):
                raise ValueError(f"{key!r} is not a mapping of {kind.__name__}")
        return cls(**{**data, "log_path": Path(data["log_path"])})


@dataclass
class ServiceHandle:
    """A started local service as callers hold it; subclasses add their addresses."""

    service: LocalService
    port: int

    def is_running(self) -> bool:
        return self.service.is_running()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        self.service.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL: simulates a crash."""
        self.service.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def await_ready(
        self,
        timeout_s: float,
        error: type[Exception],
        ready_url: str | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Wait for the port, then for ``ready_url`` to answer 200 and ``ready()`` to return;
        on failure kill the process and raise ``error`` with the cause, so no half-started
        service is left behind."""
        try:
            wait_for_port(LOOPBACK, self.port, timeout_s, process=self.service.process, log_path=self.service.log_path)
            if ready_url is not None:
                _wait_http_ok(ready_url, timeout_s, self.service)
            if ready is not None:
                ready()
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise error(f"{self.service.name} did not start: {exc}") from exc
        except BaseException:
            self.kill()
            raise


@dataclass
class ConfiguredHttpService(ServiceHandle):
    """A service run from a YAML config file in its data dir and ready when ``GET /-/ready``
    answers 200 (Prometheus, Alertmanager)."""

    data_dir: Path
    config_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @classmethod
    def launch(
        cls,
        name: str,
        argv: Sequence[str],
        data_dir: Path,
        config_path: Path,
        port: int,
        *,
        info: Mapping[str, str] | None = None,
        detach: bool,
        startup_timeout_s: float,
        error: type[Exception],
        state_file: Path | None = None,
    ) -> Self:
        """Start ``argv`` (logging to ``<data_dir>/<name>.log``) and wait until it is ready;
        ``state_file`` (see :func:`record_while_starting`) is written before the wait."""
        service = LocalService.start(
            name,
            argv,
            data_dir / f"{name}.log",
            ports={name: port},
            dirs={"data": str(data_dir)},
            info={"config": str(config_path), **(info or {})},
            marker=str(config_path),
            detach=detach,
            state_file=state_file,
        )
        with record_while_starting(service, state_file):
            server = cls(service=service, port=port, data_dir=data_dir, config_path=config_path)
            server.await_ready(startup_timeout_s, error, ready_url=f"{server.url}/-/ready")
        return server


@contextlib.contextmanager
def record_while_starting(service: LocalService, state_file: Path | None) -> Iterator[None]:
    """Around the readiness wait of a service just started: write ``state_file`` first, so an
    ``up`` killed with SIGKILL while it waits leaves a server that ``status`` and ``down`` find
    (before, only Kafka's did: a hostile check, 2026-12-04); on any failure, a signal included,
    kill the server and remove the state file again."""
    try:
        if state_file is not None:
            service.save(state_file)
        yield
    except BaseException:
        service.kill()
        if state_file is not None:
            service.forget(state_file)
        raise


def _wait_http_ok(url: str, timeout_s: float, service: LocalService) -> None:
    import httpx  # only the HTTP services need it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        if not service.is_running():
            break
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f}s{_log_tail_suffix(service.log_path)}")


def default_run_dir() -> Path:
    """Where ``up`` keeps state and data: ``$MM_RUN_DIR``, else ``.run`` in the current directory
    (the same for every service, as ``python -m pipeline.localinfra.kafka --run-dir`` defaults to)."""
    return Path(os.environ.get("MM_RUN_DIR") or ".run")


def port_arg(value: str) -> int:
    """argparse type for ``--port``: 0 (any free port) to 65535, else a usage error (exit 2)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def existing_file_arg(value: str) -> Path:
    """argparse type for an input file named on the command line: missing is a usage error."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


# Exit codes of the service commands (README, "Exit codes").
EXIT_SETUP = 2  # the service could not start (port in use, binary missing, bad option value)
EXIT_FILES = 4  # the state file or the data folder cannot be used (corrupt, a file, unreadable)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_service_command(name: str, command: Callable[[], int], setup_errors: tuple[type[Exception], ...]) -> int:
    """Run one ``up|status|down`` and turn what a user can cause into one line and an exit code.

    SIGHUP (the terminal closed) and SIGTERM unwind like Ctrl-C, so an ``up`` cut short stops the
    server it had started (:meth:`ServiceHandle.await_ready`, ``start_broker``) instead of leaving
    it running with no state file for ``down`` to find; the exit code is 128 + the signal.
    """
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _exit_on_signal)
    try:
        return command()
    except KeyboardInterrupt:  # `up` has already stopped what it had started (await_ready, start_broker)
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except StateFileError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FILES
    except setup_errors as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        # mkdir(exist_ok=True) on a file: say what is wrong rather than "File exists".
        why = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        print(f"{name}: cannot use {where}{why}", file=sys.stderr)
        return EXIT_FILES


def service_cli(
    name: str,
    argv: list[str] | None,
    state_file: Path,
    *,
    add_up_arguments: Callable[[argparse.ArgumentParser], None],
    start: Callable[[argparse.Namespace, Path], ServiceHandle],
    address: Callable[[LocalService], str],
    stop: Callable[[LocalService], None] = lambda service: service.stop(),
    setup_errors: tuple[type[Exception], ...] = (),
) -> int:
    """``up`` (no-op when running; prints the address), ``status`` (exit 1 when not running)
    and ``down`` for one local service, sharing its state file between the commands.

    ``setup_errors`` (the service's own SetupError) are reported as one line, exit 2; a state
    file or folder that cannot be used as one line, exit 4.
    """
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.localinfra.{name}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_up_arguments(sub.add_parser("up", help=f"start {name} in the background and print its address"))
    sub.add_parser("status", help="describe it and exit 0 when running, else exit 1")
    sub.add_parser("down", help="stop what 'up' started (data is kept)")
    args = parser.parse_args(argv)

    def running_service() -> LocalService | None:
        existing = LocalService.load(state_file)
        return existing if existing is not None and existing.is_running() else None

    lock_file = state_file.with_name(state_file.name + ".lock")

    def up() -> int:
        # Held from reading the state file to writing it: a concurrent `up` waits, then reports ours.
        with exclusive_lock(lock_file):
            existing = running_service()
            if existing is not None:
                print(address(existing))
                return 0
            # start writes the state file before it waits for readiness (record_while_starting),
            # and stops the server again if that write fails: no server is left running unseen.
            server = start(args, state_file)
        print(address(server.service))
        return 0

    def status() -> int:
        existing = running_service()
        if existing is None:
            print(f"{name}: not running")
            return 1
        print(f"{name}: running, pid {existing.pid}, {address(existing)}, log {existing.log_path}")
        return 0

    def down() -> int:
        # Waits for an `up` in progress (its state file is written once the service is ready), so
        # `down` right after `up` stops it rather than saying "not running" and leaving it to start.
        if not state_file.parent.is_dir():  # no `up` ever ran here (and `down` creates nothing)
            print(f"{name}: not running")
            return 0
        with exclusive_lock(lock_file):
            existing = running_service()
            if existing is not None:
                stop(existing)
            state_file.unlink(missing_ok=True)
        print(f"{name}: stopped" if existing is not None else f"{name}: not running")
        return 0

    return run_service_command(name, {"up": up, "status": status, "down": down}[args.command], setup_errors)
