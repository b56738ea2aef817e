"""``misuse-monitor gateway``: run the tee gateway in the foreground (uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def gateway_command(
    upstream: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8000")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8080)")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic for inference logs (default kafka.input_topic)")] = None,
    deployment: Annotated[str | None, typer.Option(help="Deployment name written into every log")] = None,
    overflow: Annotated[
        str | None, typer.Option(help="When the queue is full or Kafka is down: 'spill' (to a file, replayed) or 'drop'")
    ] = None,
    spill_path: Annotated[Path | None, typer.Option(help="Spill file (JSONL of inference-log/v1)")] = None,
    prescreen: Annotated[
        bool | None, typer.Option("--prescreen/--no-prescreen", help="Block flagged requests before forwarding")
    ] = None,
    create_topic: Annotated[bool, typer.Option("--create-topic", help="Create the topic if it does not exist")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")] = None,
) -> None:
    """Proxy an OpenAI-compatible server and tee every exchange into Kafka as inference-log/v1."""
    import logging

    from rich.console import Console

    from pipeline.gateway.app import create_app
    from pipeline.exits import UserError, bind_error
    from pipeline.gateway.server import bind, serve, url_of
    from pipeline.gateway.tee import GatewayMetrics, LogTee, check_paths
    from pipeline.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)
    # kafka-python logs every refused connection at ERROR; the tee reports the broker's state
    # once per outage (and in /healthz, mm_gateway_kafka_up).
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = load_settings(config)
    gw = settings.gateway
    if overflow is not None and overflow not in ("spill", "drop"):
        raise typer.BadParameter("must be 'spill' or 'drop'", param_hint="--overflow")
    updates = {
        "upstream_url": upstream, "host": host, "port": port, "topic": topic, "deployment": deployment,
        "overflow": overflow, "spill_path": spill_path,
    }  # fmt: skip
    gw = gw.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if prescreen is not None:
        gw = gw.model_copy(update={"prescreen": gw.prescreen.model_copy(update={"enabled": prescreen})})
    settings.gateway = _revalidate(gw)
    if bootstrap:
        settings.kafka = settings.kafka.with_bootstrap(bootstrap)  # validated: `::::` was an internal error
    check_paths(settings.gateway)
    gw = settings.gateway
    # The spill file is this process's from here on: one another gateway holds is a ConfigError
    # now, not a failed startup after binding (see LogTee.claim).
    metrics = GatewayMetrics()
    tee = LogTee(gw, settings.kafka, metrics)
    tee.claim()
    # Bound before the Kafka check, which can take seconds: a bad --host or a busy port is told at once.
    try:
        sock = bind(gw.host, gw.port)
    except OSError as exc:
        raise bind_error(exc, gw.host, gw.port, "choose another --port or --host") from exc
    try:
        _check_topic(settings, create_topic)
    except BaseException:
        sock.close()
        raise
    Console(stderr=True).print(
        f"gateway on {url_of(sock)} -> {settings.gateway.upstream_url}; "
        f"logs to {settings.kafka.bootstrap_servers} topic {settings.gateway.topic or settings.kafka.input_topic} "
        f"(overflow: {settings.gateway.overflow}; prescreen: {'on' if settings.gateway.prescreen.enabled else 'off'})",
        soft_wrap=True,
    )
    if not serve(create_app(settings, metrics=metrics, tee=tee), sock):
        raise UserError("gateway: the server did not start (the reason is logged above)")


# The flag that sets each GatewaySettings field, for errors in values given on the command line.
_FLAGS = {"upstream_url": "--upstream", "host": "--host", "port": "--port", "topic": "--topic",
          "deployment": "--deployment", "overflow": "--overflow", "spill_path": "--spill-path"}  # fmt: skip


def _revalidate(gw):  # noqa: ANN001, ANN202 - GatewaySettings, imported lazily
    """The settings with the command-line overrides validated. The file and MM_* values were
    validated on load (exit 3), so an error here is a bad option value: exit 2, naming the flag
    (it was "invalid GatewaySettings", exit 4)."""
    from pydantic import ValidationError

    try:
        return type(gw).model_validate(gw.model_dump())
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        raise typer.BadParameter(error["msg"].removeprefix("Value error, "), param_hint=_FLAGS.get(field, field)) from exc


def _check_topic(settings, create: bool) -> None:  # noqa: ANN001 - Settings, imported lazily
    """As ``produce``: refuse a topic that does not exist unless ``--create-topic``. A broker that
    does not answer does not stop the gateway (users are served, logs spill until it is back)."""
    import logging

    from kafka.errors import KafkaError

    from pipeline.topics import TopicMissing, require_topic

    topic = settings.gateway.topic or settings.kafka.input_topic
    try:
        if require_topic(settings.kafka, topic, create=create):
            logging.getLogger("pipeline.gateway").info("created topic %s", topic)
    except TopicMissing as exc:
        raise typer.BadParameter(str(exc), param_hint="--topic") from exc
    except KafkaError as exc:
        logging.getLogger("pipeline.gateway").warning(
            "Kafka at %s not reachable (%s): serving anyway, logs follow the %r policy",
            settings.kafka.bootstrap_servers, type(exc).__name__, settings.gateway.overflow,
        )
