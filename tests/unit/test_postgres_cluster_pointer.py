"""As root, PostgreSQL's cluster lives in a temp folder that ``.run/postgres/cluster.path`` names.

CI failed on 2026-12-04 (stop 32: 160 failed, then ``.venv/bin/python`` was gone): the pointer
was written in place, so a reader could find it empty, and ``Path("")`` is the working
directory. A test read it in that moment, took the working directory for the cluster, SIGKILLed
every process whose command line held a "." (the other worker's PostgreSQL among them) and
deleted the checkout with ``rmtree``. The same empty pointer would have made ``up`` start a
cluster in the working directory and ``remove_cluster`` delete it. These tests need no server.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from pipeline.localinfra.base import LocalService
from pipeline.localinfra.postgres import (
    TEMP_CLUSTER_PREFIX,
    LocalPostgres,
    _cluster_dir,
    remove_cluster,
    remove_temp_cluster,
    temp_cluster_named_in,
)

ME = pwd.getpwuid(os.getuid())  # _cluster_dir chowns the temp folder to the account; ours is allowed


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "postgres"
    path.mkdir(parents=True)
    return path


@pytest.fixture()
def precious(tmp_path: Path) -> Path:
    """A folder with a file in it that nothing here may delete."""
    path = tmp_path / "precious"
    path.mkdir()
    (path / "keep.txt").write_text("keep")
    return path


def _temp_cluster() -> Path:
    return Path(tempfile.mkdtemp(prefix=TEMP_CLUSTER_PREFIX))


@pytest.mark.parametrize("text", ["", "\n", "   ", "."], ids=["empty", "newline", "blanks", "dot"])
def test_an_empty_or_relative_pointer_names_no_cluster_and_up_makes_a_new_one(text: str, data_dir: Path,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               precious: Path) -> None:
    monkeypatch.chdir(precious)  # where Path("") would have pointed
    (data_dir / "cluster.path").write_text(text)
    assert temp_cluster_named_in(data_dir) is None
    cluster = _cluster_dir(data_dir, ME)
    try:
        assert cluster.is_absolute() and cluster != Path.cwd() and cluster.name.startswith(TEMP_CLUSTER_PREFIX)
        assert cluster.parent.resolve() == Path(tempfile.gettempdir()).resolve()
        assert temp_cluster_named_in(data_dir) == cluster  # the pointer now names it
        assert not list(data_dir.glob(".cluster.path.*"))  # no temp file left beside it
        assert remove_temp_cluster(data_dir) == cluster and not cluster.exists()
    finally:
        cluster.rmdir() if cluster.is_dir() and cluster.name.startswith(TEMP_CLUSTER_PREFIX) else None
    assert (precious / "keep.txt").read_text() == "keep"


def test_a_pointer_to_anything_but_a_temp_cluster_is_never_used_or_deleted(data_dir: Path, precious: Path,
                                                                          tmp_path: Path) -> None:
    real = _temp_cluster()
    link = Path(tempfile.gettempdir()) / f"{TEMP_CLUSTER_PREFIX}link-{os.getpid()}"
    link.symlink_to(precious)
    outside = tmp_path / f"{TEMP_CLUSTER_PREFIX}elsewhere"  # the right name, the wrong folder
    outside.mkdir()
    try:
        for named in (precious, Path("/"), outside, link, Path(f"{real}/../{precious.name}"),
                      Path(tempfile.gettempdir()) / "not-ours"):
            (data_dir / "cluster.path").write_text(f"{named}\n")
            assert temp_cluster_named_in(data_dir) is None, named
            assert remove_temp_cluster(data_dir) is None, named
        (data_dir / "cluster.path").write_text(f"{real}\n")
        assert temp_cluster_named_in(data_dir) == real and _cluster_dir(data_dir, ME) == real  # reused
        assert (precious / "keep.txt").exists() and outside.is_dir()
    finally:
        link.unlink()
        real.rmdir()


def test_remove_cluster_deletes_only_its_own_cluster(data_dir: Path, precious: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file's ``dirs["cluster"]`` naming another folder (edited by hand, or written while the
    pointer was empty) deletes nothing; the cluster it should name is deleted."""

    def server(cluster: Path) -> LocalPostgres:
        service = LocalService(name="postgres", pid=0, log_path=data_dir / "postgres.log", dirs={"cluster": str(cluster)})
        return LocalPostgres(service=service, port=5432, user="misuse", database="misuse", data_dir=data_dir)

    monkeypatch.chdir(precious)  # so that a "." that slipped through could only reach this folder
    for foreign in (precious, Path("."), Path("")):
        remove_cluster(server(foreign))
    assert (precious / "keep.txt").read_text() == "keep"

    own = data_dir / "cluster"  # not root: the cluster is inside data_dir
    own.mkdir()
    remove_cluster(server(own))
    assert not own.exists()

    temp = _temp_cluster()  # root: the temp folder the pointer names
    (data_dir / "cluster.path").write_text(f"{temp}\n")
    remove_cluster(server(temp))
    assert not temp.exists()
