"""Settings of the PostgreSQL events store (kept free of SQLAlchemy so Settings stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


def postgres_url(url: str) -> str:
    """``url`` if it names a PostgreSQL database, ``postgres://`` (Heroku's and libpq's spelling)
    written as SQLAlchemy's ``postgresql://``; ValueError naming only the scheme otherwise (the URL
    may hold a password). A SQLite or MySQL URL used to reach the driver and end as an internal error."""
    scheme, sep, rest = url.partition("://")
    dialect, plus, driver = scheme.partition("+")
    if not sep or dialect.lower() not in ("postgresql", "postgres"):
        got = f"a {scheme!r} URL" if sep else "no scheme"
        raise ValueError(f"the events store is PostgreSQL: expected postgresql://user:password@host:5432/db, got {got}")
    return f"postgresql{plus}{driver}://{rest}"


class PostgresSettings(BaseModel):
    """Where the ``postgres`` sink writes verdicts, and how long they are kept."""

    model_config = ConfigDict(extra="forbid")  # a mistyped key is an error, not a silent default

    url: SecretStr = SecretStr("postgresql+psycopg://misuse:misuse@127.0.0.1:5432/misuse")
    retention_days: int = Field(default=90, ge=1, le=36_500)  # a century: beyond, dates overflow
    # Each flush is one transaction; a slow database must fail the batch, not hang the stream.
    connect_timeout_s: int = Field(default=10, ge=1, le=3600)
    statement_timeout_ms: int = Field(default=30_000, ge=100, le=2**31 - 1)  # PostgreSQL's own limit
    flush_attempts: int = Field(default=5, ge=1)
    create_schema: bool = Field(default=True, description="CREATE TABLE/INDEX IF NOT EXISTS at start-up")

    @field_validator("url")
    @classmethod
    def _postgresql(cls, url: SecretStr) -> SecretStr:
        return SecretStr(postgres_url(url.get_secret_value()))

