"""``misuse-monitor lake prune|keygen`` and ``misuse-monitor pseudonym resolve``.

Pseudonyms are HMAC-SHA256 of the raw id under ``pseudonym_key``: one-way by design, so no
table maps them back and none is kept. Linking a pseudonym to a person therefore takes two
things held by different people: the key (the operators of misuse-monitor) and a list of
candidate raw ids (the identity system of the tenant, e.g. the accounts active that day).
``pseudonym resolve`` hashes the candidates and prints the ones that match, and appends one
audit line per run (who, when, why, which pseudonyms, how many candidates and matches; never
the raw ids) to an append-only file, before it prints anything.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from pipeline.stdio import is_dash, open_private, output_path_problem, path_or_dash

log = logging.getLogger(__name__)

lake_app = typer.Typer(help="Retention and keys of the Parquet lake.", no_args_is_help=True)
pseudonym_app = typer.Typer(help="Link pseudonymous user ids back, with the key and an audit trail.", no_args_is_help=True)



@pseudonym_app.callback()
def _pseudonym() -> None:
    """Link pseudonymous user ids back, with the key and an audit trail (one command: resolve)."""


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")]
DEFAULT_AUDIT_LOG = Path("data/audit/pseudonym-resolve.jsonl")
_AGE = re.compile(r"^(\d+)([dh])$")


def parse_age(text: str) -> timedelta:
    """``30d`` or ``12h``."""
    m = _AGE.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not an age like 30d or 12h", param_hint="--older-than")
    n = int(m[1])
    if n < 1:  # as lake.retention_days: 0 deleted every file, those written a second ago too (a privacy review, 2026-12-07)
        raise typer.BadParameter(f"{text!r} would remove the whole lake; give an age of at least 1h", param_hint="--older-than")
    try:
        age = timedelta(days=n) if m[2] == "d" else timedelta(hours=n)
        _ = datetime.now(UTC) - age  # prune computes this cutoff: it must be a date (year 1 at the earliest)
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is too far back (the cutoff would be before year 1)", param_hint="--older-than") from None
    return age


@lake_app.command("prune")
def prune_command(
    older_than: Annotated[str | None, typer.Option(help="Age limit, e.g. 30d or 12h (default: lake.retention_days)")] = None,
    lake: Annotated[Path | None, typer.Option(help="Lake root (default: lake.path)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted, delete nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was (or would be) deleted as JSON on stdout")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete lake date partitions (and dead-letter files) older than the limit."""
    from pipeline.exits import InputError
    from pipeline.lake import PruneIncomplete, prune
    from pipeline.settings import load_settings

    settings = load_settings(config)
    root = lake or settings.lake.path
    # An empty age ("$AGE" with AGE unset) is an error, not the default: it deleted by
    # lake.retention_days what the caller meant to keep longer (a newcomer review, 2026-12-07).
    age = parse_age(older_than) if older_than is not None else timedelta(days=settings.lake.retention_days)
    if root.exists() and not root.is_dir():
        raise typer.BadParameter(f"'{root}' is a file, not a lake directory", param_hint="--lake")
    if not (root / "verdicts").is_dir() and not (root / "dead_letters").is_dir():
        # Not an error (a cron job may run before the first flush), but a mistyped path must
        # not read as a successful prune.
        typer.echo(f"misuse-monitor: warning: no lake under {root} (no verdicts/ or dead_letters/): nothing to prune",
                   err=True)
    incomplete: PruneIncomplete | None = None
    try:
        removed, skipped = prune(root, age, dry_run=dry_run), {}
    except PruneIncomplete as exc:  # the rest was pruned; report both, then fail
        incomplete, removed, skipped = exc, exc.removed, exc.skipped
    verb = "would delete" if dry_run else "deleted"
    if as_json:
        typer.echo(json.dumps({
            "dry_run": dry_run, "older_than_s": int(age.total_seconds()), "removed": [str(p) for p in removed],
            "skipped": {str(p): why for p, why in skipped.items()},
        }, sort_keys=True))
    else:
        for path in removed:
            typer.echo(f"{verb} {path}")
        for path, why in skipped.items():
            typer.echo(f"misuse-monitor: warning: skipped {path}: {why}", err=True)
        typer.echo(f"{verb} {len(removed)} partitions/files older than {age.days}d {age.seconds // 3600}h under {root}", err=True)
    if incomplete is not None:
        raise InputError(str(incomplete)) from incomplete


@lake_app.command("keygen")
def keygen_command() -> None:
    """Print a new random lake encryption key (set it as MM_LAKE__ENCRYPTION_KEY)."""
    from pipeline.privacy import TextCipher

    typer.echo(TextCipher.generate())


@pseudonym_app.command("resolve")
def resolve_command(
    pseudonyms: Annotated[list[str], typer.Argument(help="Pseudonyms to resolve (u_...)")],
    candidates: Annotated[
        Path, typer.Option(parser=path_or_dash, help="File of candidate raw user ids, one per line ('-': stdin)", show_default=False)
    ],
    reason: Annotated[str, typer.Option(help="Why (ticket or case id); written to the audit log", show_default=False)],
    audit_log: Annotated[Path, typer.Option(help="Append-only audit file (JSON lines)")] = DEFAULT_AUDIT_LOG,
    as_json: Annotated[bool, typer.Option("--json", help="Print {pseudonym: raw id} and the unresolved as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print ``pseudonym<TAB>raw id`` for each candidate whose keyed hash is one of PSEUDONYMS."""
    from pipeline.exits import ConfigError
    from pipeline.privacy import DEFAULT_PSEUDONYM_KEY
    from pipeline.settings import load_settings
    from pipeline.verdicts import PSEUDONYM, Pseudonymizer, ingested_user_id

    # Bad option and argument values are usage errors (exit 2, README's table); they were exit 4.
    if not reason.strip():
        raise typer.BadParameter("must say why (a ticket or case id)", param_hint="--reason")
    if is_dash(audit_log):  # it was opened as a file named "-" (a privacy review, 2026-12-07)
        raise typer.BadParameter("the audit log is a file; '-' is not one", param_hint="--audit-log")
    if problem := output_path_problem(audit_log, creates_folders=True):  # was "internal error: FileExistsError"
        raise typer.BadParameter(problem, param_hint="--audit-log")
    bad = [p for p in pseudonyms if not PSEUDONYM.fullmatch(p)]
    if bad:
        raise typer.BadParameter(f"not a pseudonym: {', '.join(bad)} (expected u_ and 20 hex digits)",
                                 param_hint="PSEUDONYMS")
    key = load_settings(config).pseudonym_key.get_secret_value()
    if key == DEFAULT_PSEUDONYM_KEY:
        raise ConfigError("pseudonym_key is the shipped placeholder; resolve needs the key the stream ran with")
    # utf-8-sig: a BOM (Excel, Notepad exports) would otherwise be part of the first id.
    lines = sys.stdin if is_dash(candidates) else candidates.open(encoding="utf-8-sig")
    pseudonymize = Pseudonymizer(key.encode("utf-8"))
    wanted = set(pseudonyms)
    matches: list[tuple[str, str]] = []
    as_sent: set[str] = set()
    count = 0
    with lines:
        for line in lines:
            raw = line.strip()  # CRLF line ends and padding are not part of an id
            if not raw:
                continue
            count += 1
            # Hashed as ingestion stores it: a raw id shaped like a pseudonym passed through the
            # Pseudonymizer unchanged and "resolved" to itself, audited as a match (a privacy
            # review, 2026-12-06). A record sent straight to Kafka with such an id keeps it as
            # sent: said, not counted.
            if raw in wanted:
                as_sent.add(raw)
            p = pseudonymize(ingested_user_id(raw))
            if p in wanted:
                matches.append((p, raw))
    entry = {
        "ts": datetime.now(UTC).isoformat(),
        "action": "pseudonym.resolve",
        "operator": _operator(),
        "reason": reason,
        "pseudonyms": sorted(wanted),
        "candidates": count,
        "matched": sorted({p for p, _ in matches}),
    }
    # Audit first: a run that cannot be audited prints nothing.
    audit_log.parent.mkdir(parents=True, exist_ok=True)
    with open_private(audit_log, "a") as fh:  # who looked up whom, and why: not for every local user
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("pseudonym resolve by %s (%s): %d pseudonyms, %d matched", entry["operator"], reason, len(wanted), len(entry["matched"]))
    unresolved = wanted - {p for p, _ in matches}
    if as_json:
        typer.echo(json.dumps({"matches": dict(sorted(matches)), "unresolved": sorted(unresolved)}, sort_keys=True))
        return
    for p, raw in sorted(matches):
        typer.echo(f"{p}\t{raw}")
    if as_sent:
        typer.echo(f"also candidates, with a pseudonym's shape: {', '.join(sorted(as_sent))}; a record sent straight to "
                   "Kafka with such a user id keeps it as sent (not a match)", err=True)
    if unresolved:
        typer.echo(f"no candidate matched: {', '.join(sorted(unresolved))}", err=True)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid:{os.getuid()}"
