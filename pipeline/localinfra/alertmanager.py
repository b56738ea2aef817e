"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback for dev and tests.

:func:`start_alertmanager` writes a config whose only receiver is a webhook (``webhook_url``,
e.g. a :class:`~pipeline.localinfra.webhook_receiver.WebhookReceiverServer`), so tests can assert
what Alertmanager forwards after its own grouping (or it runs a given config file, such as
``examples/alertmanager.yml``); :func:`get_alerts` reads ``/api/v2/alerts``.
Clustering is switched off (``--cluster.listen-address=``): a single node must not wait for
gossip peers or bind the fixed port 9094 that parallel test runs would fight over.

CLI::

    python -m pipeline.localinfra.alertmanager up --webhook http://127.0.0.1:8080/ [--port 9093]
    python -m pipeline.localinfra.alertmanager status
    python -m pipeline.localinfra.alertmanager down
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.localinfra.base import (
    LOOPBACK,
    ConfiguredHttpService,
    default_run_dir,
    free_port,
    port_arg,
    port_is_open,
    service_cli,
)

SERVICE_NAME = "alertmanager"
STARTUP_TIMEOUT_S = 60.0
BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


class AlertmanagerSetupError(RuntimeError):
    """Alertmanager could not be found or started locally."""


class LocalAlertmanager(ConfiguredHttpService):
    """A running local Alertmanager (``url``: its HTTP API)."""


def find_alertmanager() -> str:
    for name in BINARY_NAMES:
        binary = shutil.which(name)
        if binary:
            return binary
    raise AlertmanagerSetupError("alertmanager not found on PATH: apt-get install prometheus-alertmanager")


def alertmanager_config(
    webhook_url: str,
    *,
    group_by: Sequence[str] = ("alertname", "tenant"),
    group_wait_s: float = 0.5,
    group_interval_s: float = 2.0,
    repeat_interval_s: float = 3600.0,
) -> dict[str, Any]:
    """One route, one webhook receiver that also gets resolved notifications; short timers for tests."""

    def dur(seconds: float) -> str:
        return f"{int(seconds * 1000)}ms"

    return {
        "route": {
            "receiver": "webhook",
            "group_by": list(group_by),
            "group_wait": dur(group_wait_s),
            "group_interval": dur(group_interval_s),
            "repeat_interval": dur(repeat_interval_s),
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


def start_alertmanager(
    data_dir: Path,
    webhook_url: str | None = None,
    *,
    config_file: Path | None = None,
    port: int | None = None,
    group_by: Sequence[str] = ("alertname", "tenant"),
    group_wait_s: float = 0.5,
    group_interval_s: float = 2.0,
    repeat_interval_s: float = 3600.0,
    detach: bool = False,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    state_file: Path | None = None,
) -> LocalAlertmanager:
    """Start Alertmanager forwarding to ``webhook_url``; returns once it reports ready.

    ``config_file`` instead: run with that Alertmanager config as it is (copied into
    ``data_dir``), e.g. to check that a shipped example loads; the timer arguments are then unused.
    """
    if (webhook_url is None) == (config_file is None):
        raise ValueError("start_alertmanager needs webhook_url or config_file (not both)")
    binary = find_alertmanager()
    data_dir = data_dir.resolve()
    (data_dir / "storage").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_is_open(LOOPBACK, port):
        raise AlertmanagerSetupError(f"port {LOOPBACK}:{port} is already in use")
    config_path = data_dir / "alertmanager.yml"
    if config_file is not None:
        shutil.copyfile(config_file, config_path)
        info = {"config_source": str(config_file)}
    else:
        assert webhook_url is not None
        config = alertmanager_config(
            webhook_url, group_by=group_by, group_wait_s=group_wait_s,
            group_interval_s=group_interval_s, repeat_interval_s=repeat_interval_s,
        )
        import yaml  # here, not at the top: `make clean` runs this module with the system python3 (no .venv)
        config_path.write_text(yaml.safe_dump(config, sort_keys=True))
        info = {"webhook": webhook_url}
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.path={data_dir / 'storage'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    return LocalAlertmanager.launch(
        SERVICE_NAME, argv, data_dir, config_path, port, info=info, detach=detach,
        startup_timeout_s=startup_timeout_s, error=AlertmanagerSetupError, state_file=state_file,
    )


def get_alerts(url: str, *, active: bool = True, silenced: bool = True, inhibited: bool = True) -> list[dict[str, Any]]:
    """Alerts Alertmanager currently holds (``GET /api/v2/alerts``)."""
    params = {"active": str(active).lower(), "silenced": str(silenced).lower(), "inhibited": str(inhibited).lower()}
    import httpx

    response = httpx.get(f"{url.rstrip('/')}/api/v2/alerts", params=params, timeout=5.0)
    response.raise_for_status()
    return list(response.json())


def main(argv: list[str] | None = None) -> int:
    def add_up_arguments(up: argparse.ArgumentParser) -> None:
        up.add_argument("--webhook", required=True, help="URL Alertmanager forwards notifications to")
        up.add_argument("--port", type=port_arg, default=None, help="default: any free port")
        up.add_argument("--data-dir", type=Path, default=default_run_dir() / "alertmanager")

    return service_cli(
        "alertmanager", argv, default_run_dir() / "alertmanager.json",
        add_up_arguments=add_up_arguments,
        start=lambda args, state_file: start_alertmanager(
            args.data_dir, args.webhook, port=args.port, detach=True, state_file=state_file,
        ),
        address=lambda service: f"http://{LOOPBACK}:{service.ports['alertmanager']}",
        setup_errors=(AlertmanagerSetupError,),
    )


if __name__ == "__main__":
    sys.exit(main())
