"""The built-in (direct) notifier: routing to receivers, grouping, deduplication and resolved
notifications, for setups without Alertmanager. With Alertmanager (the default, see
:mod:`pipeline.alerts.alertmanager`) none of this runs: Alertmanager groups, silences and inhibits.

How a group behaves (same as Alertmanager's dispatcher + notification log):
- an alert goes to every receiver its rule names (all receivers when it names none) and, per
  receiver, into the group identified by the values of the route's ``group_by`` labels;
- a new group is flushed ``group_wait`` after its first alert, then every ``group_interval``;
- a flush notifies only when the group has a firing alert that was not in the last notification,
  or (``send_resolved``) an alert of the last notification resolved, or ``repeat_interval`` has
  passed since the last notification while alerts still fire; otherwise it is deduplicated.
There are no silences or inhibition here: an on-call team that needs them runs Alertmanager.
Each notification is Alertmanager's webhook message (version 4) and becomes one outbox row per
receiver whose idempotency key is derived from (receiver, group, the group row's creation time,
sequence number): a deterministic key plus a unique index means that two notifiers racing on
the same group can never enqueue the same notification twice, and a group that fires again
after its row was deleted gets new keys.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.alerts import state as db
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.model import Alert, GeneratorLinks, WebhookAlert, WebhookMessage, label_set_string
from pipeline.alerts.outbox import Notification, Outbox
from pipeline.alerts.rules import AlertRules, ResolvedRoute

_CHUNK = 500  # keys per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


def group_labels_of(labels: Mapping[str, str], route: ResolvedRoute) -> dict[str, str]:
    if route.group_all:
        return dict(labels)
    return {k: labels[k] for k in route.group_by if k in labels}


def group_key_of(receiver: str, group_labels: Mapping[str, str]) -> str:
    blob = json.dumps([receiver, dict(sorted(group_labels.items()))], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def am_group_key(receiver: str, group_labels: Mapping[str, str]) -> str:
    """The ``groupKey`` string as Alertmanager writes it for a route under the root route."""
    return f'{{}}/{{receiver="{receiver}"}}:{label_set_string(dict(group_labels))}'


def idempotency_key(receiver: str, group_key: str, created_at: float, seq: int) -> str:
    """One key per notification of one group's life: two notifiers flushing the same group row
    make the same key (the outbox keeps one), and a group created again after its resolution
    was sent (its row deleted, ``seq`` from 0 again) makes new ones. Without ``created_at`` the
    second life's keys were the first life's, the outbox took them for copies, and the same
    alert firing again (the next day, for the same tenant) was never notified (found
    2026-12-06)."""
    return hashlib.sha256(f"{receiver}\x00{group_key}\x00{created_at!r}\x00{seq}".encode()).hexdigest()[:32]


def _alert_from_row(row: Mapping[str, object]) -> Alert:
    return Alert(
        rule=str(row["rule"]), labels=dict(row["labels"]), annotations=dict(row["annotations"]),  # type: ignore[arg-type]
        starts_at=float(row["starts_at"]), ends_at=float(row["ends_at"]), updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
        evidence=list(row["evidence"]), receivers=list(row["receivers"]), partition=int(row["partition"]),  # type: ignore[arg-type, call-overload]
    )


class Notifier:
    """Turns the alert table into notifications in the outbox (one transaction per tick).

    Alerts are read incrementally (rows updated since the last tick, with a slack for commits
    that land late) into an in-memory index of group memberships; only groups that are due are
    re-read from the database and flushed, so a tick costs what changed, not what exists. The
    database stays the authority: a restarted notifier rebuilds the index from it, and a group is
    re-read inside the flush transaction, so two notifiers cannot flush one group inconsistently.
    """

    # Rows committed this late after their updated_at are still picked up.
    READ_SLACK_S = 5.0
    RETENTION_EVERY_S = 10.0
    # Every row is probed this often, not only those from the watermark on: a row's updated_at
    # is its writer's clock, and a replica on a host whose clock is behind (or a clock stepped
    # back) writes under the watermark. Such an alert was never notified (2026-12-06).
    RECONCILE_EVERY_S = 60.0

    def __init__(
        self,
        engine: Engine,
        rules: AlertRules,
        receivers: Mapping[str, bool],
        *,
        clock: Callable[[], float] = time.time,
        metrics: AlertMetrics | None = None,
        links: GeneratorLinks | None = None,
        external_url: str = "",
        max_alerts: Mapping[str, int] | None = None,
    ) -> None:
        """``receivers`` maps each configured receiver name to its ``send_resolved`` flag;
        ``max_alerts`` (per receiver, 0 = all) caps the alerts of one message."""
        self._links = links or GeneratorLinks(base_url="")
        self._external_url = external_url
        self._max_alerts = dict(max_alerts or {})
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
        self._alerts: dict[str, Alert] = {}
        self._members: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._alert_groups: dict[str, list[tuple[str, str]]] = {}
        self._group_labels: dict[tuple[str, str], dict[str, str]] = {}
        self._next_flush: dict[tuple[str, str], float] = {}
        self._watermark: float | None = None
        self._signature: tuple[object, ...] | None = None
        self._last_retention = 0.0
        self._last_reconcile = 0.0

    def tick(self) -> int:
        """Runs every dispatcher tick; returns how many notifications were enqueued."""
        now = self._clock()
        with self._engine.connect() as conn:
            sig = tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(db.alerts.c.updated_at))).one())
        due_soon = min(self._next_flush.values(), default=float("inf"))
        if sig == self._signature and now < due_soon and now - self._last_retention < self.RETENTION_EVERY_S:
            return 0  # nothing changed and no group is due: skip the write transaction
        with self._engine.begin() as conn:
            enqueued = self._tick(conn, now)
        self._signature = sig
        return enqueued

    def pending(self) -> int:
        """Nothing waits here between ticks: the outbox holds what was decided."""
        return 0

    # ------------------------------------------------------------------ index
    def _index(self, alert: Alert) -> list[tuple[str, str]]:
        fp = alert.fingerprint
        for key in self._alert_groups.get(fp, []):
            self._members[key].discard(fp)
        keys = []
        for receiver, route in self._routes.items():
            if alert.receivers and receiver not in alert.receivers:
                continue
            labels = group_labels_of(alert.labels, route)
            key = (receiver, group_key_of(receiver, labels))
            self._members[key].add(fp)
            self._group_labels[key] = labels
            keys.append(key)
        self._alerts[fp] = alert
        self._alert_groups[fp] = keys
        return keys

    def _forget(self, fp: str) -> None:
        for key in self._alert_groups.pop(fp, []):
            self._members[key].discard(fp)
            if not self._members[key]:
                del self._members[key]
        self._alerts.pop(fp, None)

    def _load_changes(self, conn: Connection, now: float) -> list[Alert]:
        t = db.alerts
        if self._watermark is None:
            rows = list(conn.execute(sa.select(t)).mappings())
            self._watermark = self._clock()
            self._last_reconcile = now
            for row in conn.execute(sa.select(db.groups.c.receiver, db.groups.c.group_key, db.groups.c.next_flush_at)):
                self._next_flush[(row[0], row[1])] = row[2]
        else:
            # Cheap probe first: only rows whose (updated_at, ends_at) differ from the index are
            # fetched and parsed in full. Every RECONCILE_EVERY_S (or when the clock went back),
            # every row is probed.
            probe = sa.select(t.c.fingerprint, t.c.updated_at, t.c.ends_at)
            if now - self._last_reconcile >= self.RECONCILE_EVERY_S or now < self._last_reconcile:
                self._last_reconcile = now
            else:
                probe = probe.where(t.c.updated_at >= self._watermark - self.READ_SLACK_S)
            recent = conn.execute(probe)
            stale = []
            for fp, updated_at, ends_at in recent:
                known = self._alerts.get(fp)
                if known is None or (known.updated_at, known.ends_at) != (updated_at, ends_at):
                    stale.append(fp)
            rows = []
            for i in range(0, len(stale), _CHUNK):
                rows += list(conn.execute(sa.select(t).where(t.c.fingerprint.in_(stale[i : i + _CHUNK]))).mappings())
        changed = []
        for row in rows:
            alert = _alert_from_row(row)
            self._index(alert)
            changed.append(alert)
            self._watermark = max(self._watermark, alert.updated_at)
        return changed

    # ------------------------------------------------------------------ tick
    def _tick(self, conn: Connection, now: float) -> int:
        changed = self._load_changes(conn, now)

        new_groups: dict[tuple[str, str], float] = {}
        for alert in changed:
            if not alert.firing(now):
                continue
            for key in self._alert_groups.get(alert.fingerprint, []):
                if key in self._next_flush or key[0] not in self._routes:
                    continue
                # group_wait counts from the first alert, not from when a notifier saw it, so a
                # restarted or lagging notifier does not delay notifications further.
                start = alert.starts_at + self._routes[key[0]].group_wait
                new_groups[key] = min(new_groups.get(key, start), start)
        if new_groups:
            rows = [
                {
                    "receiver": key[0], "group_key": key[1], "group_labels": self._group_labels[key],
                    "created_at": now, "next_flush_at": first_flush, "last_notified_at": None,
                    "notified_firing": [], "seq": 0,
                }
                for key, first_flush in new_groups.items()
            ]
            # Another notifier (a second dispatcher) may create some at the same moment.
            db.insert_many_ignore(conn, db.groups, rows, ["receiver", "group_key"])
            self._next_flush.update(new_groups)

        enqueued = 0
        due = [key for key, at in self._next_flush.items() if at <= now]
        if due:
            enqueued = self._flush_groups(conn, due, now)

        if now - self._last_retention >= self.RETENTION_EVERY_S:
            self._last_retention = now
            horizon = now - self._retention_s
            conn.execute(sa.delete(db.alerts).where(db.alerts.c.ends_at < horizon))
            for fp in [fp for fp, a in self._alerts.items() if a.ends_at < horizon]:
                self._forget(fp)
        return enqueued

    def _flush_groups(self, conn: Connection, due: list[tuple[str, str]], now: float) -> int:
        """Flush due groups with a fixed number of statements, however many groups are due."""
        g_t = db.groups
        # Re-read inside the transaction: the database, not this index, says what was notified.
        current: dict[tuple[str, str], dict[str, object]] = {}
        for i in range(0, len(due), _CHUNK):
            chunk = [gk for _, gk in due[i : i + _CHUNK]]
            for row in conn.execute(sa.select(g_t).where(g_t.c.group_key.in_(chunk))).mappings():
                current[(row["receiver"], row["group_key"])] = dict(row)

        updates: list[dict[str, object]] = []
        deletes: list[str] = []
        payloads: list[Notification] = []
        for key in due:
            receiver, gk = key
            g = current.get(key)
            route = self._routes.get(receiver)
            group_alerts = [self._alerts[fp] for fp in self._members.get(key, ())]
            if g is None:
                self._next_flush.pop(key, None)
                continue
            if route is None or (not g["notified_firing"] and not any(a.firing(now) for a in group_alerts)):
                deletes.append(gk)
                self._next_flush.pop(key, None)
                continue
            if float(g["next_flush_at"]) > now:  # type: ignore[arg-type]  # flushed by another notifier
                self._next_flush[key] = float(g["next_flush_at"])  # type: ignore[arg-type]
                continue
            send_resolved = self._receivers[receiver]
            notified = set(g["notified_firing"])  # type: ignore[call-overload]
            firing = [a for a in group_alerts if a.firing(now)]
            firing_fps = {a.fingerprint for a in firing}
            resolved = [a for a in group_alerts if not a.firing(now) and a.fingerprint in notified]
            last = g["last_notified_at"]
            repeat_due = last is None or now - float(last) >= route.repeat_interval  # type: ignore[arg-type]
            need = bool(firing_fps - notified) or (send_resolved and bool(resolved)) or (bool(firing) and repeat_due)
            update = {
                "k_gk": gk, "next_flush_at": now + route.group_interval, "seq": g["seq"],
                "last_notified_at": last, "notified_firing": g["notified_firing"],
            }
            if need:
                seq = int(g["seq"]) + 1  # type: ignore[call-overload]
                ikey = idempotency_key(receiver, gk, float(g["created_at"]), seq)  # type: ignore[arg-type]
                payloads.append(self._message(ikey, receiver, gk, g["group_labels"], firing, resolved if send_resolved else [], now))  # type: ignore[arg-type]
                update.update(seq=seq, last_notified_at=now, notified_firing=sorted(firing_fps))
            elif not firing:
                update["notified_firing"] = []  # everything resolved, nothing to tell
            else:
                # Not sending resolutions: forget them so they cannot count later.
                update["notified_firing"] = sorted(notified - {a.fingerprint for a in resolved})
            updates.append(update)
            self._next_flush[key] = now + route.group_interval

        for i in range(0, len(deletes), _CHUNK):
            conn.execute(sa.delete(g_t).where(g_t.c.group_key.in_(deletes[i : i + _CHUNK])))
        if updates:
            conn.execute(
                sa.update(g_t)
                .where(g_t.c.group_key == sa.bindparam("k_gk"))
                .values(
                    next_flush_at=sa.bindparam("next_flush_at"), seq=sa.bindparam("seq"),
                    last_notified_at=sa.bindparam("last_notified_at"), notified_firing=sa.bindparam("notified_firing"),
                ),
                updates,
            )
        added = self._outbox.enqueue_many(conn, payloads, now)
        if self._metrics:
            for n in added:
                self._metrics.notifications.labels(n.receiver, n.message.status).inc()
        return len(added)

    def _message(
        self, key: str, receiver: str, gk: str, group_labels: dict[str, str], firing: list[Alert], resolved: list[Alert], now: float
    ) -> Notification:
        shown = sorted(firing, key=lambda a: (a.starts_at, a.fingerprint)) + sorted(resolved, key=lambda a: (a.starts_at, a.fingerprint))
        limit = self._max_alerts.get(receiver, 0)
        kept = shown[:limit] if limit else shown
        alerts = [WebhookAlert.of(a, now, self._links) for a in kept]
        message = WebhookMessage(
            groupKey=am_group_key(receiver, group_labels),
            truncatedAlerts=len(shown) - len(kept),
            status="firing" if firing else "resolved",
            receiver=receiver,
            groupLabels=group_labels,
            commonLabels=_common([a.labels for a in alerts]),
            commonAnnotations=_common([a.annotations for a in alerts]),
            externalURL=self._external_url,
            alerts=alerts,
        )
        return Notification(key, receiver, gk, message)


def _common(label_sets: list[dict[str, str]]) -> dict[str, str]:
    """Pairs shared by every set (Alertmanager's commonLabels / commonAnnotations)."""
    if not label_sets:
        return {}
    first = label_sets[0]
    return {k: v for k, v in sorted(first.items()) if all(ls.get(k) == v for ls in label_sets[1:])}
