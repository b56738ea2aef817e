"""The Receiver contract: render a notification for one kind of endpoint and send it.

A receiver is one file in this package holding one concrete :class:`Receiver` subclass with a
unique ``name`` (the ``type`` in ReceiverSettings). The dispatcher classifies the returned HTTP
status: 2xx delivered; 408, 425, 429 and 5xx (and transport errors) retried; other 4xx rejected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import httpx

from pipeline.alerts.model import WebhookMessage
from pipeline.alerts.settings import ReceiverSettings
from pipeline.plugins import discover_plugins


class Receiver(ABC):
    name: ClassVar[str]

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: ReceiverSettings) -> Self:
        """Runs once when the dispatcher starts."""
        return cls(settings)

    @abstractmethod
    def send(self, client: httpx.Client, message: WebhookMessage, idempotency_key: str) -> httpx.Response:
        """Runs per delivery attempt (possibly again for the same message, with the same key,
        after a failure); transport errors propagate as httpx exceptions."""


def discover_receivers() -> dict[str, type[Receiver]]:
    return discover_plugins("pipeline.alerts.receivers", Receiver, skip=("base",))


def build_receivers(settings: list[ReceiverSettings]) -> dict[str, Receiver]:
    available = discover_receivers()
    return {s.name: available[s.type].from_settings(s) for s in settings}
