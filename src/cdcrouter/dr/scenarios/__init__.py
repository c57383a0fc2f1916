"""The drill's scenarios, by name: each a :class:`cdcrouter.dr.drill.Scenario`.

A scenario module registers a factory here with :func:`register`; ``cdcrouter dr drill
--scenario NAME`` builds it with the command's options.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

# name -> "module:factory"; the factory takes keyword options and returns a Scenario
_KNOWN: dict[str, str] = {
    "router-kill": "cdcrouter.dr.scenarios.router:RouterKill",
    "kafka-region": "cdcrouter.dr.scenarios.kafka_region:KafkaRegionLoss",
    "db-primary": "cdcrouter.dr.scenarios.db:DbPrimaryKill",
    "restore": "cdcrouter.dr.scenarios.restore:RestoreFromBackup",
}


def register(name: str, target: str) -> None:
    """Add a scenario: ``target`` is ``"module:factory"``."""
    _KNOWN[name] = target


def names() -> list[str]:
    return sorted(_KNOWN)


def factory(name: str) -> Callable[..., Any]:
    module, _, attr = _KNOWN[name].partition(":")
    return getattr(import_module(module), attr)
