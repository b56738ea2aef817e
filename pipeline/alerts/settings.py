"""Settings of the alerting subsystem (nested in the process-wide Settings as ``alerts``).

Receiver secrets live here (environment or config file), never in the rules YAML, so the
rules file can be reviewed and checked in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pipeline.units import DAY_S, HOUR_S

ReceiverType = Literal["webhook", "slack"]
NO_RECEIVERS = "alerts: notify is direct but alerts.receivers is empty: every alert would go to nobody"


def _usable_url(url: SecretStr, what: str) -> SecretStr:
    """An http(s) URL without whitespace or control characters; the message never shows it (a
    webhook URL can be a credential). A line end left by a secret file made every delivery
    raise httpx.InvalidURL, which was retried until the row aged out (an on-call review,
    2026-12-06)."""
    text = url.get_secret_value()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{what} holds whitespace or a control character (a line end from a secret file?)")
    if not text.lower().startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://")
    return url


class ReceiverSettings(BaseModel):
    """One delivery target. ``name`` is what rules and metrics refer to."""

    model_config = ConfigDict(extra="forbid")  # a mistyped key is an error, not a silent default

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: ReceiverType
    # A Slack incoming-webhook URL embeds its credential, hence SecretStr for every URL.
    url: SecretStr
    # HMAC key of the generic webhook (required there, unused elsewhere).
    secret: SecretStr | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=HOUR_S)
    send_resolved: bool = True
    # As Alertmanager's webhook_config max_alerts: 0 = all; the rest is counted in truncatedAlerts.
    max_alerts: int = Field(default=0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, url: SecretStr) -> SecretStr:
        return _usable_url(url, "the receiver's url")

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> ReceiverSettings:
        if self.type == "webhook" and not (self.secret and self.secret.get_secret_value()):
            raise ValueError(f"receiver {self.name!r}: a webhook receiver needs a non-empty 'secret'")
        return self


class DeliverySettings(BaseModel):
    """Outbox dispatcher tuning (see pipeline/alerts/delivery.py)."""

    model_config = ConfigDict(extra="forbid")  # a mistyped key is an error, not a silent default

    poll_interval_s: float = Field(default=0.2, gt=0, le=HOUR_S, description="Idle wait between dispatcher ticks")
    retry_initial_s: float = Field(default=1.0, gt=0, le=DAY_S)
    retry_max_s: float = Field(default=300.0, gt=0, le=DAY_S)
    dead_letter_after_s: float = Field(default=DAY_S, gt=0, le=30 * DAY_S, description="Give up on a delivery this old")
    claim_ttl_s: float = Field(default=60.0, gt=0, le=DAY_S, description="How long a dispatcher owns a row it is sending")
    concurrency: int = Field(default=4, ge=1, le=64)
    batch_size: int = Field(default=50, ge=1)
    keep_delivered_s: float = Field(
        default=7 * DAY_S, gt=0, le=365 * DAY_S,
        description="Delivered outbox rows (each a notification with its evidence) are deleted this long after delivery",
    )


class AlertmanagerSettings(BaseModel):
    """Where alerts are posted in ``notify: alertmanager`` mode (the default)."""

    model_config = ConfigDict(extra="forbid")  # a mistyped key is an error, not a silent default

    # Every peer of an Alertmanager cluster: peers share silences and notification logs but not
    # alerts, so (as Prometheus does) each alert goes to every peer.
    urls: list[SecretStr] = Field(default_factory=lambda: [SecretStr("http://127.0.0.1:9093")], min_length=1)
    timeout_s: float = Field(default=5.0, gt=0, le=HOUR_S)
    # Alertmanager keeps alerts in memory only: firing alerts are re-sent this often so a
    # restarted Alertmanager learns them again (Prometheus' resend delay is 1m too).
    resend_interval_s: float = Field(default=60.0, gt=0, le=DAY_S)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        return [_usable_url(u, "an Alertmanager url") for u in urls]


class AlertSettings(BaseModel):
    """Enable alerting by listing the ``alerts`` sink in ``Settings.sinks``.

    ``notify`` picks who routes the alerts: ``alertmanager`` (default) posts them to
    Alertmanager, which groups, silences, inhibits and notifies; ``direct`` runs the built-in
    notifier (grouping and signed Alertmanager-format webhooks, Slack) for setups without one.
    """

    model_config = ConfigDict(extra="forbid")  # a mistyped key is an error, not a silent default

    rules_file: Path = Path("examples/alert-rules.yaml")
    # sqlite:///relative/path.db by default; a postgresql+psycopg://... URL selects PostgreSQL.
    db_url: SecretStr = SecretStr("sqlite:///data/alerts.db")
    notify: Literal["alertmanager", "direct"] = "alertmanager"
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    # Base of every alert's generatorURL: the misuse overview dashboard (filters are appended).
    generator_url: str = "http://127.0.0.1:3000/d/mm-misuse-overview"
    # externalURL of direct webhooks (Alertmanager puts its own URL there): where to look next.
    external_url: str = "http://127.0.0.1:3000/d/mm-pipeline-health"
    # Receivers of the direct notifier (notify: direct); with Alertmanager they live in its config.
    receivers: list[ReceiverSettings] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    # Run the dispatcher as a thread of the stream process; set false when a standalone
    # `misuse-monitor alerts dispatch` runs instead.
    run_dispatcher: bool = True

    @model_validator(mode="after")
    def _unique_receivers(self) -> AlertSettings:
        names = [r.name for r in self.receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate receiver names: {dupes}")
        if self.notify == "alertmanager" and self.receivers:
            raise ValueError(
                "alerts.receivers are used by the built-in notifier only: set alerts.notify: direct, "
                "or configure these receivers in Alertmanager"
            )
        return self

    @property
    def notifies_nobody(self) -> bool:
        """Direct notification without receivers: alerts are decided and kept in the alert
        database, and sent nowhere (allowed, but said: NO_RECEIVERS)."""
        return self.notify == "direct" and not self.receivers

    def receiver(self, name: str) -> ReceiverSettings:
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

