"""``misuse-monitor alerts``: test, list, dispatch, requeue.

Silences are Alertmanager's (``amtool silence add user=u_3f9a --comment ...``): with the
default ``notify: alertmanager`` they mute every receiver.

Settings come from the process settings (``--config`` / ``MM_CONFIG``, section ``alerts``) or
from ``--alerts-config``, a YAML file holding just that section; ``--rules`` and ``--db-url``
override single fields.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.alerts.model import Alert, GeneratorLinks, WebhookAlert, WebhookMessage, to_datetime
from pipeline.alerts.rules import AlertRulesError, load_rules
from pipeline.alerts.settings import NO_RECEIVERS, AlertSettings
from pipeline.exits import ConfigError, ExitCode, Unreachable
from pipeline.logs import escape_controls

app = typer.Typer(help="Alert rules and delivery (silences: amtool, against Alertmanager).", no_args_is_help=True)
console = Console()


@app.callback()
def _options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Process settings YAML (section 'alerts')")] = None,
    alerts_config: Annotated[Path | None, typer.Option(help="YAML file holding only the alerts settings")] = None,
    rules: Annotated[Path | None, typer.Option(help="Alert rules YAML (overrides settings)")] = None,
    db_url: Annotated[str | None, typer.Option(help="Alert database URL (overrides settings)")] = None,
) -> None:
    ctx.obj = {"config": config, "alerts_config": alerts_config, "rules": rules, "db_url": db_url}


def _settings(ctx: typer.Context) -> AlertSettings:
    opts: dict[str, Any] = ctx.obj or {}
    if opts.get("alerts_config") is not None:
        settings = _alerts_config(Path(opts["alerts_config"]))
    else:
        from pipeline.settings import load_settings

        # Always the process settings, so MM_ALERTS__* variables apply as for every setting
        # (docs/alerting.md). Without --config or MM_CONFIG this was AlertSettings(), which reads
        # no environment: MM_ALERTS__DB_URL was ignored and the default database opened (a
        # newcomer's review, 2026-12-06).
        settings = load_settings(opts.get("config")).alerts
    updates: dict[str, Any] = {}
    if opts.get("rules") is not None:
        updates["rules_file"] = opts["rules"]
    if opts.get("db_url") is not None:
        updates["db_url"] = opts["db_url"]
    return AlertSettings.model_validate({**settings.model_dump(), **updates}) if updates else settings


def _alerts_config(path: Path) -> AlertSettings:
    """The ``--alerts-config`` file: the alerts section's keys, or the same block under an
    ``alerts:`` line as docs/alerting.md shows it. A bad key is a config error (exit 3) named
    ``alerts.<key>`` with the closest valid one; it was exit 4 with the top-level settings' keys
    as the "valid keys" (a newcomer running the docs, 2026-12-04)."""
    from pydantic import ValidationError

    from pipeline.exits import ConfigError, describe_validation_error
    from pipeline.settings import MissingConfigFile
    from pipeline.yamlfile import load_yaml

    # As --config is read: a missing file, a folder or bytes that are not UTF-8 are config errors
    # (exit 3) naming the file, and a YAML error names it with its line (they were exit 4, and
    # "<unicode string>"; hostile review, 2026-12-07).
    if path.is_dir():
        raise ConfigError(f"alerts config {path} is a directory, not a YAML file")
    if not path.is_file():
        raise MissingConfigFile(f"alerts config not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            data = load_yaml(fh) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"alerts config {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if isinstance(data, dict) and set(data) == {"alerts"}:
        data = data["alerts"] or {}
    try:
        return AlertSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, root=('alerts',))}") from None


def _cell(text: str) -> str:
    """A value for the terminal: rich markup escaped (a model named "[/]" made rich raise and
    `alerts list` fail for every operator) and control characters shown as ``\\x1b`` (ESC and OSC
    sequences in a model name cleared the screen and wrote spoofed text; hostile reviews,
    2026-12-07)."""
    return escape(escape_controls(text))


def _when(ts: float | None) -> str:
    return "-" if ts is None else to_datetime(ts).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def test(
    ctx: typer.Context,
    send: Annotated[bool, typer.Option(help="Also send a test notification to every receiver")] = False,
    timeout_s: Annotated[float, typer.Option(min=0.1, max=3600, help="How long --send waits for deliveries")] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the validated rules (and with --send, each delivery) as JSON")
    ] = False,
) -> None:
    """Validate the rules file against the configured receivers; --send checks delivery end to end
    (exit 8 when a receiver or Alertmanager did not accept the test alert)."""
    settings = _settings(ctx)
    names = [r.name for r in settings.receivers]
    if settings.notifies_nobody:
        # Every alert would go to nobody; it printed "6 rule(s) OK" and nothing else (a review,
        # 2026-12-06). Allowed (the decisions stay in the alert database), but said; --send refuses.
        if send:
            raise ConfigError(NO_RECEIVERS)
        typer.echo(f"misuse-monitor: warning: {NO_RECEIVERS} (kept in the alert database only)", err=True)
    try:
        rules = load_rules(settings.rules_file, names)
    except AlertRulesError as exc:
        if as_json:
            print(json.dumps({"rules_file": str(settings.rules_file), "valid": False, "error": str(exc)}))
        else:  # the one-line form of every other error (it had no "misuse-monitor: error:")
            typer.echo(f"misuse-monitor: error: alert rules: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from exc
    doc: dict[str, Any] = {
        "rules_file": str(settings.rules_file), "valid": True, "notify": settings.notify,
        "rules": [{"name": r.name, "kind": r.kind, "severity": r.severity, "receivers": list(r.receivers)} for r in rules.rules],
    }
    if not as_json:
        table = Table("rule", "kind", "severity", "receivers")
        for r in rules.rules:
            table.add_row(_cell(r.name), r.kind, r.severity, _cell(", ".join(r.receivers)) or "(all)")
        console.print(table)
        console.print(f"{_cell(str(settings.rules_file))}: {len(rules.rules)} rule(s) OK (notify: {settings.notify})")
    if not rules.rules:  # valid, as promtool finds a file of no rules; but an empty or wrong file was just "0 rule(s) OK"
        typer.echo(f"misuse-monitor: warning: {settings.rules_file} has no rules: no alert will ever fire", err=True)
    if not send:
        if as_json:
            print(json.dumps(doc, sort_keys=True))
        return
    if settings.notify == "alertmanager":
        results = _send_test_to_alertmanager(settings)
    else:
        results = _send_test_to_receivers(settings, rules, names, timeout_s)
    if as_json:
        print(json.dumps({**doc, "sent": results}, sort_keys=True))
    else:
        for r in results:
            # The detail is a receiver's answer: another party's text.
            state = f"[green]{r['state']}[/green]" if r["delivered"] else f"[red]{r['state']}[/red] {_cell(r['detail'] or '')}"
            console.print(f"{_cell(r['target'])}: {state}", highlight=False)
    failed = [r for r in results if not r["delivered"]]
    if failed:
        # Printed as the error line: a receiver's answer escaped as in the table (a review, 2026-12-07).
        what = "; ".join(f"{r['target']}: {r['state']} {escape_controls(' '.join(str(r['detail'] or '').split()))}".rstrip()
                         for r in failed)
        raise Unreachable(f"test alert not delivered to {len(failed)} of {len(results)}: {what}")


def _send_test_to_receivers(settings: AlertSettings, rules: Any, names: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Enqueue one test notification per receiver and run the dispatcher until each is
    delivered or dead, or ``timeout_s`` passes; one result per receiver."""
    import sqlalchemy as sa

    from pipeline.alerts import state as db
    from pipeline.alerts.outbox import DEAD, TEST_GROUP_KEY, Notification, Outbox
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
            Outbox(alerting.db).enqueue(conn, Notification(key, name, TEST_GROUP_KEY, message), now)
    deadline = time.monotonic() + timeout_s
    states: dict[str, tuple[str, str | None]] = {}
    # Each receiver's outcome is reported below; the dispatcher's per-attempt warnings would say it
    # again on stderr (they still show with --log-level info or debug).
    delivery_log = logging.getLogger("pipeline.alerts.delivery")
    level = delivery_log.level
    if not delivery_log.isEnabledFor(logging.INFO):
        delivery_log.setLevel(logging.CRITICAL)

    def read_states() -> dict[str, tuple[str, str | None]]:
        with alerting.db.connect() as conn:
            rows = conn.execute(
                sa.select(db.outbox.c.idempotency_key, db.outbox.c.state, db.outbox.c.last_error).where(
                    db.outbox.c.idempotency_key.in_(list(keys))
                )
            )
            return {r[0]: (r[1], r[2]) for r in rows}

    states: dict[str, tuple[str, str | None]] = {}
    try:
        while time.monotonic() < deadline:
            alerting.dispatcher.run_once()
            states = read_states()
            if len(states) == len(keys) and all(s in ("delivered", DEAD) for s, _ in states.values()):
                break
            time.sleep(0.2)
    finally:
        try:
            # A test notification not sent by now is dropped, whatever ended the wait: it stayed
            # pending in the outbox, where the alert service's dispatcher would send
            # "mm_test_alert" to on-call after this command had reported it not delivered (found
            # 2026-12-04; and when a delivery raised, 2026-12-06).
            gave_up = f"not delivered within --timeout-s {timeout_s:g}: dropped, so it is not sent later"
            if Outbox(alerting.db).abandon(list(keys), gave_up):  # changes pending rows only
                states = read_states()
        finally:
            delivery_log.setLevel(level)
            alerting.close()
    results = []
    for key, name in keys.items():
        state, error = states.get(key, ("missing", None))
        results.append({"target": name, "delivered": state == "delivered", "state": state, "detail": error})
    return results


def _test_alert(now: float) -> Alert:
    return Alert(
        rule="mm_test_alert", labels={"alertname": "mm_test_alert", "severity": "info"},
        annotations={"summary": "misuse-monitor test notification"}, starts_at=now, ends_at=now + 300, updated_at=now,
    )


def _send_test_to_alertmanager(settings: AlertSettings) -> list[dict[str, Any]]:
    """Post one short-lived info alert to every Alertmanager peer; one result per peer."""
    import httpx

    from pipeline.alerts.alertmanager import shown_url
    from pipeline.alerts.model import PostableAlert
    from pipeline.alerts.transport import alert_client, post_within

    alert = _test_alert(time.time())
    body = json.dumps([PostableAlert.of(alert, GeneratorLinks(base_url=settings.generator_url)).model_dump()]).encode()
    results = []
    with alert_client() as client:
        for url in settings.alertmanager.urls:
            base = url.get_secret_value().rstrip("/")
            try:
                response = post_within(client, f"{base}/api/v2/alerts", content=body, headers={"Content-Type": "application/json"},
                                       timeout_s=settings.alertmanager.timeout_s)  # fmt: skip
                ok, detail = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results.append({"target": shown_url(base), "delivered": ok, "state": "accepted" if ok else "failed",
                            "detail": detail})  # fmt: skip
    return results


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved alerts")] = False,
    dead: Annotated[bool, typer.Option(help="List dead-lettered deliveries")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Alerts in the alert database, and the outbox by receiver and state."""
    import sqlalchemy as sa

    from pipeline.alerts import state as db
    from pipeline.alerts.outbox import DEAD, Outbox

    settings = _settings(ctx)
    engine = db.create_db_engine(settings.db_url.get_secret_value(), must_exist=True)
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
    # Every cell holding data goes through _cell: labels carry client-named values.
    table = Table("status", "alertname", "severity", "labels", "since", "until")
    for a in alerts:
        labels = dict(a["labels"])
        status = "firing" if a["ends_at"] > now else "resolved"
        rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        table.add_row(status, _cell(labels.get("alertname", "")), _cell(labels.get("severity", "")), _cell(rest),
                      _when(a["starts_at"]), _when(a["ends_at"]))
    console.print(table)
    summary = Table("receiver", "state", "count")
    for (receiver, state), n in sorted(counts.items()):
        summary.add_row(_cell(receiver), _cell(state), str(n))
    console.print(summary)
    if dead:
        dl = Table("id", "receiver", "key", "attempts", "created", "error")
        for row in dead_rows:
            dl.add_row(str(row.id), _cell(row.receiver), _cell(row.idempotency_key), str(row.attempts), _when(row.created_at),
                       _cell(row.last_error or ""))
        console.print(dl)


@app.command()
def dispatch(ctx: typer.Context) -> None:
    """Run the notifier and delivery loop in the foreground (instead of the stream's thread)."""
    settings = _settings(ctx)
    from pipeline.alerts.service import Alerting
    from pipeline.alerts.state import shown_db_url

    alerting = Alerting.build(settings, evaluate=False)
    def _stop(*_: object) -> None:
        alerting.dispatcher.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    console.print(f"dispatching alerts from {shown_db_url(settings.db_url.get_secret_value())}", highlight=False)
    alerting.dispatcher.run_forever()
    alerting.close()


@app.command()
def requeue(
    ctx: typer.Context,
    receiver: Annotated[str | None, typer.Option(help="Only this receiver's dead letters")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the count as JSON")] = False,
) -> None:
    """Put dead-lettered deliveries back in the queue (after fixing a receiver)."""
    from pipeline.alerts.outbox import Outbox
    from pipeline.alerts.state import create_db_engine

    settings = _settings(ctx)
    n = Outbox(create_db_engine(settings.db_url.get_secret_value(), must_exist=True)).requeue_dead(time.time(), receiver)
    if as_json:
        typer.echo(json.dumps({"requeued": n, "receiver": receiver}, sort_keys=True))
        return
    console.print(f"requeued {n} deliveries")


if __name__ == "__main__":
    app()
