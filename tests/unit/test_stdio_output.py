"""``open_output``: what ``classify -o`` and ``simulate -o/--truth`` write through. A regular
file is replaced whole when the command succeeds and left as it was when it does not; a kill
or an error never leaves a shorter file that looks finished (2026-12-04)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.stdio import open_output


class Boom(RuntimeError):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "verdicts.jsonl"
    out.write_text("the previous run's 3 lines\n")
    with pytest.raises(Boom), open_output(out) as fh:
        fh.write('{"half": "of a run"}\n')
        raise Boom
    assert out.read_text() == "the previous run's 3 lines\n"
    assert _leftovers(tmp_path) == []


def test_a_successful_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "verdicts.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    with open_output(out) as fh:
        fh.write("new\n")
    assert out.read_text() == "new\n" and stat.S_IMODE(out.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.jsonl"
    with open_output(fresh) as fh:
        fh.write("x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # as a plain open() creates it
    assert _leftovers(tmp_path) == []


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with open_output(link) as fh:
        fh.write("new\n")
    assert link.is_symlink() and real.read_text() == "new\n"


def test_dev_null_and_a_fifo_are_written_in_place(tmp_path: Path) -> None:
    with open_output(Path(os.devnull)) as fh:
        fh.write("discarded\n")
    assert Path(os.devnull).is_char_device()  # not replaced by a regular file
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", f"print(open({str(fifo)!r}).read(), end='')"],
                              stdout=subprocess.PIPE, text=True)
    with open_output(fifo) as fh:
        fh.write("through the pipe\n")
    assert reader.communicate(timeout=30)[0] == "through the pipe\n"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def _write_then_signal(out: Path, signal_name: str, prelude: str = "", after: str = "") -> subprocess.CompletedProcess:
    """A process that finds ``out`` complete, writes part of a new one through open_output, then
    sends itself ``signal_name`` (``prelude`` runs first, ``after`` inside the block after it)."""
    out.write_text("complete\n")
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from pipeline.stdio import open_output\n"
        f"{prelude}"
        "with open_output(Path(sys.argv[1])) as fh:\n"
        "    fh.write('partial\\n'); fh.flush()\n"
        f"    os.kill(os.getpid(), signal.{signal_name})\n"
        f"{after}"
    )
    return subprocess.run([sys.executable, "-c", code, str(out)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("handler", ["default", "its-own"])
def test_sigterm_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path: Path, handler: str) -> None:
    """A hostile review (2026-12-07): SIGTERM (timeout, systemd, Kubernetes) left the hidden
    temporary file behind (only Ctrl-C went through the cleanup). A command with its own SIGTERM
    handler keeps it."""
    out = tmp_path / "out.jsonl"
    prelude = "signal.signal(signal.SIGTERM, lambda *_: print('own handler', flush=True))\n" if handler == "its-own" else ""
    done = _write_then_signal(out, "SIGTERM", prelude=prelude, after="    fh.write('after the signal\\n')\n")
    if handler == "default":
        assert done.returncode == 143, done.stderr
        assert out.read_text() == "complete\n"
    else:  # its handler ran, and the write went on to the end
        assert (done.returncode, done.stdout) == (0, "own handler\n"), done.stderr
        assert out.read_text() == "partial\nafter the signal\n"
    assert _leftovers(tmp_path) == []


def test_a_killed_writer_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = _write_then_signal(out, "SIGKILL")
    assert done.returncode == -9, done.stderr
    assert out.read_text() == "complete\n"
    (left,) = _leftovers(tmp_path)  # what a kill -9 cannot clean up: hidden, and named after the output
    assert left.startswith(".out.jsonl.") and left.split(".")[-2].isdigit(), left


def test_a_name_ending_in_gz_is_written_compressed_and_read_back_by_the_commands(tmp_path: Path) -> None:
    """`classify -o x.jsonl.gz` and `simulate -o x.jsonl.gz` wrote plain text under a .gz name
    (a hostile review, 2026-12-07), which every reader of .gz then refused as corrupt."""
    import gzip

    from pipeline.stdio import open_input

    out = tmp_path / "verdicts.jsonl.gz"
    with open_output(out, private=True) as fh:
        fh.write('{"a": 1}\n{"b": "é"}\n')
    assert gzip.decompress(out.read_bytes()) == '{"a": 1}\n{"b": "é"}\n'.encode()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and _leftovers(tmp_path) == []
    with open_input(out) as lines:
        assert [line.rstrip(b"\n") for line in lines] == [b'{"a": 1}', '{"b": "é"}'.encode()]
    with pytest.raises(Boom), open_output(out) as fh:  # a failed run leaves it as it was
        fh.write("half\n")
        raise Boom
    assert gzip.decompress(out.read_bytes()).startswith(b'{"a": 1}') and _leftovers(tmp_path) == []
