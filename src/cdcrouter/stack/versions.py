"""Every pinned version of the local stack, in one place.

The Maven poms under ``jvm/`` take these through ``-D`` properties, so changing a version here is
the only edit needed. Flink's connector jars must match the PyFlink version (``pyproject.toml``).
"""

from __future__ import annotations

POSTGRES_MAJOR = "15"
KAFKA = "4.1.1"
APICURIO_REGISTRY = "3.3.3"
DEBEZIUM = "3.4.0.Final"
FLINK = "2.2.1"  # must equal apache-flink in pyproject.toml's [flink] extra
FLINK_KAFKA_CONNECTOR = "5.0.0-2.2"  # newest; no -2.3 build exists (verified)
FLINK_AVRO_CONFLUENT = "2.2.0"  # no 2.2.1 on Maven Central (verified); the 2.2.0 format jar runs on 2.2.1
FLINK_SQL_GATEWAY = "2.2.1"  # verified on Maven Central
