"""``misuse-monitor events``: maintain the PostgreSQL events store (schema, retention)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pipeline.postgres_settings import PostgresSettings

app = typer.Typer(help="The PostgreSQL events store behind the dashboards.", no_args_is_help=True)

UrlOpt = Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: postgres.url of the settings)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")]


def _settings(url: str | None, config: Path | None) -> PostgresSettings:
    """The ``postgres`` section of the process settings (file, MM_POSTGRES__*), ``--url`` wins."""
    from pipeline.settings import load_settings

    from pipeline.preflight import require_postgres

    pg = load_settings(config).postgres
    pg = pg.model_copy(update={"url": type(pg.url)(url)}) if url else pg
    require_postgres(pg.url.get_secret_value(), pg.connect_timeout_s)  # one line and exit 6, not a driver traceback
    return pg


@app.command("init")
def init_schema(url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Create the events table and its indexes, or upgrade an older one in place (idempotent)."""
    from pipeline import events_db

    engine = events_db.create_engine(_settings(url, config))
    events_db.create_schema(engine)
    engine.dispose()
    typer.echo(f"{events_db.TABLE_NAME} ready")


@app.command()
def prune(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    days: Annotated[int | None, typer.Option(min=0, help="Keep this many days (default: postgres.retention_days)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Delete events whose request time or write time is past the retention period (run daily, e.g. from cron)."""
    from pipeline import events_db

    settings = _settings(url, config)
    engine = events_db.create_engine(settings)
    deleted = events_db.delete_older_than(engine, settings.retention_days if days is None else days)
    engine.dispose()
    kept = settings.retention_days if days is None else days
    if as_json:
        import json

        typer.echo(json.dumps({"deleted": deleted, "retention_days": kept}))
        return
    typer.echo(f"deleted {deleted} events older than {kept} days")
