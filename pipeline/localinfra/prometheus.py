"""A real Prometheus (Debian's ``prometheus`` binary) on loopback for dev and tests.

:func:`start_prometheus` writes a config that scrapes the given ``host:port`` targets at a short
interval and loads rule files, then starts Prometheus on a free port with its TSDB under a data
dir. :func:`query` / :func:`query_range` call the HTTP API and raise :class:`PrometheusQueryError`
on a failed query (a PromQL syntax error in a dashboard is a bug, not "no data").

CLI::

    python -m pipeline.localinfra.prometheus up --target 127.0.0.1:9464 [--port 9090]
    python -m pipeline.localinfra.prometheus status
    python -m pipeline.localinfra.prometheus down
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.localinfra.base import (
    LOOPBACK,
    ConfiguredHttpService,
    default_run_dir,
    existing_file_arg,
    free_port,
    port_arg,
    port_is_open,
    service_cli,
)

SERVICE_NAME = "prometheus"
STARTUP_TIMEOUT_S = 60.0
JOB_NAME = "misuse-monitor"


class PrometheusSetupError(RuntimeError):
    """Prometheus could not be found or started locally."""


class PrometheusQueryError(RuntimeError):
    """Prometheus rejected a query (bad PromQL, timeout)."""


class LocalPrometheus(ConfiguredHttpService):
    """A running local Prometheus (``url``: its HTTP API)."""


def find_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusSetupError("prometheus not found on PATH: apt-get install prometheus")
    return binary


def prometheus_config(
    targets: Sequence[str] | Mapping[str, Sequence[str]], rule_files: Sequence[Path], interval_s: float
) -> dict[str, Any]:
    """Scrape and evaluate every ``interval_s`` so tests see data within seconds.

    ``targets``: ``host:port`` strings, scraped as job JOB_NAME, or job name -> targets. The
    stream rules match ``up{job=~"misuse-monitor.*"}``: give gateways and the lag exporter jobs
    of their own (docs/dashboards.md), or a gateway that stops pages as "stream down"."""
    jobs = dict(targets) if isinstance(targets, Mapping) else {JOB_NAME: targets}
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(hosts)}]} for job, hosts in jobs.items()],
    }


def start_prometheus(
    data_dir: Path,
    targets: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    port: int | None = None,
    rule_files: Sequence[Path] = (),
    interval_s: float = 1.0,
    detach: bool = False,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    state_file: Path | None = None,
) -> LocalPrometheus:
    """Start Prometheus scraping ``targets`` (``host:port``); returns once it is ready."""
    binary = find_prometheus()
    data_dir = data_dir.resolve()
    (data_dir / "tsdb").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if port_is_open(LOOPBACK, port):
        raise PrometheusSetupError(f"port {LOOPBACK}:{port} is already in use")
    config_path = data_dir / "prometheus.yml"
    import yaml  # here, not at the top: `make clean` runs this module with the system python3 (no .venv)
    config_path.write_text(yaml.safe_dump(prometheus_config(targets, rule_files, interval_s), sort_keys=True))
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]
    return LocalPrometheus.launch(
        SERVICE_NAME, argv, data_dir, config_path, port, detach=detach,
        startup_timeout_s=startup_timeout_s, error=PrometheusSetupError, state_file=state_file,
    )


def _api(base_url: str, path: str, params: dict[str, Any]) -> Any:
    import httpx

    response = httpx.get(f"{base_url}{path}", params=params, timeout=30.0)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusQueryError(f"{path} {params}: HTTP {response.status_code} {body.get('error') or response.text[:500]}")
    return body["data"]


def query(base_url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """Instant query; returns the result list (vector or matrix samples)."""
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = at
    data = _api(base_url, "/api/v1/query", params)
    result = data["result"]
    return result if isinstance(result, list) else [result]


def query_range(base_url: str, promql: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    return _api(base_url, "/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step_s})["result"]


def label_values(base_url: str, label: str, match: str | None = None) -> list[str]:
    params = {"match[]": match} if match else {}
    return _api(base_url, f"/api/v1/label/{label}/values", params)


def main(argv: list[str] | None = None) -> int:
    def add_up_arguments(up: argparse.ArgumentParser) -> None:
        up.add_argument("--port", type=port_arg, default=9090, help="0: any free port (default 9090)")
        up.add_argument("--target", action="append", default=[], help="host:port to scrape (repeatable)")
        # Prometheus reads rule_files as globs: a missing file would load no rules and say nothing.
        up.add_argument("--rules", action="append", type=existing_file_arg, default=[], help="rule file (repeatable)")
        up.add_argument("--data-dir", type=Path, default=default_run_dir() / "prometheus")
        up.add_argument("--interval", type=float, default=5.0, help="scrape and rule interval in seconds")

    return service_cli(
        "prometheus", argv, default_run_dir() / "prometheus.json",
        add_up_arguments=add_up_arguments,
        start=lambda args, state_file: start_prometheus(
            args.data_dir, args.target or [f"{LOOPBACK}:9464"], port=args.port, rule_files=args.rules,
            interval_s=args.interval, detach=True, state_file=state_file,
        ),
        address=lambda service: f"http://{LOOPBACK}:{service.ports['prometheus']}",
        setup_errors=(PrometheusSetupError,),
    )


if __name__ == "__main__":
    sys.exit(main())
