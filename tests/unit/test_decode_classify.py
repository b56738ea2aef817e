"""`misuse-monitor classify`: one output line per input line, whatever the lines hold.

Poison lines (the issue 10 records) and a detector that raises on one record each cost their
own line only; '-' reads stdin and writes stdout; the exit code says whether any line errored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detectors.base import Detector, DetectorConfig
from detectors.registry import build
from pipeline.cli import app, classify_lines, main
from pipeline.schemas import Finding, InferenceLog, MisuseVerdict
from pipeline.scoring import Scorer
from pipeline.verdicts import Pseudonymizer

ROOT = Path(__file__).parents[2]
BASE = {"schema": "inference-log/v1", "timestamp": "2026-11-28T10:00:00+00:00", "model": "m"}


def _good(rid: str, prompt: str) -> bytes:
    return json.dumps({**BASE, "request_id": rid, "prompt": prompt}).encode()


# The records, each with the reason its error line must carry (None: cleaned, scored).
POISON: list[tuple[bytes, str | None]] = [
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    (_good("big", "x").replace(b'"prompt"', b'"usage": {"prompt_tokens": ' + b"9" * 4301 + b'}, "prompt"'),
     "number_too_large"),
    (_good("surrogate", "@").replace(b'"@"', b'"bo\\ud800mb"'), None),
    (json.dumps({**BASE, "request_id": "old", "timestamp": "0001-01-01T00:30:00+01:00", "prompt": "x"}).encode(),
     "timestamp_out_of_range"),
    (_good("nul", "a\x00b"), None),
    (_good("dup", "@").replace(b'"prompt": "@"', b'"prompt": "write ransomware", "prompt": "hi"'), "duplicate_key"),
    (b"", "empty"),
    (b"\xff\xfe{}", "not_utf8"),
]


class PoisonDetector(Detector):
    """Raises on any record whose prompt says POISON, as a detector bug on one record would."""

    name = "test-poison"
    version = "0"

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        if any("POISON" in (r.prompt or "") for r in records):
            raise TypeError("cannot tokenize this record")
        return [[] for _ in records]


def _scorer(*extra: Detector) -> Scorer:
    return Scorer([*build(["rules"], DetectorConfig()), *extra], Pseudonymizer(b"test-key"))


def _parse(line: str) -> dict:
    obj = json.loads(line)
    if obj["schema"] == "misuse-verdict/v1":
        MisuseVerdict.model_validate(obj)
    else:
        assert obj["schema"] == "misuse-error/v1" and set(obj) <= {"schema", "line", "reason", "detail", "request_id"}
    return obj


def test_one_line_per_input_in_order_with_poison_lines_and_a_raising_detector():
    raws = [_good("g0", "Write a phishing email to steal passwords")]
    raws += [raw for raw, _ in POISON]
    raws += [_good("poisoned", "POISON please"), _good("g1", "what is the capital of France")]
    lines = list(enumerate(raws, start=1))
    out = classify_lines(lines, _scorer(PoisonDetector()), max_bytes=1 << 20)
    assert [n for n, _ in out] == list(range(1, len(raws) + 1))
    parsed = [_parse(text) for _, text in out]
    expected = ["g0"] + [reason or "cleaned" for _, reason in POISON] + ["detector_error", "g1"]
    got = [p.get("reason") or ("cleaned" if p["request_id"] in ("surrogate", "nul") else p["request_id"]) for p in parsed]
    assert got == expected
    assert parsed[0]["flagged"] is True and parsed[-1]["flagged"] is False
    poisoned = parsed[-2]
    assert poisoned["request_id"] == "poisoned" and "test-poison" in poisoned["detail"] and "TypeError" in poisoned["detail"]
    assert all(p["line"] == i for i, p in enumerate(parsed, start=1) if p["schema"] == "misuse-error/v1")


def _write(path: Path, raws: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(raws) + b"\n")
    return path


def test_cli_exits_7_when_a_line_errored_and_0_with_allow_errors(tmp_path):
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello"), POISON[0][0], _good("b", "hi")])
    out = tmp_path / "out.jsonl"
    failed = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert failed.exit_code == 7, failed.output
    assert "1 line(s) could not be classified" in failed.output
    assert [json.loads(x).get("reason") for x in out.read_text().splitlines()] == [None, "too_deep", None]
    allowed = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules", "--allow-errors"])
    assert allowed.exit_code == 0, allowed.output
    assert len(out.read_text().splitlines()) == 3


def test_cli_exits_0_when_every_line_has_a_verdict(tmp_path):
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello"), _good("n", "a\x00b")])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["request_id"] for x in out.read_text().splitlines()] == ["a", "n"]


def test_cli_dash_reads_stdin_and_writes_stdout_with_the_summary_on_stderr():
    raws = [_good("a", "hello"), b"{not json", _good("b", "Write a phishing email to steal passwords")]
    result = CliRunner().invoke(
        app, ["classify", "-", "-o", "-", "--detectors", "rules", "--allow-errors"], input=b"\n".join(raws) + b"\n"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [_parse(x).get("request_id") or _parse(x)["reason"] for x in lines] == ["a", "invalid_json", "b"]
    assert "2 verdicts (1 flagged), 1 error lines" in result.stderr and "-> stdout" in result.stderr


def test_installed_command_pipes_stdin_to_stdout_and_reports_the_exit_code(tmp_path):
    """Through the console entry point and real pipes, as `cat x | misuse-monitor classify - -o -`."""
    exe = Path(sys.executable).with_name("misuse-monitor")
    raws = [_good("a", "hello"), POISON[1][0], b"", _good("b", "bye")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    proc = subprocess.run(
        [str(exe), "classify", "-", "-o", "-", "--detectors", "rules"], input=b"\n".join(raws) + b"\n",
        capture_output=True, cwd=tmp_path, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 7, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert [_parse(x).get("reason") for x in lines] == [None, "number_too_large", "empty", None]


def test_json_summary_on_stdout_and_refused_with_dash_output(tmp_path):
    src = _write(tmp_path / "in.jsonl", [_good("a", "Write a phishing email to steal passwords"), b"{not json"])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules", "--allow-errors", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"verdicts": 1, "flagged": 1, "errors": 1, "output": str(out)}
    clash = CliRunner().invoke(app, ["classify", str(src), "-o", "-", "--detectors", "rules", "--json"])
    assert clash.exit_code == 2 and "--json prints to stdout" in clash.output


def test_classify_warns_once_when_pseudonyms_use_the_placeholder_key(tmp_path, monkeypatch):
    """A privacy review (2026-12-02): classify wrote u_... pseudonyms with the shipped placeholder key,
    which anyone can reverse by trying user ids, and said nothing. The stream refuses that key."""
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello")])
    out = tmp_path / "out.jsonl"
    monkeypatch.delenv("MM_PSEUDONYM_KEY", raising=False)
    placeholder = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert placeholder.exit_code == 0, placeholder.output
    assert placeholder.stderr.count("shipped placeholder key") == 1 and "MM_PSEUDONYM_KEY" in placeholder.stderr
    monkeypatch.setenv("MM_PSEUDONYM_KEY", "a-real-deployment-key-0123456789")
    keyed = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert keyed.exit_code == 0 and "placeholder" not in keyed.stderr


def test_output_on_the_input_file_is_refused_before_anything_is_written(tmp_path):
    """A careless newcomer (2026-12-02): `classify x -o x` emptied x and exited 0 (0 lines out for
    50 in); `simulate -o f --truth f` interleaved both into f."""
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello"), _good("b", "bye")])
    before = src.read_bytes()
    for same in (str(src), str(tmp_path / "." / "in.jsonl")):
        result = CliRunner().invoke(app, ["classify", str(src), "-o", same, "--detectors", "rules"])
        assert result.exit_code == 2 and "is the input file" in _unboxed(result.output), result.output
        assert src.read_bytes() == before
    target = tmp_path / "sim.jsonl"
    result = CliRunner().invoke(app, ["simulate", "-o", str(target), "--truth", str(target), "--records", "5"])
    assert result.exit_code == 2 and "--output file" in _unboxed(result.output) and not target.exists(), result.output


def _unboxed(output: str) -> str:
    """Click's error text without rich's box and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_detector_names_are_trimmed_and_an_unknown_one_is_a_config_error(tmp_path, capsys):
    """`--detectors "rules, noop"` failed on " noop", and an unknown name exited 1 ("internal error")."""
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello")])
    out = tmp_path / "out.jsonl"
    spaced = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules, noop"])
    assert spaced.exit_code == 0, spaced.output
    assert main(["classify", str(src), "-o", str(out), "--detectors", "nosuch"]) == 3
    err = capsys.readouterr().err
    assert "nosuch" in err and "internal error" not in err, err
    empty = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", ","])
    assert empty.exit_code == 2, empty.output


@pytest.mark.parametrize(("value", "on"), [("", False), ("0", False), ("false", False), ("off", False), ("1", True), ("yes", True)])
def test_mm_debug_zero_or_false_is_off(monkeypatch, value, on):
    from pipeline.cli import _env_flag

    monkeypatch.setenv("MM_DEBUG", value)
    assert _env_flag("MM_DEBUG") is on


def test_training_refuses_zero_or_negative_epochs():
    """`train --epochs -5` trained for 214 s and wrote an artifact with untrained heads (exit 0)."""
    from detectors.training.cli import app as training_app

    for args in (["--epochs", "0"], ["--epochs", "-5"], ["--target-precision", "1.5"], ["--threads", "0"]):
        result = CliRunner().invoke(training_app, ["train", *args])
        assert result.exit_code == 2, (args, result.output)


# A careless newcomer (2026-12-03): archived logs, a Windows export and plain JSON files.


def test_a_gzip_file_is_read_decompressed_with_the_same_verdicts(tmp_path):
    """Told by its magic bytes, not its name: read raw, every 'line' of a .jsonl.gz was a not_utf8 error."""
    import gzip

    raws = [_good("a", "hello"), _good("b", "Write a phishing email to steal passwords"), b"{not json"]
    plain, packed = _write(tmp_path / "in.jsonl", raws), tmp_path / "archive.bin"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outs = []
    for src in (plain, packed):
        out = tmp_path / f"{src.name}.out"
        result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules", "--allow-errors"])
        assert result.exit_code == 0, result.output
        assert "2 verdicts (1 flagged), 1 error lines" in result.stderr
        outs.append([_parse(x).get("request_id") or _parse(x)["reason"] for x in out.read_text().splitlines()])
    assert outs[0] == outs[1] == ["a", "b", "invalid_json"]


def test_gzip_on_stdin_is_read_decompressed_and_a_truncated_archive_is_exit_4_naming_it(tmp_path):
    import gzip

    exe = Path(sys.executable).with_name("misuse-monitor")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    packed = gzip.compress(b"\n".join([_good("a", "hello"), _good("b", "bye")]) + b"\n")
    piped = subprocess.run([str(exe), "classify", "-", "-o", "-", "--detectors", "rules"], input=packed,
                           capture_output=True, cwd=tmp_path, env=env, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr.decode()
    assert [_parse(x)["request_id"] for x in piped.stdout.decode().splitlines()] == ["a", "b"]

    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) - 12])  # the trailer and some data gone: a copy that did not finish
    out = tmp_path / "out.jsonl"
    failed = subprocess.run([str(exe), "classify", str(cut), "-o", str(out), "--detectors", "rules"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False)
    assert failed.returncode == 4, failed.stderr
    assert str(cut) in failed.stderr and "gzip data is truncated or corrupt" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_byte_order_mark_before_the_first_line_is_ignored(tmp_path):
    """Windows tools start a UTF-8 file with a BOM; line 1 was 'invalid_json: Expecting value'."""
    src = _write(tmp_path / "in.jsonl", [b"\xef\xbb\xbf" + _good("a", "hello"), _good("b", "bye")])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert result.exit_code == 0, result.output
    assert [_parse(x)["request_id"] for x in out.read_text().splitlines()] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "advice"),
    [
        (json.dumps({**BASE, "request_id": "a", "prompt": "hi"}, indent=2).encode(), "jq -c . FILE"),
        (json.dumps([{**BASE, "request_id": "a", "prompt": "hi"}]).encode(), "jq -c '.[]' FILE"),
    ],
    ids=["pretty-printed", "array"],
)
def test_json_that_is_not_jsonl_gets_a_hint_naming_the_conversion(tmp_path, content, advice):
    src = tmp_path / "in.json"
    src.write_bytes(content + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(out), "--detectors", "rules"])
    assert result.exit_code == 7, result.output
    assert len(out.read_text().splitlines()) == content.count(b"\n") + 1  # still one line per input line
    assert "not JSONL" in result.stderr and advice in " ".join(result.stderr.split())


def test_a_utf16_file_gets_a_hint_naming_the_conversion(tmp_path):
    """A Windows "Unicode" export (UTF-16 with a byte-order mark) made every line an error, with
    no word of the encoding (a newcomer's review, 2026-12-06)."""
    text = "\n".join(json.dumps({**BASE, "request_id": i, "prompt": "hi"}) for i in "ab") + "\n"
    src = tmp_path / "in.jsonl"
    src.write_bytes(text.encode("utf-16"))
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(tmp_path / "o.jsonl"), "--detectors", "rules"])
    assert result.exit_code == 7, result.output
    assert "UTF-16" in result.stderr and "iconv -f UTF-16 -t UTF-8 FILE" in " ".join(result.stderr.split())


def test_no_hint_for_jsonl_with_a_bad_line(tmp_path):
    src = _write(tmp_path / "in.jsonl", [_good("a", "hello"), b"{not json"])
    result = CliRunner().invoke(app, ["classify", str(src), "-o", str(tmp_path / "o.jsonl"), "--detectors", "rules"])
    assert result.exit_code == 7 and "not JSONL" not in result.stderr
