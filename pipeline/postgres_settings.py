"""Settings of the PostgreSQL events store (kept free of SQLAlchemy so Settings stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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

