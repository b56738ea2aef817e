"""Sink registry derived from the modules of ``pipeline.sinks``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.plugins import discover_plugins, pick
from pipeline.sinks.base import Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


def discover_sinks(package: str = "pipeline.sinks") -> dict[str, type[Sink]]:
    return discover_plugins(package, Sink, skip=("base", "registry"))


def build_sinks(settings: Settings, metrics: PipelineMetrics) -> list[Sink]:
    return [cls.create(settings, metrics) for cls in pick(discover_sinks(), settings.sinks, "sink")]
