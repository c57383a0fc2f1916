"""MirrorMaker 2 between two Kafka regions: its config, its process, and what it mirrors.

A dedicated MM2 process (``org.apache.kafka.connect.mirror.MirrorMaker``, Apache Kafka's own
``connect-mirror`` jars from Maven Central via ``jvm/mirror/pom.xml``) mirrors one flow, source
region -> target region. Why dedicated and not connectors on the Connect worker: it needs no
running Connect cluster (the stack's Connect is optional and bound to region A's broker, the one
a disaster takes down), stores its state (configs, offsets, status) in the target cluster only,
and supports exactly-once delivery in that mode (Connect's KIP-618 support, usable by dedicated MM2
since Kafka 3.5).

What the generated ``mm2.properties`` does, and why:

* ``IdentityReplicationPolicy``: topic names stay the same in the target, so a component
  pointed at region B finds ``raw-business-events`` there (active-passive). Active-active would
  need the default prefixing policy (``a.raw-business-events``): identity names cannot tell a
  mirrored record from a local one, and two flows would loop.
* The source consumer reads ``read_committed``: records of aborted transactions are never mirrored
  (MM2's default is read_uncommitted).
* ``exactly.once.source.support`` on the target: records and MM2's source offsets commit in one
  transaction, so a restarted MM2 neither skips nor doubles records.
* Checkpoints every ``sync_interval_s`` and ``sync.group.offsets.enabled``: consumer groups'
  offsets are translated into the target's ``__consumer_offsets`` (for groups not active there)
  and into ``<source>.checkpoints.internal``. Translation is conservative: a consumer may re-read
  a few records after a failover (deduplicate by ``eventHeader.uuid``), never skip one.
* ``offset-syncs.topic.location=target`` and no heartbeats for the disabled reverse flow: MM2 only
  reads the source region.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cdcrouter.config.connections import KafkaSettings
from cdcrouter.errors import DrError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.process import ProcessRecord, is_alive, kill_leftovers, launch, port_is_free, stop, tail
from cdcrouter.stack.service import default_cache_dir, jvm_dir
from cdcrouter.stack.services.kafka import LOG4J2 as KAFKA_LOG4J2

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
IDENTITY_POLICY = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
SPEC_FILE = "mirror.json"
DEFAULT_REST_PORT = 19083  # the dedicated workers' internal REST (KIP-710), loopback only
HEAP_MB = 384

# the broker's logging, quieter: MM2's own lines at INFO, the Connect runtime's at WARN
LOG4J2 = (
    KAFKA_LOG4J2.replace("rootLogger.level = INFO", "rootLogger.level = WARN")
    + "logger.mirror.name = org.apache.kafka.connect.mirror\nlogger.mirror.level = INFO\n"
)


def mirror_jars(cache_dir: Path | None = None, *, allow_fetch: bool = True) -> Path:
    """MM2's classpath folder (``lib/``), fetched with ``jvm/mirror/pom.xml`` when allowed."""
    dest = fetch.component_dir(cache_dir or default_cache_dir(), f"mirror-maker-{versions.KAFKA}")
    if allow_fetch:
        fetch.mvn_fetch(
            jvm_dir() / "mirror" / "pom.xml",
            dest,
            {"kafka.version": versions.KAFKA, "log4j.version": versions.LOG4J},
        )
    return fetch.require(
        dest, f"MirrorMaker 2 {versions.KAFKA} jars", f"lib/connect-mirror-{versions.KAFKA}.jar"
    )


def topic_pattern(topic: str) -> str:
    """A regex matching exactly ``topic`` (topic names use only ``[A-Za-z0-9._-]``; no backslashes,
    which a Java properties file would eat)."""
    return topic.replace(".", "[.]")


@dataclass(frozen=True)
class MirrorSpec:
    """One mirror flow, ``source_alias`` -> ``target_alias``.

    ``topics`` are exact topic names; ``groups`` are regexes of consumer groups whose offsets are
    translated. The aliases name MM2's internal topics (``mm2-offsets.<source>.internal`` and
    ``<source>.checkpoints.internal`` in the target), so two flows with different aliases never share
    state (tests use that to run private mirrors against the shared brokers).
    """

    source: KafkaSettings
    target: KafkaSettings
    topics: tuple[str, ...]
    groups: tuple[str, ...] = (".*",)
    source_alias: str = "a"
    target_alias: str = "b"
    exactly_once: bool = True
    sync_interval_s: int = 1
    refresh_interval_s: int = 5
    rest_port: int = DEFAULT_REST_PORT
    replication_factor: int = 1  # of the topics MM2 creates in the target (3 on a real cluster)

    def to_json(self, source_region: str, target_region: str) -> str:
        """What ``dr status`` and failover need to find this flow again (no connection secrets:
        those are looked up by region name)."""
        return json.dumps(
            {
                "source_region": source_region,
                "target_region": target_region,
                "topics": list(self.topics),
                "groups": list(self.groups),
                "source_alias": self.source_alias,
                "target_alias": self.target_alias,
                "exactly_once": self.exactly_once,
                "sync_interval_s": self.sync_interval_s,
                "refresh_interval_s": self.refresh_interval_s,
                "rest_port": self.rest_port,
                "replication_factor": self.replication_factor,
            },
            indent=2,
        )

    @property
    def offsets_topic(self) -> str:
        """Where MM2 (Connect) stores the source offsets it has mirrored up to, in the target."""
        return f"mm2-offsets.{self.source_alias}.internal"

    @property
    def status_topic(self) -> str:
        return f"mm2-status.{self.source_alias}.internal"

    @property
    def checkpoints_topic(self) -> str:
        """Translated group offsets, in the target (``RemoteClusterUtils`` reads the same topic)."""
        return f"{self.source_alias}.checkpoints.internal"


def _cluster_props(alias: str, kafka: KafkaSettings) -> tuple[list[str], dict[str, str]]:
    """``<alias>.*`` client settings; secrets go through the environment (EnvVarConfigProvider),
    never into the file. Returns the lines and the environment the process needs."""
    lines = [f"{alias}.bootstrap.servers = {kafka.bootstrap_servers}"]
    env: dict[str, str] = {}
    lines.append(f"{alias}.security.protocol = {kafka.security_protocol}")
    if kafka.ssl_ca_location:
        lines += [
            f"{alias}.ssl.truststore.type = PEM",
            f"{alias}.ssl.truststore.location = {kafka.ssl_ca_location}",
        ]
    if kafka.sasl_mechanism:
        lines.append(f"{alias}.sasl.mechanism = {kafka.sasl_mechanism}")
        module = (
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            if kafka.sasl_mechanism.upper().startswith("SCRAM")
            else "org.apache.kafka.common.security.plain.PlainLoginModule"
        )
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        var = f"CDCROUTER_MM2_{alias.upper().replace('-', '_')}_JAAS"
        quote = lambda s: s.replace("\\", "\\\\").replace('"', '\\"')  # noqa: E731
        env[var] = (
            f'{module} required username="{quote(kafka.sasl_username or "")}" password="{quote(password)}";'
        )
        lines.append(f"{alias}.sasl.jaas.config = ${{env:{var}}}")
    return lines, env


def render_properties(spec: MirrorSpec) -> tuple[str, dict[str, str]]:
    """``mm2.properties`` for ``spec`` plus the environment variables holding its secrets."""
    a, b = spec.source_alias, spec.target_alias
    flow = f"{a}->{b}"
    if not spec.topics:
        raise DrError("nothing to mirror: no topics", hint="name the topics (or a pipeline) to mirror")
    a_lines, a_env = _cluster_props(a, spec.source)
    b_lines, b_env = _cluster_props(b, spec.target)
    every, rf = f"{spec.sync_interval_s}", spec.replication_factor
    lines = [
        "# generated by cdcrouter (cdcrouter.dr.mirror); secrets come from the environment",
        f"clusters = {a}, {b}",
        *a_lines,
        *b_lines,
        "config.providers = env",
        "config.providers.env.class = org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        f"{flow}.enabled = true",
        f"{b}->{a}.enabled = false",
        # else MM2 still runs a herder for b->a to emit heartbeats into a: its config, offsets and
        # status topics would be created in the source region, and start-up takes longer
        f"{b}->{a}.emit.heartbeats.enabled = false",
        f"{flow}.topics = {', '.join(topic_pattern(t) for t in spec.topics)}",
        f"{flow}.groups = {', '.join(spec.groups)}",
        # records of aborted transactions must never reach the other region
        f"{flow}.consumer.isolation.level = read_committed",
        f"replication.policy.class = {IDENTITY_POLICY}",
        "offset-syncs.topic.location = target",
        "sync.topic.configs.enabled = true",
        "sync.topic.acls.enabled = false",
        "emit.checkpoints.enabled = true",
        f"emit.checkpoints.interval.seconds = {every}",
        "sync.group.offsets.enabled = true",
        f"sync.group.offsets.interval.seconds = {every}",
        "emit.heartbeats.enabled = true",
        "emit.heartbeats.interval.seconds = 1",
        f"refresh.topics.interval.seconds = {spec.refresh_interval_s}",
        f"refresh.groups.interval.seconds = {spec.refresh_interval_s}",
        # an offset sync per record: translated group offsets are exact, not a few records early
        "offset.lag.max = 0",
        "offset.flush.interval.ms = 1000",
        "tasks.max = 1",
        f"replication.factor = {rf}",
        f"checkpoints.topic.replication.factor = {rf}",
        f"heartbeats.topic.replication.factor = {rf}",
        f"offset-syncs.topic.replication.factor = {rf}",
        f"offset.storage.replication.factor = {rf}",
        f"status.storage.replication.factor = {rf}",
        f"config.storage.replication.factor = {rf}",
        "plugin.discovery = service_load",
        "dedicated.mode.enable.internal.rest = true",
        f"listeners = http://127.0.0.1:{spec.rest_port}",
    ]
    if spec.exactly_once:
        lines.append(f"{b}.exactly.once.source.support = enabled")
    return "\n".join(lines) + "\n", {**a_env, **b_env}


# MM2's state topics that dr status and capture's mirror gate read in full: compacted with short
# segments, so compaction keeps them to about one record per key (MM2 would create them with
# week-long segments, and a reader polling every half second would read a week of updates)
STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
OFFSETS_PARTITIONS = 25  # Connect's default for its offsets topic


def create_state_topics(spec: MirrorSpec) -> None:
    """Create MM2's offsets and checkpoints topics in the target before MM2 does (idempotent)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({**spec.target.to_librdkafka(), "log_level": 3})
    wanted = [
        NewTopic(spec.offsets_topic, OFFSETS_PARTITIONS, spec.replication_factor, config=STATE_TOPIC_CONFIG),
        NewTopic(spec.checkpoints_topic, 1, spec.replication_factor, config=STATE_TOPIC_CONFIG),
    ]
    for topic, fut in admin.create_topics(wanted, request_timeout=30).items():
        try:
            fut.result(60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DrError(
                    f"cannot create MirrorMaker 2's topic {topic} in {spec.target.bootstrap_servers}: "
                    f"{exc.args[0].str()}",
                    hint="is the target region's Kafka up (cdcrouter stack up --region b)?",
                ) from exc


@dataclass
class MirrorMaker:
    """The MM2 process for one flow, tracked by PID under ``state_dir`` (the target region's stack
    dir: ``<state>/region-b``): ``<name>/mm2.properties``, ``logs/<name>.log``, ``run/<name>.pid``."""

    spec: MirrorSpec
    state_dir: Path
    name: str = "mirror"
    source_region: str = "a"
    target_region: str = "b"
    cache_dir: Path | None = None
    allow_fetch: bool = True
    java: str | None = None
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def record(self) -> ProcessRecord | None:
        rec = ProcessRecord.load(self.pid_file)
        return rec if rec and is_alive(rec) else None

    def running(self) -> bool:
        return self.record() is not None

    def command(self) -> list[str]:
        from cdcrouter.stack.service import find_java

        java = self.java or find_java(os.environ, 17)
        return [
            java,
            f"-Xmx{HEAP_MB}m",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:MaxMetaspaceSize=192m",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            str(mirror_jars(self.cache_dir, allow_fetch=self.allow_fetch) / "lib" / "*"),
            MAIN_CLASS,
            str(self.home / "mm2.properties"),
        ]

    def start(self, timeout_s: float = 180.0) -> ProcessRecord:
        """Start MM2 (a no-op if it runs) and wait until its source task runs."""
        rec = self.record()
        if rec is not None:
            return rec
        stale = ProcessRecord.load(self.pid_file)
        if stale is not None:
            kill_leftovers(stale)
        if not port_is_free(self.spec.rest_port):
            raise DrError(
                f"MirrorMaker 2 cannot start: port {self.spec.rest_port} (its internal REST) is in use",
                hint="stop what holds it, or give the mirror another rest_port",
            )
        self.home.mkdir(parents=True, exist_ok=True)
        create_state_topics(self.spec)
        text, env = render_properties(self.spec)
        (self.home / "mm2.properties").write_text(text)
        (self.home / SPEC_FILE).write_text(self.spec.to_json(self.source_region, self.target_region))
        (self.home / "log4j2.properties").write_text(LOG4J2)
        argv = self.command()
        rec = launch(
            argv,
            pid_file=self.pid_file,
            log_file=self.log_file,
            cwd=self.home,
            env={**os.environ, **env},
            version=versions.KAFKA,
            ports={"mirror-rest": self.spec.rest_port},
        )
        try:
            self._wait_running(rec, timeout_s)
        except DrError:
            self.stop()
            raise
        return rec

    def _wait_running(self, rec: ProcessRecord, timeout_s: float) -> None:
        from confluent_kafka import KafkaException

        from cdcrouter.dr.status import task_states

        deadline = time.monotonic() + timeout_s
        while True:
            if not is_alive(rec):
                raise DrError(
                    f"MirrorMaker 2 (pid {rec.pid}) exited during start-up; last lines of {self.log_file}:\n"
                    + "\n".join("    " + ln for ln in tail(self.log_file, 20)),
                    hint="fix the cause above (a wrong bootstrap address, a missing jar)",
                )
            try:
                states = task_states(self.spec)
            except KafkaException as exc:  # MM2 has just created its status topic: no leader yet
                if not _settling(exc):
                    raise
                states = {}
            if states.get("MirrorSourceConnector") == "RUNNING":
                return
            failed = {k: v for k, v in states.items() if v == "FAILED"}
            if failed or time.monotonic() > deadline:
                raise DrError(
                    f"MirrorMaker 2 (pid {rec.pid}) is not mirroring ({states or 'no task yet'}); "
                    f"last lines of {self.log_file}:\n"
                    + "\n".join("    " + ln for ln in tail(self.log_file, 20)),
                    hint="see the log; a slow machine may need a longer start-up",
                )
            time.sleep(1.0)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop MM2 by its recorded PID (SIGTERM, then SIGKILL). True if it was running."""
        rec = ProcessRecord.load(self.pid_file)
        if rec is None:
            return False
        was = stop(rec, timeout=timeout_s)
        kill_leftovers(rec)
        self.pid_file.unlink(missing_ok=True)
        return was


def _settling(exc: Exception) -> bool:
    """A topic created a moment ago answers these until its partitions have a leader."""
    from confluent_kafka import KafkaError

    err = exc.args[0]
    return bool(err.retriable()) or err.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    )


def pipeline_topics(raw_topic: str, filtered_topics: Iterable[str]) -> tuple[str, ...]:
    """What a region needs to take over a pipeline: the raw topic, capture's position topic and
    dead-letter topic, the router's dead-letter topic, and every filtered topic."""
    from cdcrouter.capture.pipeline import RawTopic
    from cdcrouter.naming import router_dlq_topic

    raw = RawTopic(name=raw_topic)
    own = [raw.name, raw.offsets_topic, raw.dlq_topic, router_dlq_topic(raw.name)]
    return tuple(dict.fromkeys([*own, *sorted(filtered_topics)]))


def load_mirror(
    name: str = "mirror",
    *,
    state_dir: str | Path | None = None,
    target_region: str = "b",
    config_file: str | Path | None = None,
) -> MirrorMaker:
    """The mirror ``name`` as last started (its saved ``mirror.json``), with each region's
    connection looked up again (:func:`cdcrouter.dr.regions.region_kafka`)."""
    from cdcrouter.config.connections import DEFAULT_STATE_DIR
    from cdcrouter.dr.regions import region_kafka
    from cdcrouter.stack.regions import region_state_dir

    state = Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR))
    home = region_state_dir(state, target_region)
    path = home / name / SPEC_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DrError(
            f"no mirror named {name!r} was started from {home} ({path} is missing or unreadable)",
            hint="start it first: cdcrouter dr mirror start --pipeline pipeline.yaml --filters filters.yaml",
        ) from exc
    source, target = doc.pop("source_region"), doc.pop("target_region")
    kw = {"config_file": config_file, "state_dir": state}
    spec = MirrorSpec(
        source=region_kafka(source, **kw),
        target=region_kafka(target, **kw),
        topics=tuple(doc.pop("topics")),
        groups=tuple(doc.pop("groups")),
        **doc,
    )
    return MirrorMaker(spec, home, name=name, source_region=source, target_region=target)
