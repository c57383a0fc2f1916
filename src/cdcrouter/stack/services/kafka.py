"""Kafka 4.x, one KRaft node (broker + controller), from Maven Central jars.

Topics are never auto-created (``auto.create.topics.enable=false``): every component creates
its topics explicitly. Transactions work on one node (replication factor 1, min ISR 1).
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

from cdcrouter.errors import StackError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.process import port_accepts
from cdcrouter.stack.service import HOST, Service, StackContext, java_major, jvm_dir

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


JIT_ENV = "CDCROUTER_STACK_KAFKA_JIT"
# The broker's JIT compilers share 2 cores with the demo (docs/operations.md, "Kafka start-up",
# has the measurements). "c1": C1 only, little to compile, so a just-started broker is fast soon
# (the cold demo), but its code is slower (the warm fused p50 4x). "tiered": the JVM's own C1 + C2,
# whose C2 backlog (10+ s of CPU on a fresh broker) competes with the first demo.
JIT_MODES: dict[str, tuple[str, ...]] = {"c1": ("-XX:TieredStopAtLevel=1",), "tiered": ()}
DEFAULT_JIT = "c1"


def kafka_jars(ctx: StackContext) -> Path:
    """The broker's classpath folder, fetched with ``jvm/kafka/pom.xml`` when allowed."""
    dest = fetch.component_dir(ctx.cache_dir, f"kafka-{versions.KAFKA}")
    if ctx.allow_fetch:
        fetch.mvn_fetch(
            jvm_dir() / "kafka" / "pom.xml",
            dest,
            {"kafka.version": versions.KAFKA, "log4j.version": versions.LOG4J},
        )
    return fetch.require(dest, f"Kafka {versions.KAFKA} jars", f"lib/kafka_2.13-{versions.KAFKA}.jar")


def write_log4j(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LOG4J2)
    return path


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of a UUID), as ``kafka-storage random-uuid`` makes.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage tool's
    argument parser would read it as an option (about 1 in 64 ids otherwise).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    name = "kafka"
    version = versions.KAFKA
    port_keys = ("kafka", "kafka-controller")
    start_timeout = 90.0
    heap_mb = 1024  # Kafka's own default heap
    # Kafka's own default collector settings (kafka-run-class.sh), used on Java 17. On this 2-core
    # machine G1's young pauses took 15-175 ms (its workers wait for a core the router and the
    # benchmark are using) and every record appended during one waited that long: the broker's GC
    # log and the latency bench's append -> routed split lined up pause for pause.
    gc_opts = (
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
    )
    # Generational ZGC collects concurrently (pauses well under 1 ms): with it the append ->
    # routed p99 went from 36-73 ms to 7-11 ms in the same runs. Generational from Java 21 (a flag
    # there, the only mode from 23), so the broker takes a Java 21+ when one is installed.
    zgc_min_java = 21

    def collector(self, ctx: StackContext) -> tuple[str, tuple[str, ...]]:
        """The broker's ``java`` and collector flags: generational ZGC on Java 21+, else G1."""
        try:
            java = ctx.java_for(self.zgc_min_java)
        except StackError:
            return ctx.java, self.gc_opts
        zgc = ("-XX:+UseZGC", f"-Xms{self.heap_mb}m")  # a fixed heap: ZGC needs headroom, not resizing
        return java, zgc + (("-XX:+ZGenerational",) if java_major(java) < 23 else ())

    def fetch(self, ctx: StackContext) -> None:
        kafka_jars(ctx)

    def _props(self, ctx: StackContext) -> str:
        home = ctx.service_dir(self.name)
        port, cport = ctx.port("kafka"), ctx.port("kafka-controller")
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{HOST}:{cport}",
                f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={home / 'data'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=10",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "min.insync.replicas=1",
                "default.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "log.segment.bytes=104857600",
                "num.network.threads=2",
                "num.io.threads=4",
                "",
            ]
        )

    def prepare(self, ctx: StackContext) -> None:
        home = ctx.service_dir(self.name)
        props = home / "server.properties"
        props.write_text(self._props(ctx))
        write_log4j(home / "log4j2.properties")
        if (home / "data" / "meta.properties").is_file():
            return
        cluster_id = new_cluster_id()
        import subprocess

        argv = [
            ctx.java,
            "-Xmx256m",
            "-cp",
            str(kafka_jars(ctx) / "lib" / "*"),
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=home, check=False)
        if out.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {home / 'data'} failed: "
                f"{(out.stderr or out.stdout).strip()[-600:]}",
                hint="`cdcrouter stack down --purge --only kafka` starts over with empty storage",
            )

    def jit_opts(self) -> tuple[str, ...]:
        """The broker's JIT flags, :data:`JIT_MODES` by ``CDCROUTER_STACK_KAFKA_JIT`` (an unknown
        mode is an error: a typo must not silently pick the other trade-off)."""
        mode = os.environ.get(JIT_ENV, "").strip().lower() or DEFAULT_JIT
        if mode not in JIT_MODES:
            raise StackError(
                f"{JIT_ENV}={mode!r} is not a JIT mode of the local Kafka",
                hint=f"use one of {', '.join(JIT_MODES)} (default {DEFAULT_JIT}), or unset it",
            )
        return JIT_MODES[mode]

    def command(self, ctx: StackContext) -> list[str]:
        home = ctx.service_dir(self.name)
        java, gc = self.collector(ctx)
        return [
            java,
            *self.java_opts(self.heap_mb, gc),
            *self.jit_opts(),
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            str(kafka_jars(ctx) / "lib" / "*"),
            "kafka.Kafka",
            str(home / "server.properties"),
        ]

    def ready(self, ctx: StackContext) -> bool:
        if not port_accepts(ctx.port("kafka")):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.endpoint(ctx), "log_level": 0})
        try:
            md = admin.list_topics(timeout=3)
        except Exception:
            return False
        return bool(md.brokers)

    def after_start(self, ctx: StackContext) -> str | None:
        """Create the internal topics and warm the broker's transaction path before it counts as
        ready (:mod:`cdcrouter.stack.warmup`: why, and what it leaves behind)."""
        from confluent_kafka import KafkaException

        from cdcrouter.stack.process import ProcessRecord
        from cdcrouter.stack.warmup import warm_broker

        rec = ProcessRecord.load(ctx.pid_file(self.name))
        try:
            return warm_broker(self.endpoint(ctx), rec.pid if rec else None).summary()
        except KafkaException as exc:  # the broker works: the first user pays the cold start instead
            return f"warm-up incomplete ({exc.args[0].str()}): the first transactions may be slow"

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        return {"kafka": {"bootstrap_servers": self.endpoint(ctx), "security_protocol": "PLAINTEXT"}}
