"""Topic existence checks for the commands that name a topic (``produce``, ``stream``).

A broker with ``auto.create.topics.enable`` (the default, and our local one) creates any topic a
client names, so a mistyped ``--topic`` used to succeed: records went to a new, unread topic and
the command exited 0. :func:`require_topic` refuses a missing topic, suggests the closest existing
names, and creates it only when asked (``--create-topic``: broker-default partitions and
replication). Listing topics is a metadata request for all topics, which never auto-creates one.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:  # the settings import this module (topic_name_problem)
    from pipeline.settings import KafkaSettings


# Kafka's own rule for a topic name: 1 to 249 of these characters, and not "." or "..". A name
# outside it passed every check here, and the broker's refusal reached the user as a 600-character
# "InvalidTopicError: ... CreateTopicsRequest(...)" line and exit 1 (hostile review, 2026-12-07).
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Kafka topic, or None."""
    if name in (".", "..") or not _TOPIC_NAME.fullmatch(name):
        return f"{name[:80]!r} is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-'; not '.' or '..')"
    return None


def _checked_topic_name(name: str) -> str:
    if problem := topic_name_problem(name):
        raise ValueError(problem)
    return name


# A settings field that holds a topic name (kafka.*_topic, gateway.topic).
TopicName = Annotated[str, AfterValidator(_checked_topic_name)]


class TopicMissing(ValueError):
    """The named topic does not exist and creating it was not asked for."""


def existing_topics(kafka: KafkaSettings, timeout_s: float = 10.0) -> set[str]:
    """Every topic name on the cluster; raises a KafkaError when no broker answers in time."""
    from kafka import KafkaAdminClient

    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms, **kafka.client_options())
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def require_topic(kafka: KafkaSettings, topic: str, *, create: bool, timeout_s: float = 30.0) -> bool:
    """Return True if ``topic`` was created now, False if it existed; raise TopicMissing otherwise."""
    topics = existing_topics(kafka)
    if topic in topics:
        return False
    if not create:
        visible = sorted(t for t in topics if not t.startswith("__"))
        close = difflib.get_close_matches(topic, visible, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TopicMissing(
            f"topic {topic!r} does not exist on {kafka.bootstrap_servers}{hint} "
            "(pass --create-topic to create it with the broker's default partitions)"
        )
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(request_timeout_ms=int(timeout_s * 1000), **kafka.client_options())
    try:
        admin.create_topics({topic: {}}, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
    except TopicAlreadyExistsError:
        return False  # created meanwhile by someone else: fine
    finally:
        admin.close()
    return True
