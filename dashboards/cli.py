"""``misuse-monitor dashboards``: generate, check, push and verify the Grafana dashboards."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from pipeline.exits import ExitCode, first_line

app = typer.Typer(help="Grafana dashboards as code: generate, check, push, verify.", no_args_is_help=True)

OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory of the generated JSON (default: dashboards/generated)")]


@app.command()
def generate(out: OutOpt = None) -> None:
    """Rewrite dashboards/generated/*.json from the dashboard modules."""
    from dashboards.generate import GENERATED_DIR, GenerateError, describe, write

    try:
        touched = write(out or GENERATED_DIR)
    except GenerateError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from exc
    typer.echo(describe(touched))


@app.command()
def check(
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stale files as JSON")] = False,
) -> None:
    """Exit 11 when the generated JSON is stale (CI)."""
    from dashboards.generate import GENERATED_DIR, stale_files

    if out is not None and not out.is_dir():
        # A mistyped --out listed every dashboard as stale (exit 11) instead of naming the mistake.
        raise typer.BadParameter(f"{out} is not a directory" if out.exists() else f"{out} does not exist", param_hint="--out")
    stale = stale_files(out or GENERATED_DIR)
    if as_json:
        typer.echo(json.dumps({"up_to_date": not stale, "stale": sorted(stale)}))
    elif stale:
        typer.echo(f"stale: {', '.join(stale)}; run `misuse-monitor dashboards generate`", err=True)
    else:
        typer.echo("dashboards up to date")
    if stale:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or not theirs:
            raise typer.BadParameter(f"expected OURS=THEIRS, got {pair!r}", param_hint="--datasource")
        out[ours] = theirs
    return out


@app.command()
def push(
    url: Annotated[str, typer.Option(envvar="GRAFANA_URL", help="Grafana base URL, e.g. http://admin:admin@localhost:3000")],
    token: Annotated[str | None, typer.Option(envvar="GRAFANA_TOKEN", help="Service account token (else basic auth in the URL)")] = None,
    folder_uid: Annotated[str, typer.Option(help="Folder uid (created when missing)")] = "misuse-monitor",
    folder_title: Annotated[str, typer.Option(help="Folder title when it is created")] = "Misuse monitor",
    datasource: Annotated[
        list[str], typer.Option("--datasource", help="Map a datasource uid: mm-prometheus=<uid> (repeatable)")
    ] = [],  # noqa: B006 - typer needs a literal default
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change, change nothing")] = False,
    show_diff: Annotated[bool, typer.Option("--diff/--no-diff", help="With --dry-run, print unified diffs")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the folder, datasources and changes as JSON")] = False,
) -> None:
    """Upsert every dashboard by uid into a Grafana folder, mapping datasource uids.
    Exit 8 when Grafana does not answer or refuses a request; 2 when the datasources cannot be mapped."""
    from dashboards.generate import all_dashboards
    from dashboards.publish import DatasourceError, PublishError, connect
    from dashboards.publish import push as do_push
    from pipeline.exits import Unreachable

    # `--url localhost:3000` (no scheme) or an empty GRAFANA_URL was an InvalidSchema/MissingSchema
    # from the HTTP library: exit 1, "a bug".
    if not _is_http_url(url):
        raise typer.BadParameter(f"{_shown(url)} is not an http(s) URL "
                                 "(e.g. https://grafana.example.org)", param_hint="--url")
    try:
        report = do_push(
            connect(url, token),
            all_dashboards(),
            folder_uid=folder_uid,
            folder_title=folder_title,
            datasource_overrides=_parse_overrides(datasource),
            dry_run=dry_run,
        )
    except DatasourceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--datasource") from exc
    except PublishError as exc:  # Grafana did not answer, refused a request or answered oddly
        # One line (README "Conventions"): a server that is not Grafana answered a whole HTML page.
        first = first_line(exc, type(exc).__name__, 300)
        raise Unreachable(f"dashboards push: {first} ({_where(url)})") from exc
    if as_json:
        typer.echo(json.dumps({
            "dry_run": report.dry_run, "folder_uid": report.folder_uid, "folder_created": report.folder_created,
            "datasources": report.datasources,
            "changes": [
                {"uid": c.uid, "title": c.title, "action": c.action, **({"diff": c.diff} if dry_run and show_diff else {})}
                for c in report.changes
            ],
        }, sort_keys=True))
        return
    typer.echo(report.summary())
    if dry_run and show_diff:
        for change in report.changes:
            if change.diff:
                sys.stdout.write(change.diff)


MAX_VERIFY_HOURS = 24 * 366 * 10


def _require_prometheus(url: str, timeout_s: float = 10.0) -> None:
    """Raise Unreachable (exit 8) unless ``url`` answers a trivial query like a Prometheus server:
    a wrong address was 54 ERROR lines (one per panel) and exit 11, "a panel query failed"."""
    import httpx

    from pipeline.exits import Unreachable

    try:
        response = httpx.get(f"{url}/api/v1/query", params={"query": "1"}, timeout=timeout_s)
        answered = response.status_code == 200 and response.json().get("status") == "success"
    except (httpx.HTTPError, ValueError) as exc:
        raise Unreachable(f"dashboards verify: Prometheus at {_where(url)} did not answer: {exc}") from exc
    if not answered:
        raise Unreachable(
            f"dashboards verify: {_where(url)} is not a Prometheus API (GET /api/v1/query answered {response.status_code})"
        )


def _is_http_url(url: str) -> bool:
    """http(s)://host[:port]...: a port that is not a number from 0 to 65535 was a ValueError (exit 1)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _shown(url: str) -> str:
    """A URL for an error message: scheme://host[:port], or what follows any ``user:password@``."""
    return _where(url) if _is_http_url(url) else repr(url.rpartition("@")[2])


def _where(url: str) -> str:
    """scheme://host[:port] of a URL: never its credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def _has_series(prometheus_url: str, metric: str, start: datetime, end: datetime) -> bool:
    from pipeline.localinfra.prometheus import query_range

    return bool(query_range(prometheus_url, f"count({metric})", start.timestamp(), end.timestamp(), 60))


@app.command()
def verify(
    prometheus_url: Annotated[str, typer.Option(help="Prometheus base URL")] = "http://127.0.0.1:9090",
    postgres_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL of the events store, postgresql://... (default: settings)")
    ] = None,
    hours: Annotated[float, typer.Option(help="Time range to query, ending now")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print every query's outcome as JSON")] = False,
) -> None:
    """Run every panel query against live datasources; exit 11 if any fails or returns no data.
    Exit 8 when Prometheus does not answer, 6 when the database does not."""

    from dashboards.generate import OPTIONAL_DASHBOARDS, all_dashboards
    from dashboards.queries import iter_queries, run_query
    from pydantic import SecretStr

    from pipeline.events_db import create_engine
    from pipeline.postgres_settings import PostgresSettings
    from pipeline.postgres_settings import postgres_url as events_store_url
    from pipeline.settings import load_settings

    # Refused up front: --hours inf was an OverflowError (exit 1), 0 or negative an empty range
    # whose "no data" read as broken panels, and a URL without http:// failed every query alike.
    if not 0 < hours <= MAX_VERIFY_HOURS:  # also false for NaN
        raise typer.BadParameter(f"{hours:g} is not a range: more than 0 and at most {MAX_VERIFY_HOURS}", param_hint="--hours")
    prometheus_url = prometheus_url.rstrip("/")
    if not _is_http_url(prometheus_url):
        raise typer.BadParameter(f"{_shown(prometheus_url)} is not an http(s) URL", param_hint="--prometheus-url")
    if postgres_url:
        # A SQLite or MySQL URL connected, then failed every SQL panel alike (exit 11) as if the
        # dashboards were broken. The message names the scheme only: the URL may hold a password.
        try:
            postgres_url = events_store_url(postgres_url)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--postgres-url") from None
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    # With the events store's connect and statement timeouts: a database that accepted the TCP
    # connection and never answered hung verify for good (a hostile review, 2026-12-07).
    # The settings are read only without --postgres-url: a broken MM_CONFIG must not fail a
    # verify given its URL (the review of this change, 2026-12-07).
    postgres = PostgresSettings(url=SecretStr(postgres_url)) if postgres_url else load_settings().postgres
    engine = create_engine(postgres)
    try:
        # A datasource that does not answer is one line and exit 6 (sqlalchemy's OperationalError)
        # or 8, not one ERROR line per panel and exit 11 as if the dashboards were broken.
        with engine.connect():
            pass
        _require_prometheus(prometheus_url)
    except BaseException:
        engine.dispose()
        raise
    bad = 0
    outcomes = []
    for board in all_dashboards():
        presence = OPTIONAL_DASHBOARDS.get(board.get("uid", ""))
        if presence is not None and not _has_series(prometheus_url, presence, start, end):
            # A dashboard for a component this installation may not run (the gateway): no data is
            # "not scraped here", not "broken"; said once instead of one EMPTY line per panel.
            why = f"no {presence} in Prometheus over the range: that component is not scraped there"
            outcomes.append({"dashboard": board["uid"], "status": "skipped", "reason": why})
            if not as_json:
                typer.echo(f"skipped {board['uid']}: {why}")
            continue
        for pq in iter_queries(board):
            try:
                rows = run_query(pq, prometheus_url=prometheus_url, engine=engine, start=start, end=end).rows
            except Exception as exc:  # noqa: BLE001 - report every failing query, then fail once
                outcomes.append({"query": pq.label, "status": "error", "error": str(exc)})
                if not as_json:
                    typer.echo(f"ERROR   {pq.label}: {exc}")
                bad += 1
                continue
            outcomes.append({"query": pq.label, "status": "ok" if rows else "empty", "rows": rows})
            if not as_json:
                typer.echo(f"{'ok' if rows else 'EMPTY':7} {pq.label}: {rows}")
            bad += 0 if rows else 1
    engine.dispose()
    if as_json:
        typer.echo(json.dumps({"failed": bad, "queries": outcomes}))
    if bad:
        raise typer.Exit(ExitCode.CHECK_FAILED)
