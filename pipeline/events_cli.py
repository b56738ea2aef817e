"""``misuse-monitor events``: maintain the PostgreSQL events store (schema, retention)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The PostgreSQL events store behind the dashboards.", no_args_is_help=True)

UrlOpt = Annotated[str | None, typer.Option(envvar="MM_POSTGRES__URL", help="SQLAlchemy URL (default: settings)")]


def _settings(url: str | None):  # noqa: ANN202 - PostgresSettings, imported lazily
    from pipeline.postgres_settings import PostgresSettings

    return PostgresSettings(url=url) if url else PostgresSettings()


@app.command("init")
def init_schema(url: UrlOpt = None) -> None:
    """Create the events table and its indexes (idempotent)."""
    from pipeline import events_db

    engine = events_db.create_engine(_settings(url))
    events_db.create_schema(engine)
    engine.dispose()
    typer.echo(f"{events_db.TABLE_NAME} ready")


@app.command()
def prune(
    url: UrlOpt = None,
    days: Annotated[int | None, typer.Option(min=0, help="Keep this many days (default: retention_days)")] = None,
) -> None:
    """Delete events older than the retention period (run daily, e.g. from cron)."""
    from pipeline import events_db

    settings = _settings(url)
    engine = events_db.create_engine(settings)
    deleted = events_db.delete_older_than(engine, settings.retention_days if days is None else days)
    engine.dispose()
    typer.echo(f"deleted {deleted} events older than {settings.retention_days if days is None else days} days")
