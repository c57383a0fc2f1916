"""Where each region's Kafka is: ``a`` is the usual ``connections.kafka``; another region's comes
from the config file's ``regions.<name>.kafka`` section (``${VAR}`` expanded, like ``connections``),
``CDCROUTER_REGION_<NAME>__KAFKA__<KEY>`` variables, or the local stack's ``region-<name>``
(``cdcrouter stack up --region b``).

Example ``cdcrouter.yaml``::

    connections:
      kafka: {bootstrap_servers: kafka-a.example:9092}
    regions:
      b:
        kafka: {bootstrap_servers: kafka-b.example:9092, sasl_password: "${KAFKA_B_PASSWORD}"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cdcrouter.config.connections import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_STATE_DIR,
    Connections,
    KafkaSettings,
    _expand_env,
    _merge,
    load_connections,
)
from cdcrouter.errors import ConfigError
from cdcrouter.stack.regions import PRIMARY, check_region, region_state_dir


def region_kafka(
    region: str, *, config_file: str | Path | None = None, state_dir: str | Path | None = None
) -> KafkaSettings:
    """The Kafka connection settings of ``region`` (see the module docstring for precedence)."""
    name = check_region(region)
    if name == PRIMARY:
        return load_connections(config_file, state_dir).kafka
    state = Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR))
    data: dict[str, Any] = {}
    endpoints = region_state_dir(state, name) / "endpoints.json"
    if endpoints.is_file():
        data = dict(json.loads(endpoints.read_text()).get("kafka", {}))
    path = Path(config_file or os.environ.get("CDCROUTER_CONFIG", DEFAULT_CONFIG_FILE))
    if path.is_file():
        from ruamel.yaml import YAML

        doc = YAML(typ="safe").load(path.read_text()) or {}
        section = ((doc.get("regions") or {}).get(name) or {}).get("kafka") if isinstance(doc, dict) else None
        if section:
            data = _merge(data, _expand_env(section, f"{path}: regions.{name}.kafka"))
    prefix = f"CDCROUTER_REGION_{name.upper()}__KAFKA__"
    data.update({k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)})
    if not data:
        raise ConfigError(
            f"no Kafka connection is known for region {name}",
            hint=f"start it (cdcrouter stack up --region {name}) or set regions.{name}.kafka in "
            f"{path} or {prefix}BOOTSTRAP_SERVERS",
        )
    try:
        return KafkaSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"regions.{name}.kafka.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
            hint=f"check {path} or the {prefix}* variables",
        ) from exc


def region_connections(
    region: str, *, config_file: str | Path | None = None, state_dir: str | Path | None = None
) -> Connections:
    """The usual connections with Kafka replaced by ``region``'s (what a component in that region uses)."""
    conns = load_connections(config_file, state_dir)
    if check_region(region) == PRIMARY:
        return conns
    kafka = region_kafka(region, config_file=config_file, state_dir=state_dir)
    return conns.model_copy(update={"kafka": kafka})
