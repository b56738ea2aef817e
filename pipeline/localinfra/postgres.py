"""A real PostgreSQL (Debian's server binaries) on loopback for dev and tests.

:func:`start_postgres` runs ``initdb`` into a data dir (trust auth, loopback TCP only, no Unix
socket), starts ``postgres`` on a free port and creates the database. PostgreSQL refuses to run
as root, so when this process is root the server runs as the ``postgres`` system user (override
with ``MM_PG_RUN_AS``) from a data dir it owns under the system temp dir: pytest's and most
home directories are mode 0700 and that user could not enter them.

CLI::

    python -m pipeline.localinfra.postgres up [--port 5432]   # prints the SQLAlchemy URL
    python -m pipeline.localinfra.postgres status
    python -m pipeline.localinfra.postgres down
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pipeline.localinfra.base import (
    LOOPBACK,
    LocalService,
    ServiceHandle,
    default_run_dir,
    free_port,
    log_tail,
    pid_alive,
    port_arg,
    port_is_open,
    record_while_starting,
    service_cli,
)

SERVICE_NAME = "postgres"
STARTUP_TIMEOUT_S = 60.0
TEMP_CLUSTER_PREFIX = "mm-postgres-"  # as root, the cluster is a temp folder with this prefix (_cluster_dir)
DEFAULT_USER = "misuse"
DEFAULT_DATABASE = "misuse"


class PostgresSetupError(RuntimeError):
    """PostgreSQL could not be found, initialised or started locally."""


@dataclass
class LocalPostgres(ServiceHandle):
    """A running local server; ``url`` is what SQLAlchemy connects to."""

    user: str
    database: str
    data_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint); SIGKILL after ``timeout_s``.

        SIGTERM would be the "smart" mode, which waits for pooled client connections to close.
        """
        if self.service.is_running():
            try:
                os.kill(self.service.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout_s
            while self.service.is_running() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.service.stop(1.0)


def find_bin_dir() -> Path:
    """``$MM_PG_BIN`` or the newest ``/usr/lib/postgresql/<major>/bin`` (Debian), else PATH."""
    configured = os.environ.get("MM_PG_BIN")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for cand in candidates:
        if (cand / "postgres").exists() and (cand / "initdb").exists():
            return cand
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresSetupError("PostgreSQL server binaries not found: apt-get install postgresql (or set MM_PG_BIN)")


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MM_PG_RUN_AS", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise PostgresSetupError(f"running as root and there is no {name!r} user to run PostgreSQL as") from exc


def _as_user(argv: list[str], account: pwd.struct_passwd | None) -> list[str]:
    if account is None:
        return argv
    # --pdeathsig keep: the kernel clears the parent-death signal that LocalService.start sets for
    # tests when the uid changes, so a killed test run left its PostgreSQL running (seen after a
    # rehearsal was stopped, 2026-12-04); setpriv sets it again after the change.
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
            "--pdeathsig", "keep", *argv]


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    user: str = DEFAULT_USER,
    database: str = DEFAULT_DATABASE,
    detach: bool = False,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    state_file: Path | None = None,
) -> LocalPostgres:
    """Initialise (first time) and start a cluster under ``data_dir``; create ``database``.

    ``port=None`` picks a free port. Reuses an initialised cluster. Returns once the database
    accepts queries; raises :class:`PostgresSetupError` with the log tail otherwise.
    """
    bin_dir = find_bin_dir()
    account = _run_as()
    data_dir = data_dir.resolve()
    port = port or free_port()
    if port_is_open(LOOPBACK, port):  # before anything is created (as root: a folder in the temp dir)
        raise PostgresSetupError(f"port {LOOPBACK}:{port} is already in use")
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = _cluster_dir(data_dir, account)
    log_path = data_dir / "postgres.log"

    initdb_log = data_dir / "initdb.log"
    done = cluster / INITDB_DONE
    if (cluster / "PG_VERSION").exists() and not done.exists() and not initdb_log.exists():
        # initdb writes PG_VERSION first; INITDB_DONE is written once it succeeded (and, by the
        # releases before it, initdb.log once it returned). A cluster with neither is one whose
        # initdb was killed, which every later start took for ready and then failed on with a
        # FATAL that named no cause (a newcomer review, 2026-12-07).
        print(f"postgres: {cluster} was left half-initialised (initdb did not finish); initialising it again", file=sys.stderr)
        for child in cluster.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    if not (cluster / "PG_VERSION").exists():
        initdb_log.unlink(missing_ok=True)
        cmd = [str(bin_dir / "initdb"), "-D", str(cluster), "-U", user, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]
        result = subprocess.run(_as_user(cmd, account), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # Not initdb.log, which older releases took for a finished initdb: one killed (OOM)
            # returns too, and left PG_VERSION behind (a review, 2026-12-07).
            (data_dir / "initdb.failed.log").write_text(result.stdout + result.stderr)
            raise PostgresSetupError(f"initdb failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
        initdb_log.write_text(result.stdout + result.stderr)
        done.write_text("initdb finished\n")

    argv = [
        str(bin_dir / "postgres"), "-D", str(cluster), "-p", str(port),
        "-c", f"listen_addresses={LOOPBACK}",
        "-c", "unix_socket_directories=",
        # A throwaway dev/test cluster on a shared 2-core box: durability is not the point.
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "shared_buffers=64MB", "-c", "max_connections=50",
    ]  # fmt: skip
    service = LocalService.start(
        SERVICE_NAME,
        _as_user(argv, account),
        log_path,
        ports={"postgres": port},
        dirs={"data": str(data_dir), "cluster": str(cluster)},
        info={"user": user, "database": database},
        marker=str(cluster),
        detach=detach,
        state_file=state_file,
    )
    with record_while_starting(service, state_file):  # also when a signal comes before await_ready's own guard
        server = LocalPostgres(service=service, port=port, user=user, database=database, data_dir=data_dir)
        server.await_ready(startup_timeout_s, PostgresSetupError, ready=lambda: _create_database(server, startup_timeout_s))
    return server


# Written into the cluster once initdb succeeded: a cluster without it (and without the initdb.log
# older releases wrote) is half-initialised. PostgreSQL ignores files it does not know there.
INITDB_DONE = "mm-initdb-done"


def _cluster_dir(data_dir: Path, account: pwd.struct_passwd | None) -> Path:
    """Where the cluster lives: ``data_dir/cluster``, or a temp dir owned by ``account`` as root.

    The temp location is remembered in ``data_dir/cluster.path`` so a restart reuses it. The
    pointer is replaced whole (a reader never sees it empty), and one that does not name a
    ``mm-postgres-*`` folder of the temp dir is never used: an empty pointer read as ``Path("")``
    is the working directory, which ``down`` would then delete (CI, 2026-12-04).
    """
    if account is None:
        return data_dir / "cluster"
    pointer = data_dir / "cluster.path"
    remembered = temp_cluster_named_in(data_dir)
    if remembered is not None and remembered.is_dir():
        return remembered
    cluster = Path(tempfile.mkdtemp(prefix=TEMP_CLUSTER_PREFIX))
    os.chown(cluster, account.pw_uid, account.pw_gid)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{cluster}\n")
    os.replace(tmp, pointer)
    return cluster


def temp_cluster_named_in(data_dir: Path) -> Path | None:
    """The cluster ``data_dir/cluster.path`` names, if it is a ``mm-postgres-*`` folder directly in
    the temp dir (or will be one: it may not exist yet); None for a missing, empty or foreign pointer."""
    pointer = data_dir / "cluster.path"
    try:
        named = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    cluster = Path(named)
    temp = Path(tempfile.gettempdir()).resolve()
    if not named or not cluster.is_absolute() or cluster.is_symlink():
        return None
    if cluster.parent.resolve() != temp or not cluster.name.startswith(TEMP_CLUSTER_PREFIX):
        return None
    return cluster


def _create_database(server: LocalPostgres, timeout_s: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # The server accepts TCP a moment before it accepts logins ("starting up").
            with psycopg.connect(host=LOOPBACK, port=server.port, user=server.user, dbname="postgres", autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (server.database,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{server.database}"')
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline or not server.is_running():
                raise PostgresSetupError(f"postgres on port {server.port} refused logins: {exc}\n{log_tail(server.service.log_path)}") from exc
            time.sleep(0.2)


@contextmanager
def temporary_database(admin_url: str) -> Iterator[str]:
    """Create an empty database next to ``admin_url``'s, yield its URL, drop it on exit (tests)."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    base = sa.make_url(admin_url)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def remove_temp_cluster(data_dir: Path) -> Path | None:
    """Delete the cluster that, as root, lives outside ``data_dir`` (see :func:`_cluster_dir`),
    so that ``make clean`` (``rm -rf .run``) does not leave it in the temp dir for good.

    Only a ``mm-postgres-*`` folder directly in the temp dir, named by ``cluster.path``, with no
    live server on it; returns what was deleted.
    """
    cluster = temp_cluster_named_in(data_dir)
    if cluster is None or not cluster.is_dir():
        return None
    with suppress(OSError, ValueError):
        if pid_alive(int((cluster / "postmaster.pid").read_text().split()[0])):
            return None  # still running: `postgres down` first
    shutil.rmtree(cluster, ignore_errors=True)
    return cluster


def remove_cluster(server: LocalPostgres) -> None:
    """Delete the cluster files after stop (the root case leaves them outside ``data_dir``).

    Only ``data_dir/cluster`` or the temp cluster ``cluster.path`` names: a state file that
    names anything else (edited, or written by an older version) deletes nothing."""
    cluster = Path(server.service.dirs.get("cluster", server.data_dir / "cluster"))
    if cluster in (server.data_dir / "cluster", temp_cluster_named_in(server.data_dir)):
        shutil.rmtree(cluster, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    def add_up_arguments(up: argparse.ArgumentParser) -> None:
        up.add_argument("--port", type=port_arg, default=5432, help="0: any free port (default 5432)")
        up.add_argument("--data-dir", type=Path, default=default_run_dir() / "postgres")

    def fast_stop(service: LocalService) -> None:
        with suppress(ProcessLookupError):  # it exited since the check
            os.kill(service.pid, signal.SIGINT)  # fast shutdown, see LocalPostgres.stop
        service.stop(30.0)

    return service_cli(
        "postgres", argv, default_run_dir() / "postgres.json",
        add_up_arguments=add_up_arguments,
        start=lambda args, state_file: start_postgres(args.data_dir, args.port, detach=True, state_file=state_file),
        address=lambda service: (
            f"postgresql+psycopg://{service.info['user']}@{LOOPBACK}:{service.ports['postgres']}/{service.info['database']}"
        ),
        stop=fast_stop,
        setup_errors=(PostgresSetupError,),
    )


if __name__ == "__main__":
    sys.exit(main())
