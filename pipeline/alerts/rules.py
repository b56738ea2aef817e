"""The alert rules file (YAML), validated at start-up.

Four rule kinds (``kind``): ``verdict`` (one matching verdict fires), ``rate`` (flagged count
or share over a sliding window, against a threshold or the key's own baseline), ``repeat_offender``
(per-user decaying risk score) and ``model_hopping`` (one user flagged on N distinct models or
deployments within a window). ``route`` holds the grouping timers of the built-in (direct)
notifier; silences and inhibition are Alertmanager's job. See docs/alerting.md for the reference.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.exits import yaml_error_parts
from pipeline.schemas import Category, Severity
from pipeline.units import DAY_S, HOUR_S
from pipeline.yamlfile import load_yaml

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
MAX_DURATION_S = 3650 * DAY_S
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR_S, "d": DAY_S, "w": 7 * DAY_S, None: 1.0}
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# Labels the engine sets itself: they are an alert's identity. A rule label overriding one
# (``user: all``) folded every user into one alert, or made two rules share a fingerprint.
RESERVED_LABELS = frozenset({"alertname", "severity", "category", "tenant", "deployment", "model", "user"})


class AlertRulesError(ValueError):
    """The rules file is missing, not YAML, or does not validate; the message says where."""


def parse_duration(value: Any) -> float:
    """'30s', '5m', '4h', '1d', '250ms' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5m'")
    seconds: float | None = None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            # An integer past a float's range: raised OverflowError, which validation does not
            # catch, so a rules file ended in "internal error" (exit 1) instead of naming the
            # rule (a hostile review, 2026-12-07).
            raise ValueError(f"a duration must be at most {MAX_DURATION_S / DAY_S:g}d (ten years), got a number past any float") from None
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds is not None:
        if not math.isfinite(seconds):  # .inf: a window that never ends, an alert that never fires
            raise ValueError(f"a duration must be finite, got {value!r}")
        if seconds > MAX_DURATION_S:
            # An alert's endsAt is a date Alertmanager must read: `resolve_after: 9999999d` made
            # it year 29000, and formatting it raised in every push to Alertmanager (before the
            # HTTP call and its error handling), so no alert of that push was sent (2026-12-04).
            raise ValueError(f"a duration must be at most {MAX_DURATION_S / DAY_S:g}d (ten years), got {value!r}")
        return seconds
    raise ValueError(f"invalid duration {value!r}: use a number of seconds or e.g. '30s', '5m', '4h', '1d'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
AlertSeverity = Literal["critical", "warning", "info"]
Dimension = Literal["tenant", "deployment", "model", "category"]


class _Strict(BaseModel):
    # allow_inf_nan=False: `threshold: .inf` never fires, a NaN weight makes a score NaN forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VerdictFilter(_Strict):
    """Which verdicts a rule looks at. Empty lists mean 'any'."""

    categories: list[Category] = Field(default_factory=list)
    min_severity: Severity = Severity.LOW
    # True: only verdicts where the model produced the harmful content; False: only refusals
    # or prompts without completion; None: either.
    complied: bool | None = None
    tenants: list[str] = Field(default_factory=list)
    deployments: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)


class _RuleBase(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Becomes the alertname label")
    severity: AlertSeverity = "warning"
    description: str = ""
    match: VerdictFilter = Field(default_factory=VerdictFilter)
    labels: dict[str, str] = Field(default_factory=dict, description="Extra static labels")
    # Receiver names of the direct notifier; empty = every configured receiver. With
    # Alertmanager, route on labels (alertname, severity, rule labels) in its config instead.
    receivers: list[str] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not re.match(_LABEL_NAME, key):
                raise ValueError(f"label name {key!r} must match {_LABEL_NAME}")
            if key in RESERVED_LABELS or key.startswith("__"):
                raise ValueError(
                    f"label {key!r} is set by the engine (reserved: {', '.join(sorted(RESERVED_LABELS))}, and names "
                    "starting with '__'); choose another name"
                )
            if labels[key] == "":
                # Alertmanager drops a label whose value is empty, so its fingerprint of the
                # alert differed from ours: the alert database, the direct webhooks and
                # Alertmanager showed one alert under two ids (an on-call review, 2026-12-06).
                raise ValueError(f"label {key!r} has an empty value (Alertmanager drops it); give a value or leave it out")
        return labels


class VerdictRule(_RuleBase):
    """Fires on each matching verdict; one alert per (category, tenant, deployment, model, user)."""

    kind: Literal["verdict"]
    # Without a new matching verdict the alert resolves after this long (like Alertmanager's
    # resolve_timeout): a one-off event should not stay 'firing' forever.
    resolve_after: PositiveDuration = 600.0


class Baseline(_Strict):
    """Spike detection: compare the window with the mean of the previous ``windows`` windows."""

    windows: int = Field(default=12, ge=1, le=1000)
    factor: float = Field(default=3.0, gt=1.0)
    # Below this many flagged verdicts in the window nothing is a spike (1 vs 0 is not news).
    min_count: int = Field(default=5, ge=1)


class RateRule(_RuleBase):
    kind: Literal["rate"]
    per: list[Dimension] = Field(default_factory=lambda: ["tenant"])
    window: PositiveDuration = 600.0
    measure: Literal["count", "share"] = "count"
    # count: flagged verdicts in the window; share: flagged / all verdicts of the key (0..1).
    threshold: float | None = Field(default=None, gt=0)
    baseline: Baseline | None = None
    # share only: too few verdicts make any share meaningless.
    min_total: int = Field(default=20, ge=1)
    # Windows are kept as this many buckets; finer = more exact, more state.
    buckets: int = Field(default=10, ge=1, le=120)

    @model_validator(mode="after")
    def _threshold_xor_baseline(self) -> RateRule:
        if (self.threshold is None) == (self.baseline is None):
            raise ValueError(f"rate rule {self.name!r}: set exactly one of 'threshold' or 'baseline'")
        if self.measure == "share" and self.threshold is not None and self.threshold > 1:
            raise ValueError(f"rate rule {self.name!r}: a share threshold is a fraction in (0, 1]")
        if len(set(self.per)) != len(self.per):
            raise ValueError(f"rate rule {self.name!r}: 'per' lists a dimension twice")
        return self

    @property
    def bucket_s(self) -> float:
        return self.window / self.buckets

    @property
    def history_s(self) -> float:
        """How far back bucket counts must be kept for this rule."""
        return self.window * (1 + (self.baseline.windows if self.baseline else 0))


DEFAULT_WEIGHTS: dict[Severity, float] = {Severity.LOW: 1.0, Severity.MEDIUM: 2.0, Severity.HIGH: 4.0, Severity.CRITICAL: 8.0}


class RepeatOffenderRule(_RuleBase):
    """Per-user risk score: each flagged verdict adds its severity weight; halves every half_life."""

    kind: Literal["repeat_offender"]
    half_life: PositiveDuration = 3600.0
    threshold: float = Field(default=10.0, gt=0)
    weights: dict[Severity, Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @field_validator("weights")
    @classmethod
    def _over_the_defaults(cls, weights: dict[Severity, float]) -> dict[Severity, float]:
        """The severities given replace their defaults; the others keep them. ``weights: {critical:
        20}`` made every other severity weigh 0, so 50 high verdicts scored 0 (an on-call review,
        2026-12-06). A severity that should not count is given 0."""
        return {**DEFAULT_WEIGHTS, **weights}


class ModelHoppingRule(_RuleBase):
    """One user flagged on ``min_distinct`` or more models (or deployments) within ``window``."""

    kind: Literal["model_hopping"]
    across: Literal["model", "deployment"] = "model"
    min_distinct: int = Field(default=3, ge=2)
    window: PositiveDuration = 3600.0


Rule = Annotated[VerdictRule | RateRule | RepeatOffenderRule | ModelHoppingRule, Field(discriminator="kind")]


class RouteTimers(_Strict):
    """Alertmanager's grouping knobs; ``None`` inherits from the default route."""

    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None


class Route(_Strict):
    group_by: list[str] = Field(default_factory=lambda: ["alertname", "tenant"])
    group_wait: Duration = 30.0
    group_interval: PositiveDuration = 300.0
    repeat_interval: PositiveDuration = 4 * 3600.0
    # Per-receiver overrides, e.g. group_by ['...'] for an Alertmanager receiver that groups itself.
    receivers: dict[str, RouteTimers] = Field(default_factory=dict)

    def for_receiver(self, name: str) -> ResolvedRoute:
        o = self.receivers.get(name, RouteTimers())
        return ResolvedRoute(
            receiver=name,
            group_by=list(self.group_by if o.group_by is None else o.group_by),
            group_wait=self.group_wait if o.group_wait is None else o.group_wait,
            group_interval=self.group_interval if o.group_interval is None else o.group_interval,
            repeat_interval=self.repeat_interval if o.repeat_interval is None else o.repeat_interval,
        )


class ResolvedRoute(_Strict):
    receiver: str
    group_by: list[str]
    group_wait: float
    group_interval: float
    repeat_interval: float

    @property
    def group_all(self) -> bool:
        """``group_by: ['...']`` means every distinct label set is its own group (Alertmanager)."""
        return self.group_by == ["..."]


class AlertRules(_Strict):
    version: Literal[1] = 1
    route: Route = Field(default_factory=Route)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertRules:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {dupes}")
        return self

    def check_receivers(self, known: list[str]) -> None:
        """Every receiver named by a rule must be configured."""
        known_set = set(known)
        problems = [
            f"rule {r.name!r} names unknown receiver {name!r}"
            for r in self.rules
            for name in r.receivers
            if name not in known_set
        ]
        # Route overrides for receivers not configured here are fine: one rules file may serve
        # several environments, and an override has no effect without its receiver.
        if problems:
            raise AlertRulesError(f"{'; '.join(problems)} (configured receivers: {sorted(known_set)})")

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


def parse_rules(text: str, source: str = "<string>", receivers: list[str] | None = None) -> AlertRules:
    """Parse and validate rules YAML; errors name the file and the failing field path."""
    try:
        data = load_yaml(text)  # a key written twice is an error (pipeline/yamlfile.py)
    except yaml.YAMLError as exc:
        where, problem = yaml_error_parts(exc, source)
        raise AlertRulesError(f"{where or source}: not valid YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlertRulesError(f"{source}: the top level must be a mapping with 'rules:'")
    try:
        rules = AlertRules.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _describe_location(data, err["loc"])
            lines.append(f"{where}: {err['msg']}")
        # One line, as every error of the CLI (README, "Exit codes"); each error is "where: what".
        raise AlertRulesError(f"{source}: {len(lines)} error(s) in alert rules: " + "; ".join(lines)) from exc
    if receivers is not None:
        try:
            rules.check_receivers(receivers)
        except AlertRulesError as exc:
            raise AlertRulesError(f"{source}: {exc}") from exc
    return rules


def load_rules(path: Path, receivers: list[str] | None = None) -> AlertRules:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        # The default (examples/alert-rules.yaml) is relative: run from elsewhere, it was a bare
        # "No such file" (a newcomer review, 2026-12-07).
        where = "" if path.is_absolute() else f" (relative to the current folder, {Path.cwd()})"
        raise AlertRulesError(
            f"{path} not found{where}; give `alerts --rules FILE`, alerts.rules_file "
            "or MM_ALERTS__RULES_FILE"
        ) from exc
    except OSError as exc:
        raise AlertRulesError(f"cannot read alert rules file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:  # it was "input is not UTF-8 text", exit 4, no file named (a review, 2026-12-07)
        raise AlertRulesError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_rules(text, str(path), receivers)


def _describe_location(data: Any, loc: tuple[Any, ...]) -> str:
    """'rules[2] (name=spike).threshold' instead of pydantic's bare tuple; skips union tags."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            parts.append(f"[{item}]" + (f" (name={name})" if name else ""))
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if isinstance(node, dict) and item in node:
                node = node[item]
                parts.append(("." if parts else "") + str(item))
            elif item in ("verdict", "rate", "repeat_offender", "model_hopping"):
                continue  # the discriminated-union tag pydantic inserts
            else:
                node = None
                parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<top level>"
