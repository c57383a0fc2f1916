"""Deploy-time values for a generated script's ``${PLACEHOLDER}`` settings, from ``Connections``.

Only non-secret values go into placeholders (they end up in the SQL text the service shows).
Credentials for a secured Kafka or registry become table options set at deploy time
(:func:`flink_connection_options`), which are never planned, printed or stored.
"""

from __future__ import annotations

from typing import Any


def flink_values(conns: Any, group_id: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": conns.kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": conns.registry.url,
        "FLINK_GROUP_ID": group_id,
    }


def flink_connection_options(conns: Any) -> dict[str, str]:
    """Kafka connector ``properties.*`` and registry auth options for a secured cluster."""
    k = conns.kafka
    opts: dict[str, str] = {}
    if k.security_protocol != "PLAINTEXT":
        opts["properties.security.protocol"] = k.security_protocol
    if k.sasl_mechanism:
        opts["properties.sasl.mechanism"] = k.sasl_mechanism
        if k.sasl_username and k.sasl_password:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if k.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            user = k.sasl_username.replace('"', '\\"')
            pwd = k.sasl_password.get_secret_value().replace('"', '\\"')
            opts["properties.sasl.jaas.config"] = f'{module} required username="{user}" password="{pwd}";'
    if k.ssl_ca_location:
        opts["properties.ssl.truststore.type"] = "PEM"
        opts["properties.ssl.truststore.location"] = k.ssl_ca_location
    reg = conns.registry
    if reg.basic_auth_user_info:
        opts["value.avro-confluent.basic-auth.credentials-source"] = "USER_INFO"
        opts["value.avro-confluent.basic-auth.user-info"] = reg.basic_auth_user_info.get_secret_value()
    return opts
