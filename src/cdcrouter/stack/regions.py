"""Regions of the local stack: ``a`` is the stack itself; ``b`` is a second Kafka cluster for
disaster recovery (MirrorMaker 2 keeps it in sync, see :mod:`cdcrouter.dr.mirror`).

Region ``b`` lives in ``<state-dir>/region-b`` (its own data, logs, PID files, ``ports.json`` and
``endpoints.json``) and runs only Kafka, on its own ports, so both clusters run side by side.
"""

from __future__ import annotations

from pathlib import Path

from cdcrouter.errors import UsageError

PRIMARY = "a"
# services a secondary region runs, and their default ports there (Kafka's plus 10000)
REGION_SERVICES: tuple[str, ...] = ("kafka",)
REGION_PORTS: dict[str, dict[str, int]] = {"b": {"kafka": 19092, "kafka-controller": 19093}}
REGIONS: tuple[str, ...] = (PRIMARY, *REGION_PORTS)


def check_region(region: str | None) -> str:
    """The region name, lower-cased; a usage error for an unknown one."""
    name = (region or PRIMARY).strip().lower()
    if name not in REGIONS:
        raise UsageError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
    return name


def region_state_dir(state_dir: Path, region: str | None) -> Path:
    """Where ``region``'s stack lives, given the primary stack's state dir."""
    name = check_region(region)
    return state_dir if name == PRIMARY else state_dir / f"region-{name}"


def env_port_var(key: str, region: str) -> str:
    """The environment variable that overrides ``key``'s port in ``region``."""
    infix = "" if region == PRIMARY else f"{region.upper()}_"
    return f"CDCROUTER_STACK_{infix}PORT_" + key.upper().replace("-", "_")
