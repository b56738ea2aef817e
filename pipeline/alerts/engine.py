"""Evaluates verdicts against the alert rules and keeps the rule state.

State (window buckets, risk scores, model-hopping sightings, alerts) is held in memory for
speed and written to the alert database by :meth:`AlertEngine.save` in the caller's transaction,
so the sink can commit it together before Kafka offsets are committed. The engine only ever sees
:class:`~pipeline.schemas.MisuseVerdict` (pseudonymised user, redacted evidence), never the raw
inference log, so no prompt text can reach an alert.

Windows use the verdict's event time clamped to now: a replay after a crash lands in the same
buckets, and a verdict older than the rule's history is ignored by rate rules instead of
inflating the current window (a lagging stream does not look like a spike).

Scaling out: all state belongs to the input partition its verdict came from, so several stream
replicas can share one alert database. :meth:`AlertEngine.assign` loads the state of newly
assigned partitions and :meth:`AlertEngine.release` drops revoked ones (after the caller saved
them). Per-user rules (verdict, repeat offender, model hopping) then need nothing more, because
records are keyed by tenant and user (one user, one partition). Rate rules count per partition;
a key's window is the sum over all partitions, and only the replica holding the key's *owner
partition* (a hash of rule and key) asserts its alert, reading the other partitions' counts
from the database every tick. Until :meth:`assign` is called the engine owns every partition
(a single process, the behaviour of older runners).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.alerts import state as db
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.model import Alert, fingerprint
from pipeline.alerts.rules import (
    AlertRules,
    ModelHoppingRule,
    RateRule,
    RepeatOffenderRule,
    VerdictFilter,
    VerdictRule,
    _RuleBase,
)
from pipeline.redact import redact as redact_identifiers
from pipeline.schemas import EVIDENCE_MAX_CHARS, Category, MisuseVerdict

MAX_EVIDENCE_PER_ALERT = 5
# A model-hopping alert names this many of the newest models (plus how many there were), and a
# user's sightings keep at most this many targets beyond the rule's min_distinct: 2,000 distinct
# model names made one alert of about 500 KB, rewritten at every flush and re-sent to Alertmanager
# every minute (a hostile review, 2026-12-07).
MAX_NAMED_TARGETS = 10
MAX_SIGHTINGS = 100
PRUNE_EVERY_S = 10.0
_ALL_CATEGORIES = "*"
@functools.lru_cache(maxsize=8192)
def redact(text: str) -> str:
    """A second pass over evidence that detectors already redacted: alerts leave the system.

    Cached: the pass runs Presidio (spaCy NER, ~10-25 ms a snippet on 2 busy cores) and the same
    snippet recurs across verdicts (a detector's matched phrase), so the alert path does not pay
    for it again per verdict."""
    return redact_identifiers(text)[:EVIDENCE_MAX_CHARS]


def matches(f: VerdictFilter, v: MisuseVerdict) -> list[Category]:
    """Categories of ``v`` that satisfy the filter ([] when the verdict does not match)."""
    if not v.flagged or v.severity.rank < f.min_severity.rank:
        return []
    if f.complied is not None and bool(v.complied) != f.complied:
        return []
    if not _scope_ok(f, v):
        return []
    wanted = set(f.categories)
    return [c for c in v.categories if not wanted or c in wanted]


def _scope_ok(f: VerdictFilter, v: MisuseVerdict) -> bool:
    return (
        (not f.tenants or v.tenant_id in f.tenants)
        and (not f.deployments or v.deployment in f.deployments)
        and (not f.models or v.model in f.models)
    )


def _evidence(v: MisuseVerdict, categories: Iterable[Category]) -> list[dict[str, str | float]]:
    wanted = set(categories)
    return [
        {
            "request_id": v.request_id,
            "category": f.category.value,
            "subcategory": f.subcategory or "",
            "side": f.side.value,
            "score": round(f.score, 4),
            "detector": f.detector,
            "snippet": redact(f.evidence),
        }
        for f in v.findings
        if f.category in wanted
    ]


def _added(a: tuple[float, float, dict], b: tuple[float, float, dict], half_life: float) -> tuple[float, float, dict]:
    """Two risk scores of one key, each as of its own time, added as of the later one."""
    (early, late) = (a, b) if a[1] <= b[1] else (b, a)
    return (late[0] + early[0] * 0.5 ** ((late[1] - early[1]) / half_life), late[1], late[2])


def _decayed(score: float, updated: float, now: float, half_life: float) -> float:
    """A risk score held as of ``updated``, as of ``now``; never grown by a clock stepped back
    past ``updated`` (a negative wait grew scores, and a big one overflowed 0.5 ** x)."""
    return score * 0.5 ** (max(0.0, now - updated) / half_life)


def _subject(user_id: str, tenant_id: str | None) -> str:
    """Whose risk score and model sightings a verdict adds to: one user of one tenant.

    User ids are the tenant's own (a request's ``user`` field), so user "1042" of acme and user
    "1042" of globex are two people with one pseudonym. Keyed on the pseudonym alone, their scores
    added up, and one alert showed both tenants' evidence under whichever tenant came last (a
    hostile review, 2026-12-07). The tenant goes in as a hash so the key fits the state tables'
    256 characters; the alert itself carries the tenant as a label."""
    if not tenant_id:
        return user_id
    key = f"{user_id}@{hashlib.sha256(tenant_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    if len(key) <= 256:
        return key
    return "h_" + hashlib.sha256(f"{user_id}\0{tenant_id}".encode("utf-8", "surrogatepass")).hexdigest()


def _base_labels(rule: _RuleBase, **values: str | None) -> dict[str, str]:
    labels = {"alertname": rule.name, "severity": rule.severity}
    labels.update({k: v for k, v in values.items() if v})
    labels.update(rule.labels)
    return labels


@dataclass
class _Dirty:
    alerts: set[str] = field(default_factory=set)
    buckets: set[tuple[int, str, str, float]] = field(default_factory=set)
    risk: set[tuple[int, str, str]] = field(default_factory=set)
    hops: set[tuple[int, str, str, str]] = field(default_factory=set)
    gone_buckets: set[tuple[int, str, str, float]] = field(default_factory=set)
    gone_risk: set[tuple[int, str, str]] = field(default_factory=set)
    gone_hops: set[tuple[int, str, str, str]] = field(default_factory=set)


def owner_partition(rule: str, key: str, partition_count: int) -> int:
    """The partition whose holder evaluates rate key ``key`` of ``rule`` (stable across replicas)."""
    return zlib.crc32(f"{rule}\x00{key}".encode()) % max(1, partition_count)


class AlertEngine:
    """Not thread-safe: the owner (the alerts sink) serialises observe/tick/save."""

    def __init__(
        self,
        rules: AlertRules,
        *,
        clock: Callable[[], float] = time.time,
        metrics: AlertMetrics | None = None,
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._metrics = metrics
        self.alerts: dict[str, Alert] = {}
        # rule -> key -> bucket start -> partition -> [flagged, total]; partitions this engine
        # does not own are read-only copies (refreshed from the database) for the window sums.
        self._buckets: dict[str, dict[str, dict[float, dict[int, list[int]]]]] = defaultdict(lambda: defaultdict(dict))
        self._risk: dict[tuple[int, str, str], tuple[float, float, dict[str, str]]] = {}
        self._hops: dict[tuple[int, str, str], dict[str, tuple[float, str | None]]] = defaultdict(dict)
        self._dirty = _Dirty()
        self._last_prune = 0.0
        self._owned: set[int] | None = None  # None: every partition (single process)
        self._partition_count = 1
        # (rule, key, bucket, partition) -> (flagged, total) last read for partitions not owned
        self._foreign: dict[tuple[str, str, float, int], tuple[int, int]] = {}
        self._review_all_rates = False

    # ------------------------------------------------------------------ persistence
    def now(self) -> float:
        return self._clock()

    def owns(self, partition: int) -> bool:
        return self._owned is None or partition in self._owned

    def load(self, conn: Connection, partitions: set[int] | None = None) -> None:
        """Restore alerts, windows, scores and sightings of ``partitions`` (None: all)."""
        names = {r.name for r in self.rules.rules}
        now = self._clock()

        def rows(table: sa.Table) -> Iterable[sa.RowMapping]:
            query = sa.select(table)
            if partitions is not None:
                query = query.where(table.c.partition.in_(sorted(partitions)))
            return (r for r in conn.execute(query).mappings() if r["rule"] in names)

        for row in rows(db.alerts):
            self.alerts[row["fingerprint"]] = Alert(
                rule=row["rule"], labels=dict(row["labels"]), annotations=dict(row["annotations"]),
                starts_at=row["starts_at"], ends_at=row["ends_at"], updated_at=row["updated_at"],
                evidence=list(row["evidence"]), receivers=list(row["receivers"]), partition=row["partition"],
            )
        for row in rows(db.rate_buckets):
            self._buckets[row["rule"]][row["key_values"]].setdefault(row["bucket"], {})[row["partition"]] = [row["flagged"], row["total"]]
        # Rows written before users were keyed by tenant (2026-12-07) hold the pseudonym alone: moved
        # to the key of the tenant they name, so an upgrade neither resets a score nor splits it.
        for row in rows(db.risk_scores):
            context = dict(row["context"])
            key = (row["partition"], row["rule"], self._rekeyed(row["user_id"], context.get("tenant")))
            # Written before the host's clock stepped back: held as of now (see _observe_offender).
            score = (row["score"], min(row["updated_at"], now), context)
            if key[2] != row["user_id"]:
                self._dirty.gone_risk.add((row["partition"], row["rule"], row["user_id"]))
                self._dirty.risk.add(key)
            # A replica of this release may have written the new key already: in whichever order
            # the two rows come, they add up.
            self._risk[key] = _added(self._risk[key], score, self.rules.rule(row["rule"]).half_life) if key in self._risk else score
        for row in rows(db.hop_sightings):
            key = (row["partition"], row["rule"], self._rekeyed(row["user_id"], row["tenant"]))
            if key[2] != row["user_id"]:
                self._dirty.gone_hops.add((row["partition"], row["rule"], row["user_id"], row["target"]))
                self._dirty.hops.add((*key, row["target"]))
            seen = self._hops[key].get(row["target"])
            if seen is None or seen[0] < row["last_seen"]:
                self._hops[key][row["target"]] = (row["last_seen"], row["tenant"])

    @staticmethod
    def _rekeyed(user: str, tenant: str | None) -> str:
        """The key of a risk or sightings row: rows written before users were keyed by tenant hold
        the pseudonym alone (no "@"), and move to the key of the tenant they name."""
        if "@" in user or user.startswith("h_") or not tenant:
            return user
        return _subject(user, tenant)

    def assign(self, conn: Connection, partitions: Iterable[int], partition_count: int) -> None:
        """Partitions were assigned to this replica: own them and load their state (another
        replica may have advanced it since we last held them)."""
        new = set(partitions)
        if self._owned is None:  # leaving single-process mode: keep only what we now own
            self._owned = set()
            self._drop(lambda p: True)
        self._partition_count = max(1, partition_count)
        self._drop(lambda p: p in new)
        self._owned |= new
        self.load(conn, new)
        # Rate keys this replica now owns may have been evaluated last by a replica that died
        # before the final counts arrived; no count need change again to bring them up to date.
        self._review_all_rates = True

    def release(self, partitions: Iterable[int]) -> None:
        """Partitions were revoked (the caller saved their state first): forget them."""
        gone = set(partitions)
        if self._owned is None:
            self._owned = set()
            self._drop(lambda p: True)
            return
        self._owned -= gone
        self._drop(lambda p: p in gone)

    def _drop(self, which: Callable[[int], bool]) -> None:
        self.alerts = {fp: a for fp, a in self.alerts.items() if not which(a.partition)}
        for keys in self._buckets.values():
            for buckets in keys.values():
                for parts in buckets.values():
                    for p in [p for p in parts if which(p)]:
                        del parts[p]
        self._risk = {k: v for k, v in self._risk.items() if not which(k[0])}
        for k in [k for k in self._hops if which(k[0])]:
            del self._hops[k]
        d = self._dirty
        d.alerts = {fp for fp in d.alerts if fp in self.alerts}
        for name in ("buckets", "risk", "hops", "gone_buckets", "gone_risk", "gone_hops"):
            setattr(d, name, {k for k in getattr(d, name) if not which(k[0])})

    def refresh_foreign(self, conn: Connection, now: float) -> set[tuple[str, str]]:
        """Re-read other partitions' rate counts (they are another replica's to write); returns
        the (rule, key) pairs whose counts changed since the last refresh."""
        if self._owned is None or self._owned >= set(range(self._partition_count)):
            return set()  # one process, or this replica holds every partition: nothing foreign
        rate_rules = [r for r in self.rules.rules if isinstance(r, RateRule)]
        if not rate_rules:
            return set()
        horizon = now - max(r.history_s + r.bucket_s for r in rate_rules)
        t = db.rate_buckets
        query = sa.select(t.c.rule, t.c.key_values, t.c.bucket, t.c.partition, t.c.flagged, t.c.total).where(
            t.c.bucket >= horizon, t.c.rule.in_([r.name for r in rate_rules])
        )
        if self._owned:
            query = query.where(t.c.partition.not_in(sorted(self._owned)))
        fresh = {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in conn.execute(query)}
        old = self._foreign
        changed = {(r, k) for (r, k, b, p), v in fresh.items() if old.get((r, k, b, p)) != v}
        changed |= {(r, k) for (r, k, b, p) in old if (r, k, b, p) not in fresh}
        for rule, key, bucket, p in old:
            parts = self._buckets.get(rule, {}).get(key, {}).get(bucket)
            if parts is not None and p not in self._owned:
                parts.pop(p, None)
        for (rule, key, bucket, p), (flagged, total) in fresh.items():
            self._buckets[rule][key].setdefault(bucket, {})[p] = [flagged, total]
        self._foreign = fresh
        return changed

    def evaluate_owned_rates(self, now: float, keys: Iterable[tuple[str, str]]) -> None:
        """Re-evaluate the rate keys this replica owns among ``keys`` (from :meth:`refresh_foreign`),
        and every rate key it owns after an assignment."""
        keys = set(keys)
        if self._review_all_rates:
            self._review_all_rates = False
            keys |= {(rule_name, key) for rule_name, by_key in self._buckets.items() for key in by_key}
        for rule_name, key in sorted(keys):
            rule = self._rule_or_none(rule_name)
            if isinstance(rule, RateRule) and self._owns_key(rule, key):
                self._evaluate_rate(rule, key, now)

    def _owns_key(self, rule: RateRule, key: str) -> bool:
        return self.owns(owner_partition(rule.name, key, self._partition_count))

    def save(self, conn: Connection) -> int:
        """Write changed state in the caller's transaction; returns how many alerts changed. The
        changes stay marked unsaved until :meth:`mark_saved` (after the COMMIT)."""
        d = self._dirty
        alert_rows = [
            {
                "fingerprint": fp, "rule": a.rule, "labels": a.labels, "annotations": a.annotations,
                "evidence": a.evidence, "receivers": a.receivers, "starts_at": a.starts_at,
                "ends_at": a.ends_at, "updated_at": a.updated_at, "partition": a.partition,
            }
            for fp in sorted(d.alerts)
            if (a := self.alerts.get(fp)) is not None
        ]
        db.upsert(conn, db.alerts, alert_rows, ["fingerprint"])
        bucket_rows = []
        for p, rule, key, bucket in sorted(d.buckets):
            counts = self._buckets.get(rule, {}).get(key, {}).get(bucket, {}).get(p)
            if counts is not None:
                bucket_rows.append({
                    "partition": p, "rule": rule, "key": db.rate_key_hash(key), "key_values": key,
                    "bucket": bucket, "flagged": counts[0], "total": counts[1],
                })
        db.upsert(conn, db.rate_buckets, bucket_rows, ["partition", "rule", "key", "bucket"])
        risk_rows = [
            {"partition": p, "rule": r, "user_id": u, "score": s[0], "updated_at": s[1], "context": s[2]}
            for p, r, u in sorted(d.risk)
            if (s := self._risk.get((p, r, u))) is not None
        ]
        db.upsert(conn, db.risk_scores, risk_rows, ["partition", "rule", "user_id"])
        hop_rows = [
            {"partition": p, "rule": r, "user_id": u, "target": t, "last_seen": seen[0], "tenant": seen[1]}
            for p, r, u, t in sorted(d.hops)
            if (seen := self._hops.get((p, r, u), {}).get(t)) is not None
        ]
        db.upsert(conn, db.hop_sightings, hop_rows, ["partition", "rule", "user_id", "target"])
        t = db.rate_buckets
        for p, rule, key, bucket in d.gone_buckets:
            conn.execute(
                sa.delete(t).where(t.c.partition == p, t.c.rule == rule, t.c.key == db.rate_key_hash(key), t.c.bucket == bucket)
            )
        t = db.risk_scores
        for p, rule, user in d.gone_risk:
            conn.execute(sa.delete(t).where(t.c.partition == p, t.c.rule == rule, t.c.user_id == user))
        t = db.hop_sightings
        for p, rule, user, target in d.gone_hops:
            conn.execute(sa.delete(t).where(t.c.partition == p, t.c.rule == rule, t.c.user_id == user, t.c.target == target))
        return len(alert_rows)

    def mark_saved(self) -> None:
        """The transaction :meth:`save` wrote in has committed: nothing is unsaved now. Apart from
        ``save``, so that a failed COMMIT leaves every change unsaved for the retry."""
        self._dirty = _Dirty()

    @property
    def has_changes(self) -> bool:
        d = self._dirty
        return bool(d.alerts or d.buckets or d.risk or d.hops or d.gone_buckets or d.gone_risk or d.gone_hops)

    # ------------------------------------------------------------------ evaluation
    def observe(self, verdicts: Sequence[MisuseVerdict], partitions: Sequence[int] | None = None) -> None:
        """Runs once per micro-batch with every verdict (flagged or not: shares need totals);
        ``partitions[i]`` is the input partition of ``verdicts[i]`` (default 0)."""
        now = self._clock()
        touched: dict[str, set[str]] = defaultdict(set)
        for i, v in enumerate(verdicts):
            p = partitions[i] if partitions is not None else 0
            for rule in self.rules.rules:
                if isinstance(rule, VerdictRule):
                    self._observe_verdict_rule(rule, v, now, p)
                elif isinstance(rule, RateRule):
                    touched[rule.name].update(self._observe_rate(rule, v, now, p))
                elif isinstance(rule, RepeatOffenderRule):
                    self._observe_offender(rule, v, now, p)
                elif isinstance(rule, ModelHoppingRule):
                    self._observe_hopping(rule, v, now, p)
        for rule_name, keys in touched.items():
            rule = self.rules.rule(rule_name)
            assert isinstance(rule, RateRule)
            for key in keys:
                if self._owns_key(rule, key):  # other keys: their owner evaluates them on its tick
                    self._evaluate_rate(rule, key, now)

    def tick(self) -> None:
        """Runs periodically: re-evaluates firing rate alerts whose end is not known ahead
        (share and baseline) and drops state that fell out of every window."""
        now = self._clock()
        for a in list(self.alerts.values()):
            if not a.firing(now):
                continue
            rule = self._rule_or_none(a.rule)
            if isinstance(rule, RateRule) and (rule.measure == "share" or rule.baseline is not None):
                key = a.annotations.get("_key")
                if key is not None:
                    self._evaluate_rate(rule, key, now)
        # A full pass over the state: not every tick. Also when the clock stepped back past the
        # last pass, or pruning waited for the clock to catch up.
        if not 0.0 <= now - self._last_prune < PRUNE_EVERY_S:
            self._last_prune = now
            self._prune(now)

    def _rule_or_none(self, name: str) -> _RuleBase | None:
        try:
            return self.rules.rule(name)
        except KeyError:
            return None

    def _assert(
        self,
        rule: _RuleBase,
        labels: dict[str, str],
        now: float,
        ends_at: float,
        annotations: dict[str, str],
        evidence: list[dict[str, str | float]] | None = None,
        *,
        partition: int,
    ) -> Alert:
        fp = fingerprint(labels)
        alert = self.alerts.get(fp)
        if alert is None or not alert.firing(now):
            alert = Alert(
                rule=rule.name, labels=labels, annotations=annotations, starts_at=now, ends_at=ends_at,
                updated_at=now, evidence=[], receivers=list(rule.receivers), partition=partition,
            )
            self.alerts[fp] = alert
            if self._metrics:
                self._metrics.fired.labels(rule.name, rule.severity).inc()
        else:
            alert.annotations = annotations
            alert.ends_at = ends_at
            alert.updated_at = now
        if evidence:
            alert.evidence = (alert.evidence + evidence)[-MAX_EVIDENCE_PER_ALERT:]
        self._dirty.alerts.add(fp)
        return alert

    def _resolve(self, labels: dict[str, str], now: float) -> None:
        fp = fingerprint(labels)
        alert = self.alerts.get(fp)
        if alert is not None and alert.firing(now):
            # Resolved now, even if the clock stepped back before its start (``firing(now)`` must
            # turn false); what goes to Alertmanager never ends before it starts (model.py).
            alert.ends_at = now
            alert.updated_at = now
            self._dirty.alerts.add(fp)

    # verdict rules --------------------------------------------------------------
    def _observe_verdict_rule(self, rule: VerdictRule, v: MisuseVerdict, now: float, partition: int) -> None:
        for category in matches(rule.match, v):
            labels = _base_labels(
                rule, category=category.value, tenant=v.tenant_id, deployment=v.deployment, model=v.model, user=v.user_id
            )
            previous = self.alerts.get(fingerprint(labels))
            count = 1
            if previous is not None and previous.firing(now):
                count = int(previous.annotations.get("count", "0")) + 1
            summary = rule.description or f"{category.value} verdict at severity {v.severity.value}"
            self._assert(
                rule,
                labels,
                now,
                now + rule.resolve_after,
                {
                    "summary": summary,
                    "verdict_severity": v.severity.value,
                    "complied": "unknown" if v.complied is None else str(v.complied).lower(),
                    "last_request_id": v.request_id,
                    "count": str(count),
                },
                _evidence(v, [category]),
                partition=partition,
            )

    # rate rules -----------------------------------------------------------------
    def _observe_rate(self, rule: RateRule, v: MisuseVerdict, now: float, partition: int) -> set[str]:
        if not _scope_ok(rule.match, v):
            return set()
        t = min(v.timestamp.timestamp(), now)
        if t < now - rule.history_s:
            return set()
        bucket = math.floor(t / rule.bucket_s) * rule.bucket_s
        dims = {"tenant": v.tenant_id, "deployment": v.deployment, "model": v.model}
        flagged_categories = matches(rule.match, v)
        touched: set[str] = set()
        if "category" in rule.per:
            self._bump(rule, self._key(rule, dims, _ALL_CATEGORIES), bucket, 0, 1, partition)
            for c in flagged_categories:
                key = self._key(rule, dims, c.value)
                self._bump(rule, key, bucket, 1, 0, partition)
                touched.add(key)
        else:
            key = self._key(rule, dims, None)
            self._bump(rule, key, bucket, 1 if flagged_categories else 0, 1, partition)
            touched.add(key)
        return touched

    @staticmethod
    def _key(rule: RateRule, dims: dict[str, str | None], category: str | None) -> str:
        values = [category if d == "category" else (dims[d] or "unknown") for d in rule.per]
        return json.dumps(values, separators=(",", ":"))

    def _bump(self, rule: RateRule, key: str, bucket: float, flagged: int, total: int, partition: int) -> None:
        counts = self._buckets[rule.name][key].setdefault(bucket, {}).setdefault(partition, [0, 0])
        counts[0] += flagged
        counts[1] += total
        self._dirty.buckets.add((partition, rule.name, key, bucket))

    def _sum(self, rule: RateRule, key: str, now: float, windows_back: int = 0) -> tuple[int, int]:
        """Flagged and total in one window: the last ``rule.buckets`` buckets up to the one
        holding ``now`` (``windows_back`` > 0: that many whole windows earlier). Windows built
        from whole buckets partition time, so a baseline never counts a bucket twice."""
        current = math.floor(now / rule.bucket_s) * rule.bucket_s
        hi = current - windows_back * rule.window
        lo = hi - rule.window
        flagged = total = 0
        for bucket, parts in self._buckets[rule.name].get(key, {}).items():
            if lo + rule.bucket_s / 2 < bucket < hi + rule.bucket_s / 2:
                for f, t in parts.values():
                    flagged += f
                    total += t
        return flagged, total

    def _evaluate_rate(self, rule: RateRule, key: str, now: float) -> None:
        values = json.loads(key)
        labels = _base_labels(rule, **dict(zip(rule.per, values, strict=True)))
        total_key = key
        if "category" in rule.per:
            total_key = json.dumps(
                [_ALL_CATEGORIES if d == "category" else x for d, x in zip(rule.per, values, strict=True)],
                separators=(",", ":"),
            )
        flagged = self._sum(rule, key, now)[0]
        total = self._sum(rule, total_key, now)[1]
        share = flagged / total if total else 0.0
        value = share if rule.measure == "share" else float(flagged)
        ends_at = now + rule.bucket_s
        if rule.threshold is not None:
            firing = value >= rule.threshold and (rule.measure == "count" or total >= rule.min_total)
            reference = f"threshold {rule.threshold:g}"
            if firing and rule.measure == "count":
                ends_at = self._count_drops_below(rule, key, rule.threshold)
        else:
            assert rule.baseline is not None
            b = rule.baseline
            past = []
            for i in range(1, b.windows + 1):
                pf = self._sum(rule, key, now, i)[0]
                pt = self._sum(rule, total_key, now, i)[1]
                past.append((pf / pt if pt else 0.0) if rule.measure == "share" else float(pf))
            mean = sum(past) / len(past)
            firing = flagged >= b.min_count and value >= b.factor * mean and (rule.measure == "count" or total >= rule.min_total)
            reference = f"baseline mean {mean:.4g} x{b.factor:g}"
        if not firing:
            self._resolve(labels, now)
            return
        existing = self.alerts.get(fingerprint(labels))
        if (
            existing is not None and existing.firing(now) and existing.ends_at - now > rule.bucket_s / 2
            and existing.annotations.get("value") == f"{value:.4g}"
            and existing.annotations.get("flagged") == str(flagged) and existing.annotations.get("total") == str(total)
        ):
            return  # unchanged; avoid rewriting the row every tick (a share can stay put while its counts grow)
        self._assert(
            rule, labels, now, ends_at,
            partition=owner_partition(rule.name, key, self._partition_count),
            annotations={
                "summary": rule.description or f"{rule.measure} of flagged verdicts over {rule.window:g}s is {value:.4g} ({reference})",
                "value": f"{value:.4g}",
                "flagged": str(flagged),
                "total": str(total),
                "window_s": f"{rule.window:g}",
                "_key": key,
            },
        )

    def _count_drops_below(self, rule: RateRule, key: str, threshold: float) -> float:
        """When the window count falls under ``threshold`` if nothing new arrives."""
        now = self._clock()
        oldest = math.floor(now / rule.bucket_s) * rule.bucket_s - rule.window + rule.bucket_s / 2
        buckets = sorted(
            (b, sum(c[0] for c in parts.values())) for b, parts in self._buckets[rule.name].get(key, {}).items() if b > oldest
        )
        remaining = sum(f for _, f in buckets)
        for bucket, f in buckets:
            remaining -= f
            if remaining < threshold:
                return bucket + rule.window  # when this bucket leaves the window
        return now + rule.bucket_s

    # repeat offenders ---------------------------------------------------------------
    def _observe_offender(self, rule: RepeatOffenderRule, v: MisuseVerdict, now: float, partition: int) -> None:
        if v.user_id is None or not matches(rule.match, v):
            return
        key = (partition, rule.name, _subject(v.user_id, v.tenant_id))
        # Decay by event time (clamped to now), as the windows do: verdicts replayed after an
        # outage decay between each other as they did live instead of piling up undecayed.
        # The score is held as of the latest event time seen; an older verdict adds its weight
        # already decayed to that point.
        t = min(v.timestamp.timestamp(), now)
        score, updated, context = self._risk.get(key, (0.0, t, {}))
        # A score held as of a time ahead of now (the host's clock stepped back: NTP, a VM
        # restored) is taken as of now, and every decay below waits at least 0 s: a negative wait
        # grew the score (an alert that should not fire), and a big step overflowed 0.5 ** x and
        # raised out of every batch and flush (a hostile review, 2026-12-07).
        updated = min(updated, now)
        weight = rule.weights.get(v.severity, 0.0)
        if t >= updated:
            score = score * 0.5 ** ((t - updated) / rule.half_life) + weight
            updated = t
        else:
            score += weight * 0.5 ** ((updated - t) / rule.half_life)
        context = {"tenant": v.tenant_id or "", "last_request_id": v.request_id}
        self._risk[key] = (score, updated, context)
        self._dirty.risk.add(key)
        self._dirty.gone_risk.discard(key)
        score = _decayed(score, updated, now, rule.half_life)  # as of now: what fires is the present score
        if score >= rule.threshold:
            ends_at = now + rule.half_life * math.log2(score / rule.threshold)
            self._assert(
                rule,
                _base_labels(rule, tenant=v.tenant_id, user=v.user_id),
                now,
                max(ends_at, now + 1.0),
                {
                    "summary": rule.description or f"user risk score {score:.3g} >= {rule.threshold:g}",
                    "risk_score": f"{score:.4g}",
                    "tenant": v.tenant_id or "",
                    "last_request_id": v.request_id,
                },
                _evidence(v, matches(rule.match, v)),
                partition=partition,
            )

    # model hopping ---------------------------------------------------------------------
    def _observe_hopping(self, rule: ModelHoppingRule, v: MisuseVerdict, now: float, partition: int) -> None:
        target = v.model if rule.across == "model" else v.deployment
        if v.user_id is None or target is None or not matches(rule.match, v):
            return
        seen_at = min(v.timestamp.timestamp(), now)
        subject = _subject(v.user_id, v.tenant_id)
        sightings = self._hops[(partition, rule.name, subject)]
        if seen_at < now - rule.window:
            return
        previous = sightings.get(target)
        if previous is None or previous[0] < seen_at:
            sightings[target] = (seen_at, v.tenant_id)
            self._dirty.hops.add((partition, rule.name, subject, target))
            self._dirty.gone_hops.discard((partition, rule.name, subject, target))
            if len(sightings) > rule.min_distinct + MAX_SIGHTINGS:  # only the newest decide
                oldest = min(sightings, key=lambda t: sightings[t][0])
                del sightings[oldest]
                self._dirty.hops.discard((partition, rule.name, subject, oldest))
                self._dirty.gone_hops.add((partition, rule.name, subject, oldest))
        recent = sorted(((s[0], t) for t, s in sightings.items() if s[0] > now - rule.window), reverse=True)
        if len(recent) >= rule.min_distinct:
            ends_at = recent[rule.min_distinct - 1][0] + rule.window
            named = sorted(t for _, t in recent[:MAX_NAMED_TARGETS])
            if len(recent) > MAX_NAMED_TARGETS:
                named.append(f"... {len(recent) - MAX_NAMED_TARGETS} more")
            self._assert(
                rule,
                _base_labels(rule, tenant=v.tenant_id, user=v.user_id),
                now,
                ends_at,
                {
                    "summary": rule.description
                    or f"user flagged on {len(recent)} distinct {rule.across}s within {rule.window:g}s",
                    rule.across + "s": ",".join(named),
                    "distinct": str(len(recent)),
                    "tenant": v.tenant_id or "",
                    "last_request_id": v.request_id,
                },
                _evidence(v, matches(rule.match, v)),
                partition=partition,
            )

    # housekeeping ------------------------------------------------------------------------
    def _prune(self, now: float) -> None:
        for rule in self.rules.rules:
            if isinstance(rule, RateRule):
                horizon = now - rule.history_s - rule.bucket_s
                for key, buckets in list(self._buckets[rule.name].items()):
                    for bucket in [b for b in buckets if b < horizon]:
                        for p in buckets.pop(bucket):
                            self._dirty.buckets.discard((p, rule.name, key, bucket))
                            if self.owns(p):  # other partitions' rows are their owner's to delete
                                self._dirty.gone_buckets.add((p, rule.name, key, bucket))
                    if not buckets:
                        del self._buckets[rule.name][key]
            elif isinstance(rule, RepeatOffenderRule):
                for (p, name, user), (score, updated, _c) in list(self._risk.items()):
                    if name == rule.name and _decayed(score, updated, now, rule.half_life) < 0.01 * rule.threshold:
                        del self._risk[(p, name, user)]
                        self._dirty.risk.discard((p, name, user))
                        self._dirty.gone_risk.add((p, name, user))
            elif isinstance(rule, ModelHoppingRule):
                for (p, name, user), sightings in list(self._hops.items()):
                    if name != rule.name:
                        continue
                    for target in [t for t, s in sightings.items() if s[0] <= now - rule.window]:
                        del sightings[target]
                        self._dirty.hops.discard((p, name, user, target))
                        self._dirty.gone_hops.add((p, name, user, target))
                    if not sightings:
                        del self._hops[(p, name, user)]
        # Resolved alerts are kept briefly so a refire within the hour counts as the same episode
        # history; the notifier deletes their rows once the resolution was notified.
        for fp, a in list(self.alerts.items()):
            if a.ends_at < now - 3600:
                del self.alerts[fp]

    def risk_score(self, rule: str, user_id: str, tenant_id: str | None = None) -> float:
        """Current decayed score of a user over the partitions held here (for the CLI and tests):
        of that user in ``tenant_id``, or summed over every tenant when it is None."""
        r = self.rules.rule(rule)
        assert isinstance(r, RepeatOffenderRule)
        now = self._clock()
        if tenant_id is not None:
            wanted: Callable[[str], bool] = _subject(user_id, tenant_id).__eq__
        else:
            wanted = lambda s: s == user_id or s.startswith(user_id + "@")  # noqa: E731
        return sum(
            _decayed(score, updated, now, r.half_life)
            for (_p, name, subject), (score, updated, _) in self._risk.items()
            if name == rule and wanted(subject)
        )
