"""The README's quick start, run as a user would: in a fresh clone, the same commands, and the
output the README shows.

Two concessions to the shared test machine, both about installing rather than behaviour:

* the clone reuses this checkout's ``.venv`` through a symlink instead of a full reinstall
  (minutes of pip), and ``make`` gets ``-o .venv/.installed-demo`` so it does not reinstall
  into that shared environment because the fresh clone's Makefile is newer than the stamp;
* ``PYTHONPATH`` points at the clone, so the venv's console script (an editable install of
  this checkout) imports the clone's code, which is what a user of the clone would run.

The output goes to a pipe, so the commands run with rich's terminal override
(``TTY_COMPATIBLE=1``, ``TTY_INTERACTIVE=1``): rich draws the stream's live progress line only on a
terminal, and on a pipe prints nothing of it. The escape sequences are dropped before matching, and
each redraw of a live line (``\r``) reads as a line of its own.

The clone is of the committed HEAD (``git clone``), so uncommitted edits are not tested here.
The demo starts its own broker under the clone's ``.run/`` and the quick start's last command
(``make kafka-down``) stops it; the fixture stops it too if a step failed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.terminal import PROGRESS, TERMINAL_ENV, WARNING_LINE, terminal_text

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# The demo, a Spark job and the report: minutes on 2 cores, more than the suite's 600 s default.
pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark, pytest.mark.ml, pytest.mark.timeout(2400)]


def quickstart() -> tuple[list[str], list[str]]:
    """(commands of the ```bash block, expected lines of the ```text block) of '## Quick start'."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    expected = re.search(r"```text\n(.*?)```", section, re.S).group(1).rstrip("\n").splitlines()
    return commands, expected


def _pattern(line: str) -> re.Pattern[str]:
    """A README output line as a regex: <placeholders> match anything without spaces, a trailing
    ' ...' means "the line goes on", whitespace runs are flexible (rich pads table cells)."""
    prefix = line.endswith(" ...")
    text = (line[:-4] if prefix else line).strip()
    body = ""
    for part in re.split(r"(<[a-z]+>)", text):
        if re.fullmatch(r"<[a-z]+>", part):
            body += r"\S+?"
        elif part:
            words = r"\s+".join(map(re.escape, part.split()))
            body += (r"\s+" if part[0].isspace() else "") + words + (r"\s+" if part[-1].isspace() else "")
    return re.compile(r"^\s*" + body + (r"(\s.*)?$" if prefix else r"\s*$"))


def assert_lines_in_order(output: str, expected: list[str]) -> None:
    lines = output.splitlines()
    at = 0
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = _pattern(want)
        for i in range(at, len(lines)):
            if pattern.match(lines[i]):
                at = i + 1
                break
        else:
            raise AssertionError(f"README line not found (in order) in the output: {want!r}\n--- output tail:\n" +
                                 "\n".join(lines[-60:]))


def test_readme_output_patterns_match_themselves() -> None:
    """The matcher itself: placeholders, prefixes and table padding."""
    assert _pattern("Kafka is still running at 127.0.0.1:<port>: `make kafka-down` stops it.").match(
        "Kafka is still running at 127.0.0.1:40123: `make kafka-down` stops it.")
    assert _pattern("kafka: stopped (pid <pid>); data kept in <path>").match(
        "kafka: stopped (pid 4242); data kept in /tmp/x/.run/kafka/data")
    assert _pattern("│ jailbreak      │       13 │ ...").match("│ jailbreak      │       13 │     139 │   0.09 │")
    assert not _pattern("│ jailbreak      │       13 │ ...").match("│ jailbreak      │       12 │     139 │")
    assert _pattern("│ jailbreak      │ <n> │ ...").match("│ jailbreak      │       15 │     144 │")
    assert not _pattern("│ jailbreak      │ <n> │ ...").match("│ misinformation │       15 │     144 │")


@pytest.fixture()
def clone(tmp_path: Path):  # noqa: ANN201 - generator fixture
    if not (ROOT / ".venv" / ".installed-demo").exists():
        pytest.skip("run `make demo` or `make setup` first: the clone reuses this checkout's .venv")
    target = tmp_path / "misuse-monitor"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, timeout=120)
    (target / ".venv").symlink_to(ROOT / ".venv")
    yield target
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pipeline.localinfra.kafka", "down"],
                   cwd=target, capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(target)})


def test_quickstart_in_a_fresh_clone(clone: Path) -> None:
    commands, expected = quickstart()
    assert commands[0] == "make demo" and commands[-1] == "make kafka-down"
    script = "\n".join(
        "make -o .venv/.installed-demo demo" if c == "make demo" else c for c in commands
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(PYTHONPATH=str(clone), **TERMINAL_ENV)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=2300,
    )
    output = terminal_text(result.stdout)
    assert result.returncode == 0, output[-6000:]
    assert_lines_in_order(output, expected)
    assert not re.search(r"^(.* )?(ERROR|Traceback)", output, re.M), "the quick start printed an error"

    # `make demo` is everything up to its last line, the "Kafka is still running" hint.
    demo = output.split("`make kafka-down` stops it.", 1)[0]
    assert demo != output, "the demo's last line is missing"
    assert not WARNING_LINE.search(demo), "warning lines in the demo:\n" + "\n".join(
        m.group(0) for m in WARNING_LINE.finditer(demo))
    frames = [int(m.group(1).replace(",", "")) for m in PROGRESS.finditer(demo)]
    consumed = int(re.search(r"records consumed\s*│\s*(\d+)", demo).group(1))
    assert frames and frames[-1] == consumed, f"progress line records {sorted(set(frames))}, stream consumed {consumed}"
    report = (clone / "data/demo/report.html").read_text()
    assert "<h2>Accuracy against labels</h2>" in report and "800 labelled records have a verdict" in report
