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

    from pipeline.exits import ConfigError
    from pipeline.postgres_settings import postgres_url
    from pipeline.preflight import require_postgres

    pg = load_settings(config).postgres
    if url:
        try:
            pg = pg.model_copy(update={"url": type(pg.url)(postgres_url(url))})
        except ValueError as exc:  # exit 3, as for a database URL that cannot be parsed
            raise ConfigError(f"database URL (--url): {exc}") from None
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
    days: Annotated[int | None, typer.Option(min=1, max=36_500, help="Keep this many days, 1 to 36500 as postgres.retention_days (its default)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Delete events whose request time or write time is past the retention period (run daily, e.g. from cron)."""
    from pipeline import events_db

    settings = _settings(url, config)
    engine = events_db.create_engine(settings)
    if events_db.has_events_table(engine):
        deleted = events_db.delete_older_than(engine, settings.retention_days if days is None else days)
    else:
        # Not an error (a cron job may run before the first flush), but it must not read as a
        # prune of an existing table; it used to end as "internal error: UndefinedTable".
        typer.echo(f"misuse-monitor: warning: no {events_db.TABLE_NAME} table in that database: nothing to prune "
                   "(`misuse-monitor events init` or the stream's postgres sink creates it)", err=True)
        deleted = 0
    engine.dispose()
    kept = settings.retention_days if days is None else days
    if as_json:
        import json

        typer.echo(json.dumps({"deleted": deleted, "retention_days": kept}))
        return
    typer.echo(f"deleted {deleted} events older than {kept} days")
