"""The catalogue of local services, in start order.

Flink's services live in ``cdcrouter.stack.flink`` (``FLINK_SERVICES``) and join the catalogue
when that module exists; ``flink`` is also a group name for ``--only``.
"""

from __future__ import annotations

from cdcrouter.stack.service import Service
from cdcrouter.stack.services.connect import Connect
from cdcrouter.stack.services.kafka import Kafka
from cdcrouter.stack.services.postgres import Postgres
from cdcrouter.stack.services.registry import Registry

CORE_SERVICES: tuple[type[Service], ...] = (Postgres, Kafka, Registry, Connect)


def service_classes() -> tuple[type[Service], ...]:
    """Every service class, core first, then Flink's if ``cdcrouter.stack.flink`` is present."""
    try:
        from cdcrouter.stack.flink import FLINK_SERVICES
    except ModuleNotFoundError as exc:
        if exc.name != "cdcrouter.stack.flink":
            raise
        return CORE_SERVICES
    return CORE_SERVICES + tuple(FLINK_SERVICES)


def groups() -> dict[str, tuple[str, ...]]:
    """Names that stand for several services in ``--only``."""
    flink = tuple(c.name for c in service_classes() if c not in CORE_SERVICES)
    return {"flink": flink} if flink else {}


__all__ = ["CORE_SERVICES", "Connect", "Kafka", "Postgres", "Registry", "groups", "service_classes"]
