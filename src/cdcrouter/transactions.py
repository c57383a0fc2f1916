"""Kafka transaction timeouts of capture and the router, and the broker's upper bound on them.

``transaction.timeout.ms`` is how long the broker lets a transaction stay open before it aborts it.
It is also how long a crashed process's open transaction holds every read_committed reader of the
partitions it wrote to, unless a process with the same ``transactional.id`` fences it first. So it
should be a little longer than a transaction can really last, and no longer.

- The router's transactions last well under a second when it keeps up (``max_txn_ms`` 100 ms of
  routing plus a commit of tens of milliseconds); under a backlog one fills for up to
  ``max_fill_ms`` (5 s) before its delivery and commit: 20 s, twice that with room for a slow
  commit. (Kafka Streams uses 10 s, committing every 100 ms.) A transaction the broker aborts first
  (a broker restart longer than that) fences the producer: the router replaces it and redoes the
  work from the committed offsets. The router refuses a timeout not above twice ``max_fill_ms``.
- Capture's transactions include a snapshot chunk (10,000 rows by default) and the wait for a
  bounded producer queue: 60 s.

The broker refuses a timeout above its ``transaction.max.timeout.ms`` (default 15 minutes) when the
producer registers; :func:`timeout_refused` turns that refusal into an error that names both values.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, ConfigResource

__all__ = [
    "DEFAULT_CAPTURE_TIMEOUT_MS",
    "DEFAULT_ROUTER_TIMEOUT_MS",
    "MIN_TIMEOUT_MS",
    "broker_max_timeout_ms",
    "is_timeout_refused",
    "timeout_refused",
]

DEFAULT_ROUTER_TIMEOUT_MS = 20_000
DEFAULT_CAPTURE_TIMEOUT_MS = 60_000
MIN_TIMEOUT_MS = 1_000  # the broker aborts expired transactions on a timer; below this is noise


def is_timeout_refused(err: KafkaError) -> bool:
    """Did the broker refuse the producer's ``transaction.timeout.ms`` (above its maximum)?"""
    return err.code() == KafkaError.INVALID_TRANSACTION_TIMEOUT


def broker_max_timeout_ms(kafka_conf: dict[str, Any]) -> int | None:
    """The cluster's ``transaction.max.timeout.ms`` (None when the user may not describe brokers)."""
    try:
        admin = AdminClient({**kafka_conf, "log_level": 3})
        brokers = admin.list_topics(timeout=10).brokers
        if not brokers:
            return None
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        entries = next(iter(admin.describe_configs([resource], request_timeout=15).values())).result(20)
        entry = entries.get("transaction.max.timeout.ms")
        return int(entry.value) if entry is not None and entry.value is not None else None
    except Exception:  # no DESCRIBE_CONFIGS on the cluster: the message goes without the value
        return None


def timeout_refused(who: str, option: str, timeout_ms: int, kafka_conf: dict[str, Any]) -> tuple[str, str]:
    """Message and hint for a ``transaction.timeout.ms`` the broker refused (``option``: where the
    user sets it)."""
    limit = broker_max_timeout_ms(kafka_conf)
    bound = "the broker's transaction.max.timeout.ms" + (f" ({limit} ms)" if limit else "")
    lower = f"at most {limit}" if limit else "a lower value"
    return (
        f"{who}: Kafka refused transaction.timeout.ms = {timeout_ms} ms: it is above {bound}",
        f"set {option} to {lower}, or raise transaction.max.timeout.ms on the brokers",
    )
