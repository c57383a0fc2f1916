"""Debezium as its users run it, for ``cdcrouter bench capture``: the anchor we compare against.

The PostgreSQL connector runs on a Kafka Connect worker of its own (started and stopped here, so
its CPU, RSS and JVM are only Debezium's, and exactly-once source support can be on or off per
row: it is a worker setting), with the stack's worker settings (``worker_properties``). Records
are Debezium's own envelope, Avro through the registry (Confluent's AvroConverter on the registry's
ccompat API), written straight to a per-table topic.

Tuning follows Debezium's and Kafka's performance guidance (see ``TUNING`` and ``PRODUCER``):
bigger batches and queue than the defaults (2,048 / 8,192), a short poll interval (the default
500 ms is a sleep when the queue is empty, and lands in the latency), and producer batching with
lz4 compression. The JVM gets Kafka's own launcher defaults (``connect-distributed.sh``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cdcrouter.capture import debezium as capture_debezium
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter.config.connections import Connections
from cdcrouter.errors import CaptureError
from cdcrouter.stack.service import StackContext
from cdcrouter.stack.services.connect import connect_home, converter_dir, render_properties, worker_properties
from cdcrouter.stack.services.kafka import write_log4j

# Debezium's performance guidance: batches and a queue well above the defaults (2,048 / 8,192),
# so each poll hands Connect many records; the poll interval is how long an empty queue sleeps.
TUNING = {"max.batch.size": "20480", "max.queue.size": "81920", "poll.interval.ms": "5"}
# Kafka's producer guidance for throughput: big batches, a short linger, lz4 (applied worker-wide,
# as users do, through the worker's ``producer.*`` settings).
PRODUCER = {"batch.size": "524288", "linger.ms": "5", "compression.type": "lz4", "acks": "all"}
# Kafka's own launcher defaults for a Connect worker (connect-distributed.sh, kafka-run-class.sh)
JVM_OPTS = (
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
PASSWORD_ENV = "CDCROUTER_POSTGRES__PASSWORD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topic(pipeline: Pipeline, table: str = "car_entities") -> str:
    return f"{capture_debezium.topic_prefix(pipeline)}.{pipeline.schema}.{table}"


def connector_config(
    pipeline: Pipeline, conns: Connections, *, eos: bool, partitions: int, value_format: str = "avro"
) -> dict[str, str]:
    """The PostgreSQL connector, Debezium's defaults for the data, tuned for throughput.

    ``value_format`` "json": JSON without schemas instead of the worker's Avro (the anchor's fallback,
    and how the outside figures in issue #17 were measured)."""
    pg = conns.postgres
    config = {
        "connector.class": capture_debezium.CONNECTOR_CLASS,
        "database.hostname": pg.host,
        "database.port": str(pg.port),
        "database.user": pg.user,
        "database.password": f"${{env:{PASSWORD_ENV}}}",  # never in the worker's config topic
        "database.dbname": pg.dbname,
        "database.sslmode": pg.sslmode,
        "plugin.name": "pgoutput",
        "slot.name": capture_debezium.debezium_slot(pipeline),
        "publication.name": pipeline.replication.publication,  # the same one our capture reads
        "publication.autocreate.mode": "disabled",
        "topic.prefix": capture_debezium.topic_prefix(pipeline),
        "table.include.list": ",".join(f"{pipeline.schema}.{t}" for t in pipeline.captured_tables()),
        "snapshot.mode": "no_data",
        "tasks.max": "1",
        "topic.creation.default.partitions": str(partitions),  # as many as our raw topic
        "topic.creation.default.replication.factor": "1",
        **TUNING,
    }
    if eos:
        config.update({"exactly.once.support": "required", "transaction.boundary": "poll"})
    if value_format == "json":
        for side in ("key", "value"):
            config[f"{side}.converter"] = "org.apache.kafka.connect.json.JsonConverter"
            config[f"{side}.converter.schemas.enable"] = "false"
    return config


@dataclass
class Worker:
    """One Kafka Connect worker (distributed mode, its own group and internal topics)."""

    conns: Connections
    eos: bool
    workdir: Path
    tag: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def group(self) -> str:
        return f"bench-connect-{self.tag}-{'eos' if self.eos else 'alo'}"

    def internal_topics(self) -> tuple[str, str, str]:
        return (f"{self.group}-configs", f"{self.group}-offsets", f"{self.group}-status")

    def _plugin_path(self, ctx: StackContext) -> Path:
        path = self.workdir / "plugins"
        path.mkdir(parents=True, exist_ok=True)
        for name, target in (
            ("debezium-connector-postgres", connect_home(ctx) / "plugins" / "debezium-connector-postgres"),
            ("confluent-avro-converter", converter_dir(ctx)),
        ):
            if not (path / name).exists():
                (path / name).symlink_to(target, target_is_directory=True)
        return path

    def start(self, timeout_s: float = 180.0) -> None:
        ctx = StackContext(state_dir=self.workdir)  # fetches the jars only if not cached yet
        props = {
            **worker_properties(
                bootstrap=self.conns.kafka.bootstrap_servers,
                group=self.group,
                storage_topics=self.internal_topics(),
                registry_url=self.conns.registry.url,
                port=self.port,
                plugin_path=self._plugin_path(ctx),
                exactly_once=self.eos,
            ),
            "config.providers": "env",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            **{f"producer.{k}": v for k, v in PRODUCER.items()},
        }
        home = self.workdir / ("eos" if self.eos else "alo")
        home.mkdir(parents=True, exist_ok=True)
        (home / "worker.properties").write_text(render_properties(props))
        write_log4j(home / "log4j2.properties")
        env = dict(os.environ)
        pw = self.conns.postgres.password
        env[PASSWORD_ENV] = pw.get_secret_value() if pw else ""
        cmd = [
            ctx.java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            str(connect_home(ctx) / "lib" / "*"),
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(home / "worker.properties"),
        ]
        self.log = home / "connect.log"
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaptureError(
                    f"the Connect worker exited ({self.proc.returncode})", hint=f"see {self.log}"
                )
            try:
                if httpx.get(self.url + "/connector-plugins", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise CaptureError(f"the Connect worker did not answer in {timeout_s:.0f}s", hint=f"see {self.log}")

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, self.url + path, timeout=60, **kw)
        if resp.status_code >= 300 and not (method == "DELETE" and resp.status_code == 404):
            raise CaptureError(
                f"Connect {method} {path}: HTTP {resp.status_code} {resp.text[:500]}", hint=f"see {self.log}"
            )
        return resp.json() if resp.content else None

    def wait_state(self, name: str, state: str, timeout_s: float = 120.0) -> None:
        """Wait until the connector and its task report ``state`` (FAILED raises with the trace)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            resp = httpx.get(f"{self.url}/connectors/{name}/status", timeout=10)
            last = resp.json() if resp.status_code == 200 else None
            if last:
                tasks = last.get("tasks") or []
                if any(t.get("state") == "FAILED" for t in tasks):
                    raise CaptureError(
                        f"connector {name} failed: {tasks[0].get('trace', '')[:800]}", hint=f"see {self.log}"
                    )
                if last["connector"]["state"] == state and (
                    state == "STOPPED" or (tasks and all(t["state"] == state for t in tasks))
                ):
                    return
            time.sleep(0.1)
        raise CaptureError(
            f"connector {name} not {state} after {timeout_s:.0f}s: {last}", hint=f"see {self.log}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir / ("eos" if self.eos else "alo"), ignore_errors=True)
