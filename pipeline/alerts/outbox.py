"""The durable outbox: one row per (receiver, notification), keyed by its idempotency key.

Rows move ``pending`` -> ``delivered`` (only after the receiver answered 2xx) or ``dead``
(too old, or rejected with a non-retryable 4xx). A dispatcher *claims* a due row for
``claim_ttl_s`` before sending, so two dispatchers do not send it at the same time; a
dispatcher killed mid-send leaves the claim to expire and the row is sent again, with the same
idempotency key, so the receiver can drop the duplicate. Same code on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.alerts import state as db
from pipeline.alerts.model import WebhookMessage

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


# The group of `alerts test --send`'s notifications: never requeued (Outbox.requeue_dead).
TEST_GROUP_KEY = "mm-test"


@dataclass(frozen=True)
class Notification:
    """One message for one receiver, with the key that makes re-sends recognisable."""

    idempotency_key: str
    receiver: str
    group_key: str
    message: WebhookMessage


@dataclass(frozen=True)
class OutboxItem:
    id: int
    idempotency_key: str
    receiver: str
    message: WebhookMessage
    created_at: float
    attempts: int


@dataclass(frozen=True)
class OutboxRow:
    """A row as listed by the CLI."""

    id: int
    idempotency_key: str
    receiver: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float
    delivered_at: float | None
    last_error: str | None


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def enqueue(self, conn: Connection, notification: Notification, now: float) -> bool:
        """Add a notification in the caller's transaction; False when its key is already there."""
        return bool(self.enqueue_many(conn, [notification], now))

    def enqueue_many(self, conn: Connection, payloads: list[Notification], now: float) -> list[Notification]:
        """Add notifications in the caller's transaction; returns those whose key was new."""
        if not payloads:
            return []
        t = db.outbox
        keys = [p.idempotency_key for p in payloads]
        existing: set[str] = set()
        for i in range(0, len(keys), 500):
            existing |= {r[0] for r in conn.execute(sa.select(t.c.idempotency_key).where(t.c.idempotency_key.in_(keys[i : i + 500])))}
        fresh = [p for p in payloads if p.idempotency_key not in existing]
        rows = [
            {
                "idempotency_key": p.idempotency_key, "receiver": p.receiver, "group_key": p.group_key,
                "payload": p.message.to_json(), "created_at": now, "state": PENDING, "attempts": 0,
                "next_attempt_at": now, "claimed_until": None, "delivered_at": None, "last_error": None,
            }
            for p in fresh
        ]
        # ON CONFLICT DO NOTHING still guards against a concurrent notifier between the two statements.
        db.insert_many_ignore(conn, t, rows, ["idempotency_key"])
        return fresh

    def claim_due(self, now: float, limit: int, claim_ttl_s: float) -> list[OutboxItem]:
        """Claim up to ``limit`` due pending rows, oldest first per receiver, receivers taking
        turns: a backlog for one slow receiver does not fill the batch and hold up the others."""
        t = db.outbox
        due = (t.c.state == PENDING) & (t.c.next_attempt_at <= now) & (
            t.c.claimed_until.is_(None) | (t.c.claimed_until <= now)
        )
        turn = sa.func.row_number().over(partition_by=t.c.receiver, order_by=(t.c.next_attempt_at, t.c.id))
        ranked = (
            sa.select(t.c.id, t.c.idempotency_key, t.c.receiver, t.c.payload, t.c.created_at, t.c.attempts,
                      t.c.next_attempt_at, turn.label("turn"))
            .where(due)
            .subquery()
        )
        with self._engine.connect() as conn:
            candidates = list(
                conn.execute(
                    sa.select(ranked)
                    .where(ranked.c.turn <= limit)
                    .order_by(ranked.c.turn, ranked.c.next_attempt_at, ranked.c.id)
                    .limit(limit)
                ).mappings()
            )
        if not candidates:
            return []
        claimed: list[OutboxItem] = []
        with self._engine.begin() as conn:
            for row in candidates:
                # Re-check the condition in the UPDATE: another dispatcher may have claimed it.
                result = conn.execute(sa.update(t).where(t.c.id == row["id"], due).values(claimed_until=now + claim_ttl_s))
                if result.rowcount == 1:
                    claimed.append(
                        OutboxItem(
                            id=row["id"],
                            idempotency_key=row["idempotency_key"],
                            receiver=row["receiver"],
                            message=WebhookMessage.model_validate_json(row["payload"]),
                            created_at=row["created_at"],
                            attempts=row["attempts"],
                        )
                    )
        return claimed

    def _end_attempt(self, item_id: int, **values: object) -> None:
        """Record the outcome of one delivery attempt of a pending row and release its claim."""
        t = db.outbox
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.id == item_id, t.c.state == PENDING)
                .values(claimed_until=None, attempts=t.c.attempts + 1, **values)
            )

    def mark_delivered(self, item_id: int, now: float) -> None:
        """Runs only after the receiver answered 2xx."""
        self._end_attempt(item_id, state=DELIVERED, delivered_at=now, last_error=None)

    def mark_retry(self, item_id: int, next_attempt_at: float, error: str) -> None:
        self._end_attempt(item_id, next_attempt_at=next_attempt_at, last_error=error[:1000])

    def mark_dead(self, item_id: int, error: str) -> None:
        self._end_attempt(item_id, state=DEAD, last_error=error[:1000])

    def abandon(self, keys: list[str], why: str) -> int:
        """Mark the rows of ``keys`` still pending dead, so no dispatcher sends them later, with
        ``why`` after the last attempt's error; the number of rows changed."""
        t = db.outbox
        error = sa.case((sa.func.coalesce(t.c.last_error, "") == "", why), else_=t.c.last_error + "; " + why)
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(t).where(t.c.idempotency_key.in_(keys), t.c.state == PENDING)
                .values(state=DEAD, claimed_until=None, last_error=sa.func.substr(error, 1, 1000))
            )
            return int(done.rowcount or 0)

    def counts(self) -> dict[tuple[str, str], int]:
        """(receiver, state) -> rows."""
        t = db.outbox
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.receiver, t.c.state, sa.func.count()).group_by(t.c.receiver, t.c.state))
            return {(r[0], r[1]): int(r[2]) for r in rows}

    def pending_count(self) -> int:
        t = db.outbox
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(t.c.state == PENDING)).scalar_one())

    def rows(self, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        t = db.outbox
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(t.c.state == state)
        with self._engine.connect() as conn:
            return [
                OutboxRow(
                    id=r["id"], idempotency_key=r["idempotency_key"], receiver=r["receiver"], state=r["state"],
                    attempts=r["attempts"], created_at=r["created_at"], next_attempt_at=r["next_attempt_at"],
                    delivered_at=r["delivered_at"], last_error=r["last_error"],
                )
                for r in conn.execute(query).mappings()
            ]

    def prune_delivered(self, before: float) -> int:
        """Delete rows delivered before ``before``; the number deleted. Dead rows stay (they are
        requeued or read by an operator); pending ones are work."""
        t = db.outbox
        with self._engine.begin() as conn:
            done = conn.execute(sa.delete(t).where(t.c.state == DELIVERED, t.c.delivered_at < before))
            return int(done.rowcount or 0)

    def requeue_dead(self, now: float, receiver: str | None = None) -> int:
        """Give dead letters another chance (after fixing a receiver): back to pending.

        Not ``alerts test --send``'s notifications (TEST_GROUP_KEY): one that was not delivered
        in time is dropped for good, and the fix-the-receiver-then-requeue routine sent
        "mm_test_alert" to on-call (an on-call review, 2026-12-06)."""
        t = db.outbox
        query = (
            sa.update(t).where(t.c.state == DEAD, t.c.group_key != TEST_GROUP_KEY)
            .values(state=PENDING, next_attempt_at=now, created_at=now, attempts=0)
        )
        if receiver is not None:
            query = query.where(t.c.receiver == receiver)
        with self._engine.begin() as conn:
            return int(conn.execute(query).rowcount or 0)
