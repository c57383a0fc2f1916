"""Connection settings shared by every command: the local stack or existing production services."""

from cdcrouter.config.connections import (
    ConfluentCloudSettings,
    Connections,
    ConnectSettings,
    FlinkSettings,
    KafkaSettings,
    PostgresSettings,
    RegistrySettings,
    load_connections,
)

__all__ = [
    "ConfluentCloudSettings",
    "ConnectSettings",
    "Connections",
    "FlinkSettings",
    "KafkaSettings",
    "PostgresSettings",
    "RegistrySettings",
    "load_connections",
]
