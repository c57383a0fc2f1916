"""Where the services are and how to authenticate to them.

Precedence, highest first: ``CDCROUTER_*`` environment variables (nested with ``__``, e.g.
``CDCROUTER_KAFKA__BOOTSTRAP_SERVERS``), then the ``connections:`` section of a config file
(``cdcrouter.yaml`` by default; ``${VAR}`` references are expanded from the environment), then the
local stack's endpoints (``<state-dir>/endpoints.json`` and its secret files, written by
``cdcrouter stack up``), then built-in loopback defaults.

Secrets are ``SecretStr``: they never appear in ``repr``, logs or generated files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdcrouter.errors import ConfigError
from cdcrouter.observe.logs import KAFKA_LOGGER

DEFAULT_STATE_DIR = ".cdcrouter"
DEFAULT_CONFIG_FILE = "cdcrouter.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PARTITIONER = "murmur2_random"  # the Java client's default for keyed records: see producer_conf


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "cdcrouter"

    def to_librdkafka(self) -> dict[str, Any]:
        """The librdkafka settings for confluent-kafka clients (secrets revealed only here).

        ``logger`` sends librdkafka's own log lines through Python logging (level mapped from
        syslog's) instead of raw ``%N|...`` lines on stderr; it is a Python object, so this dict
        is for confluent-kafka clients only, never for a generated file.
        """
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf

    def producer_conf(self, **overrides: Any) -> dict[str, Any]:
        """Settings for every cdcrouter producer: the connection, then what all of them share.

        ``murmur2_random`` is the Java client's (and Flink's, and Kafka Streams') default
        partitioner for keyed records: the same key lands in the same partition whoever writes it,
        so one entity's events stay in one partition and in order. librdkafka's own default
        (``consistent_random``, CRC32) would scatter a key that a Java writer or the router
        placed elsewhere. ``overrides`` add or change the rest (transactional.id, linger.ms, ...).
        """
        conf = self.to_librdkafka()
        conf.update({"partitioner": PARTITIONER, "enable.idempotence": True, "acks": "all"})
        conf.update(overrides)
        return conf


class RegistrySettings(_Section):
    url: str = "http://127.0.0.1:8080/apis/ccompat/v7"
    basic_auth_user_info: SecretStr | None = None  # "key:secret"
    ssl_ca_location: str | None = None
    timeout_s: int = 30  # the client's own default is no timeout: a stuck registry would hang us

    def to_client_conf(self) -> dict[str, Any]:
        """Settings for ``confluent_kafka.schema_registry.SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s}
        if self.basic_auth_user_info:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf


class ConnectSettings(_Section):
    url: str = "http://127.0.0.1:8083"
    username: str | None = None
    password: SecretStr | None = None

    def auth(self) -> tuple[str, str] | None:
        if self.username and self.password:
            return (self.username, self.password.get_secret_value())
        return None


class FlinkSettings(_Section):
    sql_gateway_url: str = "http://127.0.0.1:8091"
    rest_url: str = "http://127.0.0.1:8081"


class ConfluentCloudSettings(_Section):
    """Confluent Cloud for Apache Flink statements API (``/sql/v1``)."""

    flink_endpoint: str | None = None  # https://flink.<region>.<cloud>.confluent.cloud
    organization_id: str | None = None
    environment_id: str | None = None
    compute_pool_id: str | None = None
    principal: str | None = None
    catalog: str | None = None  # the environment name
    database: str | None = None  # the Kafka cluster name
    flink_api_key: str | None = None
    flink_api_secret: SecretStr | None = None


class PostgresSettings(_Section):
    """One server, or a primary and its standbys: ``host: "db-a,db-b"`` with ``port: "5432,5432"``
    (libpq's multi-host form). With several hosts every connection asks for the one that is the
    primary (``target_session_attrs=primary`` unless set), so capture follows a promotion
    (docs/disaster-recovery.md)."""

    host: str = "127.0.0.1"
    port: int | str = 55432  # "p1,p2" for several hosts
    dbname: str = "cdcrouter"
    user: str = "cdcrouter"
    password: SecretStr | None = None
    sslmode: str = "disable"
    target_session_attrs: str | None = None  # libpq's: any, read-write, primary, standby, ...

    @field_validator("port")
    @classmethod
    def _ports(cls, value: int | str) -> int | str:
        for part in str(value).split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise ValueError(f"port must be 1-65535 (or a comma-separated list of such), got {value!r}")
        return int(value) if str(value).strip().isdigit() else str(value)

    @property
    def multi_host(self) -> bool:
        return "," in self.host

    def conninfo(self, **extra: str) -> str:
        """A libpq connection string (carries the password: never log it)."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": self.dbname,
            "user": self.user,
            "sslmode": self.sslmode,
        }
        attrs = self.target_session_attrs or ("primary" if self.multi_host else None)
        if attrs:
            parts["target_session_attrs"] = attrs
        parts.update(extra)
        if self.password:
            parts["password"] = self.password.get_secret_value()
        return " ".join(f"{k}={_quote_libpq(v)}" for k, v in parts.items())

    def redacted(self) -> str:
        hosts, ports = self.host.split(","), str(self.port).split(",")
        where = ",".join(f"{h}:{ports[min(i, len(ports) - 1)]}" for i, h in enumerate(hosts))
        return f"postgresql://{self.user}@{where}/{self.dbname}"


def _quote_libpq(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Connections(BaseSettings):
    """Every endpoint cdcrouter talks to. Build it with :func:`load_connections`."""

    model_config = SettingsConfigDict(env_prefix="CDCROUTER_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    connect: ConnectSettings = ConnectSettings()
    flink: FlinkSettings = FlinkSettings()
    confluent_cloud: ConfluentCloudSettings = ConfluentCloudSettings()
    postgres: PostgresSettings = PostgresSettings()


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"{where}: environment variable ${{{name}}} is not set",
                    hint=f"export {name}=... (secrets come from the environment or a secret file)",
                )
            return os.environ[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where) for v in value]
    return value


def _stack_defaults(state_dir: Path) -> dict[str, Any]:
    """Endpoints the local stack recorded (no secrets in endpoints.json; they sit in secret files)."""
    endpoints = state_dir / "endpoints.json"
    if not endpoints.is_file():
        return {}
    data: dict[str, Any] = json.loads(endpoints.read_text())
    secret = state_dir / "secrets" / "postgres-password"
    if secret.is_file() and "postgres" in data:
        data["postgres"]["password"] = secret.read_text().strip()
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides() -> dict[str, Any]:
    """CDCROUTER_SECTION__KEY variables as a nested dict (so they win over file values)."""
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith("CDCROUTER_") or "__" not in name:
            continue
        section, _, key = name[len("CDCROUTER_") :].lower().partition("__")
        if section in Connections.model_fields:
            out.setdefault(section, {})[key] = value
    return out


def load_connections(
    config_file: str | Path | None = None, state_dir: str | Path | None = None
) -> Connections:
    """Resolve connections from env, config file and the local stack (see the module docstring)."""
    state = Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR))
    data = _stack_defaults(state)
    explicit = config_file is not None or "CDCROUTER_CONFIG" in os.environ
    path = Path(config_file or os.environ.get("CDCROUTER_CONFIG", DEFAULT_CONFIG_FILE))
    if path.is_file():
        from ruamel.yaml import YAML, YAMLError

        try:
            doc = YAML(typ="safe").load(path.read_text()) or {}
        except YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}", hint="fix the YAML syntax") from exc
        section = doc.get("connections", {}) if isinstance(doc, dict) else {}
        data = _merge(data, _expand_env(section or {}, f"{path}: connections"))
    elif explicit:
        raise ConfigError(f"config file {path} does not exist", hint="check --config / CDCROUTER_CONFIG")
    data = _merge(data, _env_overrides())
    try:
        return Connections.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"connections.{loc}: {first['msg']}",
            hint=f"check {path if path.is_file() else 'the CDCROUTER_* environment variables'}",
        ) from exc
