"""``misuse-monitor dashboards``: generate, check, push and verify the Grafana dashboards."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from pipeline.exits import ExitCode

app = typer.Typer(help="Grafana dashboards as code: generate, check, push, verify.", no_args_is_help=True)

OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory of the generated JSON (default: dashboards/generated)")]


@app.command()
def generate(out: OutOpt = None) -> None:
    """Rewrite dashboards/generated/*.json from the dashboard modules."""
    from dashboards.generate import GENERATED_DIR, write

    touched = write(out or GENERATED_DIR)
    typer.echo(f"wrote {', '.join(touched)}" if touched else "dashboards already up to date")


@app.command()
def check(
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stale files as JSON")] = False,
) -> None:
    """Exit 11 when the generated JSON is stale (CI)."""
    from dashboards.generate import GENERATED_DIR, stale_files

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
    from urllib.parse import urlsplit

    from dashboards.generate import all_dashboards
    from dashboards.publish import DatasourceError, PublishError, connect
    from dashboards.publish import push as do_push
    from pipeline.exits import Unreachable

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
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")  # no credentials
        raise Unreachable(f"dashboards push: {exc} ({where})") from exc
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


@app.command()
def verify(
    prometheus_url: Annotated[str, typer.Option(help="Prometheus base URL")] = "http://127.0.0.1:9090",
    postgres_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the events store (default: settings)")] = None,
    hours: Annotated[float, typer.Option(help="Time range to query, ending now")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print every query's outcome as JSON")] = False,
) -> None:
    """Run every panel query against live datasources; exit 1 if any fails or returns no data."""
    import sqlalchemy as sa

    from dashboards.generate import all_dashboards
    from dashboards.queries import iter_queries, run_query
    from pipeline.settings import load_settings

    engine = sa.create_engine(postgres_url or load_settings().postgres.url.get_secret_value())
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    bad = 0
    outcomes = []
    for board in all_dashboards():
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
