"""A private pipeline per test for ``cdcrouter status``: the sample tables in their own schema,
capture and the router in-process (threads), and a writer of row changes."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from ruamel.yaml import YAML

from cdcrouter.capture import CaptureEngine, apply_domain, load_pipeline
from cdcrouter.capture.domain import SAMPLE_OUTBOX, SAMPLE_TABLES
from cdcrouter.cli.main import main
from cdcrouter.config import Connections
from cdcrouter.consumer import _kafka
from cdcrouter.topics import delete_topics

FILTERS = """\
filters:
  - id: cars
    consumerId: fleet
    outputTopic: {p}-cars
    enabled: true
    conditions:
      - field: eventBody.entities[0].entityType
        operator: equals
        value: Car
  - id: car-updates
    consumerId: audit
    outputTopic: {p}-car-updates
    enabled: true
    conditions:
      - field: eventHeader.eventName
        operator: equals
        value: CarUpdated
"""


@dataclass
class Engine:
    name: str
    thread: threading.Thread
    stop: threading.Event
    errors: list[BaseException]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), f"{self.name} did not stop within 60 s"
        if self.errors:
            raise self.errors[0]


@dataclass
class StatusEnv:
    conns: Connections
    name: str
    schema: str
    dir: Path
    engines: dict[str, Engine] = field(default_factory=dict)
    cars: int = 0

    @property
    def pipeline_file(self) -> Path:
        return self.dir / "pipeline.yaml"

    @property
    def filters_file(self) -> Path:
        return self.dir / "filters.yaml"

    @property
    def raw(self) -> str:
        return f"raw-{self.name}"

    @property
    def group(self) -> str:
        return f"router-{self.name}"

    @property
    def slot(self) -> str:
        return f"s_{self.name}".replace("-", "_")[:63]

    @property
    def topics(self) -> list[str]:
        return [f"{self.name}-car-updates", f"{self.name}-cars"]

    def _start(self, name: str, run: Callable[[threading.Event], Any], ready: Callable[[], bool]) -> None:
        stop, errors = threading.Event(), []

        def target() -> None:
            try:
                run(stop)
            except BaseException as exc:  # surfaced by halt() or the readiness wait
                errors.append(exc)

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.engines[name] = Engine(name, thread, stop, errors)
        deadline = time.monotonic() + 60
        while not ready():
            assert not errors, errors
            assert time.monotonic() < deadline, f"{name} did not start within 60 s"
            time.sleep(0.05)

    def start_capture(self, until_snapshot_done: bool = True) -> None:
        """Capture in a thread; returns once it streams (and, unless told, no snapshot is pending)."""
        engine = CaptureEngine(load_pipeline(self.pipeline_file), self.conns, progress=lambda _m: None)
        started = engine.ready if until_snapshot_done else engine.streaming
        self._start("capture", lambda stop: engine.run(stop), started.is_set)

    def start_router(self, metrics_port: int | None = None) -> None:
        from cdcrouter.route.engine import Router, RouterOptions

        opts = RouterOptions(
            raw_topic=self.raw,
            group_id=self.group,
            instance_id=self.name,
            reload=False,
            metrics_port=metrics_port,
        )
        router = Router(self.filters_file, self.conns, opts)
        self._start("router", lambda stop: router.run(stop), lambda: self.members(self.group) > 0)

    def halt(self, name: str) -> None:
        self.engines.pop(name).halt()

    def members(self, group: str) -> int:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.conns.kafka.to_librdkafka())
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)

    def insert_cars(self, n: int) -> None:
        """``n`` CarCreated events and ``n`` CarUpdated events, one transaction each."""
        with psycopg.connect(self.conns.postgres.conninfo(), autocommit=True) as conn:
            for _ in range(n):
                self.cars += 1
                car = f"C{self.cars}"
                conn.execute(
                    f'INSERT INTO "{self.schema}".car_entities (id, vin, make, model) VALUES (%s, %s, %s, %s)',  # noqa: E501
                    (car, f"V{self.cars}", "Volvo", "XC40"),
                )
                conn.execute(
                    f'UPDATE "{self.schema}".car_entities SET color = %s WHERE id = %s', ("red", car)
                )

    @contextlib.contextmanager
    def flowing(self, every_s: float = 0.1) -> Iterator[None]:
        """Changes keep arriving (a car and its update every ``every_s``) while the block runs."""
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                self.insert_cars(1)
                stop.wait(every_s)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)

    def count(self, topic: str) -> int:
        """Committed records in ``topic`` (read_committed, read to its end): an oracle for the view."""
        c = Consumer(_kafka.consumer_conf(self.conns, f"{self.name}-oracle"))
        try:
            parts = _kafka.partitions_of(self.conns, topic)
            return sum(1 for _ in _kafka.read_range(c, topic, _kafka.stable_bounds(c, topic, parts)))
        finally:
            c.close()

    def last_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset of the last committed record (read, not computed)."""
        c = Consumer(_kafka.consumer_conf(self.conns, f"{self.name}-oracle"))
        try:
            parts = _kafka.partitions_of(self.conns, topic)
            last: dict[int, int] = {}
            for m in _kafka.read_range(c, topic, _kafka.stable_bounds(c, topic, parts)):
                last[m.partition()] = m.offset()
            return last
        finally:
            c.close()

    def wait_count(self, topic: str, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.count(topic)) < n:
            assert time.monotonic() < deadline, f"{topic}: {got} of {n} records after {timeout} s"
            time.sleep(0.2)

    def wait_read(self, read: list[int], n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while read[0] < n:
            assert time.monotonic() < deadline, f"the consumer read {read[0]} of {n} records"
            time.sleep(0.1)

    @contextlib.contextmanager
    def consuming(self, group: str, topic: str, commit: bool = True) -> Iterator[list[int]]:
        """A consumer application in group ``group`` on ``topic`` while the block runs: it reads and
        (unless told) commits its position every 0.2 s. Yields the running count of records read."""
        stop, got = threading.Event(), [0]
        c = Consumer(_kafka.consumer_conf(self.conns, group))
        c.subscribe([topic])

        def run() -> None:
            while not stop.is_set():
                got[0] += sum(1 for m in c.consume(500, 0.2) if m.error() is None)
                if commit and c.assignment():
                    with contextlib.suppress(Exception):  # nothing consumed yet: nothing to commit
                        c.commit(offsets=c.position(c.assignment()), asynchronous=False)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield got
        finally:
            stop.set()
            thread.join(30)
            c.close()

    def status(self, *args: str, capture: bool = True, interval: float = 1.5) -> tuple[int, str]:
        """``cdcrouter status`` in-process on this pipeline: (exit code, stdout). Without
        ``capture``, no pipeline file: the routing part only, on ``--raw-topic``."""
        out = io.StringIO()
        source = ["--pipeline", str(self.pipeline_file)] if capture else ["--raw-topic", self.raw]
        argv = [
            "status", *source, "--filters", str(self.filters_file),
            "--group", self.group, "--interval", str(interval), *args,
        ]  # fmt: skip
        with redirect_stdout(out):
            code = main(argv)
        return code, out.getvalue()

    def status_json(
        self, *args: str, capture: bool = True, interval: float = 1.5
    ) -> tuple[int, dict[str, Any]]:
        code, text = self.status("--format", "json", *args, capture=capture, interval=interval)
        return code, json.loads(text)


def setup_env(conns: Connections, name: str, tmp_path: Path) -> StatusEnv:
    from cdcrouter.schemas.registry import RegistryClient, apply_schemas, desired_subjects, plan_schemas
    from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

    env = StatusEnv(conns, name, name.replace("-", "_"), tmp_path)
    apply_domain(conns.postgres.conninfo(), env.schema)
    doc = {
        "schema": env.schema,
        "raw_topic": {"name": env.raw, "partitions": 2},
        "replication": {"slot": env.slot, "publication": f"p_{name}".replace("-", "_")[:63]},
        "batching": {"max_ms": 20},
        "tables": json.loads(json.dumps(SAMPLE_TABLES)),
        "outbox": dict(SAMPLE_OUTBOX),
    }
    with env.pipeline_file.open("w") as fh:
        YAML(typ="safe").dump(doc, fh)
    env.filters_file.write_text(FILTERS.format(p=name))
    specs = topics_for(env.filters_file, env.pipeline_file, TopicDefaults(partitions=2))
    admin = admin_client(conns.kafka.to_librdkafka())
    apply_topics(admin, plan_topics(admin, specs))
    with RegistryClient(conns.registry.to_client_conf()) as reg:
        apply_schemas(reg, plan_schemas(reg, desired_subjects(env.raw, env.topics)))
    return env


def teardown_env(env: StatusEnv) -> None:

    from cdcrouter.capture import source

    for name in list(env.engines):
        with contextlib.suppress(BaseException):
            env.halt(name)
    pipe = load_pipeline(env.pipeline_file)
    conn = source.connect_sql(env.conns.postgres)
    try:
        source.drop_slot(conn, pipe.replication.slot)
        source.drop_publication(conn, pipe.replication.publication)
        conn.execute(f'DROP SCHEMA IF EXISTS "{env.schema}" CASCADE')
    finally:
        conn.close()
    raw = pipe.raw_topic
    topics = [raw.name, raw.offsets_topic, raw.dlq_topic, f"{raw.name}.router.dlq", *env.topics]
    topics += [f"{env.name}-cars.fleet.dlq", f"{env.name}-car-updates.audit.dlq"]
    delete_topics(env.conns, topics)


def free_port() -> int:
    """A port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def committed(conns: Connections, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    c = Consumer(_kafka.consumer_conf(conns, group))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()
