"""Alertmanager semantics between alerts and the outbox: routing to receivers, grouping,
deduplication, silences, inhibition and resolved notifications.

How a group behaves (same as Alertmanager's dispatcher + notification log):
- an alert goes to every receiver its rule names (all receivers when it names none) and, per
  receiver, into the group identified by the values of the route's ``group_by`` labels;
- a new group is flushed ``group_wait`` after its first alert, then every ``group_interval``;
- a flush notifies only when the group has a firing alert that was not in the last notification,
  or (``send_resolved``) an alert of the last notification resolved, or ``repeat_interval`` has
  passed since the last notification while alerts still fire; otherwise it is deduplicated;
- silenced alerts and alerts inhibited by a firing source alert are left out of notifications.
Each notification becomes one outbox row per receiver whose idempotency key is derived from
(receiver, group, sequence number): a deterministic key plus a unique index means that two
notifiers racing on the same group can never enqueue the same notification twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.alerts import state as db
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.model import Alert, AlertPayload, EvidenceItem, NotificationPayload, to_datetime
from pipeline.alerts.outbox import Outbox
from pipeline.alerts.rules import AlertRules, InhibitRule, ResolvedRoute

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class SilenceError(ValueError):
    """A silence could not be parsed or found."""


@dataclass(frozen=True)
class Matcher:
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex`` (anchored, as in Alertmanager)."""

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise SilenceError(f"invalid matcher {text!r}: use name=value, name!=value, name=~regex or name!~regex")
        name, op, value = m.groups()
        value = value.strip('"')
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise SilenceError(f"invalid regex in matcher {text!r}: {exc}") from exc
        return cls(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def add_silence(
    engine: Engine,
    matchers: Iterable[str],
    duration_s: float,
    created_by: str,
    comment: str,
    *,
    now: float | None = None,
) -> Silence:
    parsed = tuple(Matcher.parse(m) for m in matchers)
    if not parsed:
        raise SilenceError("a silence needs at least one matcher")
    if duration_s <= 0:
        raise SilenceError("a silence needs a positive duration")
    now = time.time() if now is None else now
    silence = Silence(str(uuid.uuid4()), parsed, now, now + duration_s, created_by, comment)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(db.silences).values(
                id=silence.id,
                matchers=[str(m) for m in parsed],
                starts_at=silence.starts_at,
                ends_at=silence.ends_at,
                created_by=created_by,
                comment=comment,
                created_at=now,
            )
        )
    return silence


def list_silences(conn: Connection, *, now: float | None = None, include_expired: bool = False) -> list[Silence]:
    now = time.time() if now is None else now
    query = sa.select(db.silences).order_by(db.silences.c.ends_at)
    if not include_expired:
        query = query.where(db.silences.c.ends_at > now)
    return [
        Silence(
            row["id"], tuple(Matcher.parse(m) for m in row["matchers"]), row["starts_at"], row["ends_at"],
            row["created_by"], row["comment"],
        )
        for row in conn.execute(query).mappings()
    ]


def expire_silence(engine: Engine, silence_id: str, *, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(db.silences)
            .where(db.silences.c.id == silence_id, db.silences.c.ends_at > now)
            .values(ends_at=now)
        )
    if not result.rowcount:
        raise SilenceError(f"no active silence with id {silence_id!r}")


def inhibited(alert: Alert, sources: Iterable[Alert], rules: Iterable[InhibitRule]) -> bool:
    """True when a firing source alert mutes ``alert`` (an alert never inhibits itself)."""
    for rule in rules:
        if not all(alert.labels.get(k) == v for k, v in rule.target_match.items()):
            continue
        for src in sources:
            if src is alert or not all(src.labels.get(k) == v for k, v in rule.source_match.items()):
                continue
            if all(src.labels.get(k, "") == alert.labels.get(k, "") for k in rule.equal):
                return True
    return False


def group_labels_of(labels: Mapping[str, str], route: ResolvedRoute) -> dict[str, str]:
    if route.group_all:
        return dict(labels)
    return {k: labels[k] for k in route.group_by if k in labels}


def group_key_of(receiver: str, group_labels: Mapping[str, str]) -> str:
    blob = json.dumps([receiver, dict(sorted(group_labels.items()))], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def idempotency_key(receiver: str, group_key: str, seq: int) -> str:
    return hashlib.sha256(f"{receiver}\x00{group_key}\x00{seq}".encode()).hexdigest()[:32]


def _alert_from_row(row: Mapping[str, object]) -> Alert:
    return Alert(
        rule=str(row["rule"]), labels=dict(row["labels"]), annotations=dict(row["annotations"]),  # type: ignore[arg-type]
        starts_at=float(row["starts_at"]), ends_at=float(row["ends_at"]), updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
        evidence=list(row["evidence"]), receivers=list(row["receivers"]),  # type: ignore[arg-type]
    )


def _payload_alert(a: Alert, now: float) -> AlertPayload:
    firing = a.firing(now)
    return AlertPayload(
        status="firing" if firing else "resolved",
        fingerprint=a.fingerprint,
        labels=a.labels,
        annotations={k: v for k, v in a.annotations.items() if not k.startswith("_")},
        starts_at=to_datetime(a.starts_at),
        ends_at=None if firing else to_datetime(a.ends_at),
        evidence=[EvidenceItem.model_validate(e) for e in a.evidence],
    )


class Notifier:
    """Turns the alert table into notifications in the outbox (one transaction per tick)."""

    def __init__(
        self,
        engine: Engine,
        rules: AlertRules,
        receivers: Mapping[str, bool],
        *,
        clock: Callable[[], float] = time.time,
        metrics: AlertMetrics | None = None,
    ) -> None:
        """``receivers`` maps each configured receiver name to its ``send_resolved`` flag."""
        self._engine = engine
        self._rules = rules
        self._receivers = dict(receivers)
        self._routes = {name: rules.route.for_receiver(name) for name in self._receivers}
        self._clock = clock
        self._metrics = metrics
        self._outbox = Outbox(engine)
        longest = max((r.group_interval for r in self._routes.values()), default=rules.route.group_interval)
        # A resolved alert must outlive the next flush of its groups, or its resolution is lost.
        self._retention_s = 2 * longest + 60
        self._signature: tuple[object, ...] | None = None
        self._next_due = 0.0

    def tick(self) -> int:
        """Runs every dispatcher tick; returns how many notifications were enqueued."""
        now = self._clock()
        with self._engine.connect() as conn:
            sig = tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(db.alerts.c.updated_at))).one())
        if sig == self._signature and now < self._next_due:
            return 0  # nothing changed and no group is due: skip the write transaction
        with self._engine.begin() as conn:
            enqueued, next_due = self._tick(conn, now)
        self._signature = sig
        self._next_due = next_due
        return enqueued

    def _tick(self, conn: Connection, now: float) -> tuple[int, float]:
        alerts = [_alert_from_row(r) for r in conn.execute(sa.select(db.alerts)).mappings()]
        groups = {(r["receiver"], r["group_key"]): dict(r) for r in conn.execute(sa.select(db.groups)).mappings()}
        silences = [s for s in list_silences(conn, now=now) if s.active(now)]
        firing_all = [a for a in alerts if a.firing(now)]

        members: dict[tuple[str, str], list[Alert]] = defaultdict(list)
        group_labels: dict[tuple[str, str], dict[str, str]] = {}
        for a in alerts:
            for receiver, route in self._routes.items():
                if a.receivers and receiver not in a.receivers:
                    continue
                labels = group_labels_of(a.labels, route)
                key = (receiver, group_key_of(receiver, labels))
                members[key].append(a)
                group_labels[key] = labels

        for key, group_alerts in members.items():
            live = [a for a in group_alerts if a.firing(now)]
            if key not in groups and live:
                route = self._routes[key[0]]
                # group_wait counts from the first alert, not from when a notifier saw it, so a
                # restarted or lagging notifier does not delay notifications further.
                first_flush = min(a.starts_at for a in live) + route.group_wait
                row = {
                    "receiver": key[0], "group_key": key[1], "group_labels": group_labels[key],
                    "created_at": now, "next_flush_at": first_flush, "last_notified_at": None,
                    "notified_firing": [], "seq": 0,
                }
                # Another notifier (a second dispatcher) may create it at the same moment.
                db.insert_ignore(conn, db.groups, [row], ["receiver", "group_key"])
                groups[key] = row

        enqueued = 0
        next_due = float("inf")
        muted_cache: dict[str, bool] = {}

        def muted(a: Alert) -> bool:
            fp = a.fingerprint
            if fp not in muted_cache:
                muted_cache[fp] = any(s.mutes(a.labels) for s in silences) or inhibited(
                    a, firing_all, self._rules.inhibit_rules
                )
            return muted_cache[fp]

        for key, g in groups.items():
            receiver, gk = key
            route = self._routes.get(receiver)
            group_alerts = members.get(key, [])
            if route is None or (not g["notified_firing"] and not any(a.firing(now) for a in group_alerts)):
                conn.execute(sa.delete(db.groups).where(db.groups.c.receiver == receiver, db.groups.c.group_key == gk))
                continue
            if g["next_flush_at"] > now:
                next_due = min(next_due, g["next_flush_at"])
                continue
            send_resolved = self._receivers[receiver]
            notified = set(g["notified_firing"])
            firing = [a for a in group_alerts if a.firing(now) and not muted(a)]
            firing_fps = {a.fingerprint for a in firing}
            resolved = [a for a in group_alerts if not a.firing(now) and a.fingerprint in notified]
            repeat_due = g["last_notified_at"] is None or now - g["last_notified_at"] >= route.repeat_interval
            need = bool(firing_fps - notified) or (send_resolved and bool(resolved)) or (bool(firing) and repeat_due)
            values: dict[str, object] = {"next_flush_at": now + route.group_interval}
            if need:
                seq = int(g["seq"]) + 1
                shown = firing + (resolved if send_resolved else [])
                payload = NotificationPayload(
                    idempotency_key=idempotency_key(receiver, gk, seq),
                    receiver=receiver,
                    status="firing" if firing else "resolved",
                    group_key=gk,
                    group_labels=g["group_labels"],
                    common_labels=_common_labels([a.labels for a in shown]),
                    alerts=[_payload_alert(a, now) for a in sorted(shown, key=lambda a: (a.starts_at, a.fingerprint))],
                    created_at=to_datetime(now),
                    firing_valid_s=route.repeat_interval + route.group_interval,
                )
                if self._outbox.enqueue(conn, payload, now):
                    enqueued += 1
                    if self._metrics:
                        self._metrics.notifications.labels(receiver, payload.status).inc()
                values.update(seq=seq, last_notified_at=now, notified_firing=sorted(firing_fps))
            elif not firing:
                values["notified_firing"] = []  # everything resolved or muted, nothing to tell
            else:
                # Not sending resolutions: forget them so they cannot count later.
                values["notified_firing"] = sorted(notified - {a.fingerprint for a in resolved})
            conn.execute(
                sa.update(db.groups).where(db.groups.c.receiver == receiver, db.groups.c.group_key == gk).values(**values)
            )
            next_due = min(next_due, now + route.group_interval)

        # Resolved alerts whose resolution every group has had a chance to send.
        conn.execute(sa.delete(db.alerts).where(db.alerts.c.ends_at < now - self._retention_s))
        for a in firing_all:
            next_due = min(next_due, a.ends_at)
        return enqueued, next_due


def _common_labels(label_sets: list[dict[str, str]]) -> dict[str, str]:
    if not label_sets:
        return {}
    first = label_sets[0]
    return {k: v for k, v in sorted(first.items()) if all(ls.get(k) == v for ls in label_sets[1:])}
