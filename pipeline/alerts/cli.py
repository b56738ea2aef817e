"""``misuse-monitor alerts``: test, list, dispatch, requeue.

Silences are Alertmanager's (``amtool silence add user=u_3f9a --comment ...``): with the
default ``notify: alertmanager`` they mute every receiver.

Settings come from the process settings (``--config`` / ``MM_CONFIG``, section ``alerts``) or
from ``--alerts-config``, a YAML file holding just that section; ``--rules`` and ``--db-url``
override single fields.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
import yaml
from rich.console import Console
from rich.table import Table

from pipeline.alerts import state as db
from pipeline.alerts.model import Alert, GeneratorLinks, WebhookAlert, WebhookMessage, to_datetime
from pipeline.alerts.outbox import DEAD, Notification, Outbox
from pipeline.alerts.rules import AlertRulesError, load_rules
from pipeline.alerts.settings import AlertSettings
from pipeline.alerts.state import create_db_engine

app = typer.Typer(help="Alert rules and delivery (silences: amtool, against Alertmanager).", no_args_is_help=True)
console = Console()


@app.callback()
def _options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="Process settings YAML (section 'alerts')")] = None,
    alerts_config: Annotated[Path | None, typer.Option(help="YAML file holding only the alerts settings")] = None,
    rules: Annotated[Path | None, typer.Option(help="Alert rules YAML (overrides settings)")] = None,
    db_url: Annotated[str | None, typer.Option(help="Alert database URL (overrides settings)")] = None,
) -> None:
    ctx.obj = {"config": config, "alerts_config": alerts_config, "rules": rules, "db_url": db_url}


def _settings(ctx: typer.Context) -> AlertSettings:
    opts: dict[str, Any] = ctx.obj or {}
    if opts.get("alerts_config") is not None:
        data = yaml.safe_load(Path(opts["alerts_config"]).read_text()) or {}
        settings = AlertSettings.model_validate(data)
    elif opts.get("config") is not None or os.environ.get("MM_CONFIG"):
        from pipeline.settings import load_settings

        settings = load_settings(opts.get("config")).alerts
    else:
        settings = AlertSettings()
    updates: dict[str, Any] = {}
    if opts.get("rules") is not None:
        updates["rules_file"] = opts["rules"]
    if opts.get("db_url") is not None:
        updates["db_url"] = opts["db_url"]
    return AlertSettings.model_validate({**settings.model_dump(), **updates}) if updates else settings


def _when(ts: float | None) -> str:
    return "-" if ts is None else to_datetime(ts).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def test(
    ctx: typer.Context,
    send: Annotated[bool, typer.Option(help="Also send a test notification to every receiver")] = False,
    timeout_s: Annotated[float, typer.Option(help="How long --send waits for deliveries")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated rules as JSON")] = False,
) -> None:
    """Validate the rules file against the configured receivers; --send checks delivery end to end."""
    if as_json and send:
        raise typer.BadParameter("--json lists the validated rules; run --send without it", param_hint="--json")
    settings = _settings(ctx)
    names = [r.name for r in settings.receivers]
    try:
        rules = load_rules(settings.rules_file, names)
    except AlertRulesError as exc:
        if as_json:
            print(json.dumps({"rules_file": str(settings.rules_file), "valid": False, "error": str(exc)}))
        else:
            console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps({
            "rules_file": str(settings.rules_file), "valid": True, "notify": settings.notify,
            "rules": [{"name": r.name, "kind": r.kind, "severity": r.severity, "receivers": list(r.receivers)} for r in rules.rules],
        }, sort_keys=True))
    else:
        table = Table("rule", "kind", "severity", "receivers")
        for r in rules.rules:
            table.add_row(r.name, r.kind, r.severity, ", ".join(r.receivers) or "(all)")
        console.print(table)
        console.print(f"{settings.rules_file}: {len(rules.rules)} rule(s) OK (notify: {settings.notify})")
    if not send:
        return
    if settings.notify == "alertmanager":
        _send_test_to_alertmanager(settings)
        return
    if not names:
        console.print("[yellow]no receivers configured[/yellow]")
        raise typer.Exit(1)
    from pipeline.alerts.service import Alerting

    alerting = Alerting.build(settings, rules=rules, evaluate=False)
    now = time.time()
    keys = {}
    alert = _test_alert(now)
    links = GeneratorLinks(base_url=settings.generator_url)
    with alerting.db.begin() as conn:
        for name in names:
            key = f"test-{uuid.uuid4().hex}"
            keys[key] = name
            message = WebhookMessage(
                groupKey=f"{{}}:{{test={key!r}}}", status="firing", receiver=name, groupLabels=alert.labels,
                commonLabels=alert.labels, commonAnnotations=alert.annotations, externalURL=settings.external_url,
                alerts=[WebhookAlert.of(alert, now, links)],
            )
            Outbox(alerting.db).enqueue(conn, Notification(key, name, "mm-test", message), now)
    deadline = time.monotonic() + timeout_s
    states: dict[str, tuple[str, str | None]] = {}
    while time.monotonic() < deadline:
        alerting.dispatcher.run_once()
        with alerting.db.connect() as conn:
            rows = conn.execute(
                sa.select(db.outbox.c.idempotency_key, db.outbox.c.state, db.outbox.c.last_error).where(
                    db.outbox.c.idempotency_key.in_(list(keys))
                )
            )
            states = {r[0]: (r[1], r[2]) for r in rows}
        if len(states) == len(keys) and all(s in ("delivered", DEAD) for s, _ in states.values()):
            break
        time.sleep(0.2)
    alerting.close()
    failed = 0
    for key, name in keys.items():
        state, error = states.get(key, ("missing", None))
        ok = state == "delivered"
        failed += not ok
        verdict = "[green]delivered[/green]" if ok else f"[red]{state}[/red] {error or ''}"
        console.print(f"{name}: {verdict}")
    if failed:
        raise typer.Exit(1)


def _test_alert(now: float) -> Alert:
    return Alert(
        rule="mm_test_alert", labels={"alertname": "mm_test_alert", "severity": "info"},
        annotations={"summary": "misuse-monitor test notification"}, starts_at=now, ends_at=now + 300, updated_at=now,
    )


def _send_test_to_alertmanager(settings: AlertSettings) -> None:
    """Post one short-lived info alert to every Alertmanager peer; exit 1 if any refuses."""
    import httpx

    from pipeline.alerts.model import PostableAlert

    alert = _test_alert(time.time())
    body = [PostableAlert.of(alert, GeneratorLinks(base_url=settings.generator_url)).model_dump()]
    failed = 0
    for url in settings.alertmanager.urls:
        base = url.get_secret_value().rstrip("/")
        try:
            response = httpx.post(f"{base}/api/v2/alerts", json=body, timeout=settings.alertmanager.timeout_s)
            ok, detail = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        console.print(f"{base}: " + ("[green]accepted[/green]" if ok else f"[red]failed[/red] {detail}"), highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved alerts")] = False,
    dead: Annotated[bool, typer.Option(help="List dead-lettered deliveries")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Alerts in the alert database, and the outbox by receiver and state."""
    settings = _settings(ctx)
    engine = create_db_engine(settings.db_url.get_secret_value())
    now = time.time()
    with engine.connect() as conn:
        query = sa.select(db.alerts).order_by(db.alerts.c.starts_at)
        if not all_:
            query = query.where(db.alerts.c.ends_at > now)
        alerts = list(conn.execute(query).mappings())
    outbox = Outbox(engine)
    counts = outbox.counts()
    dead_rows = outbox.rows(DEAD) if dead else []
    if as_json:
        out = {
            "alerts": [
                {"fingerprint": a["fingerprint"], "status": "firing" if a["ends_at"] > now else "resolved",
                 "labels": a["labels"], "starts_at": a["starts_at"], "ends_at": a["ends_at"]}
                for a in alerts
            ],
            "outbox": [{"receiver": r, "state": s, "count": n} for (r, s), n in sorted(counts.items())],
            "dead": [row.__dict__ for row in dead_rows],
        }
        typer.echo(json.dumps(out, sort_keys=True))
        return
    table = Table("status", "alertname", "severity", "labels", "since", "until")
    for a in alerts:
        labels = dict(a["labels"])
        status = "firing" if a["ends_at"] > now else "resolved"
        rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        table.add_row(status, labels.get("alertname", ""), labels.get("severity", ""), rest, _when(a["starts_at"]), _when(a["ends_at"]))
    console.print(table)
    summary = Table("receiver", "state", "count")
    for (receiver, state), n in sorted(counts.items()):
        summary.add_row(receiver, state, str(n))
    console.print(summary)
    if dead:
        dl = Table("id", "receiver", "key", "attempts", "created", "error")
        for row in dead_rows:
            dl.add_row(str(row.id), row.receiver, row.idempotency_key, str(row.attempts), _when(row.created_at), row.last_error or "")
        console.print(dl)


@app.command()
def dispatch(ctx: typer.Context) -> None:
    """Run the notifier and delivery loop in the foreground (instead of the stream's thread)."""
    settings = _settings(ctx)
    from pipeline.alerts.service import Alerting

    alerting = Alerting.build(settings, evaluate=False)
    def _stop(*_: object) -> None:
        alerting.dispatcher.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    console.print(f"dispatching alerts from {settings.db_url.get_secret_value().split('@')[-1]}", highlight=False)
    alerting.dispatcher.run_forever()
    alerting.close()


@app.command()
def requeue(
    ctx: typer.Context,
    receiver: Annotated[str | None, typer.Option(help="Only this receiver's dead letters")] = None,
) -> None:
    """Put dead-lettered deliveries back in the queue (after fixing a receiver)."""
    settings = _settings(ctx)
    n = Outbox(create_db_engine(settings.db_url.get_secret_value())).requeue_dead(time.time(), receiver)
    console.print(f"requeued {n} deliveries")


if __name__ == "__main__":
    app()
