"""Warm a just-started broker before ``stack up`` calls it ready.

A fresh Kafka JVM is slow at what the demo and the engines do first: its first transaction
creates ``__transaction_state``, its first group join creates ``__consumer_offsets`` (seconds
each on 2 cores), and its transaction, produce and read_committed fetch paths run interpreted
until the JIT compilers have seen them, then compete for the CPU while compiling them (measured
on a cold demo: commits of 100-300 ms in its first seconds against 10 ms later, and the broker's
compiler threads using 3-4 s of CPU in each of the first demo runs, p99 falling run by run from
732 to 111 ms as they went quiet). ``warm_broker`` pays for that inside ``stack up``: both
internal topics, then a transactional stream shaped like fused capture's (many partitions per
transaction, a read_committed group consumer whose offsets commit in the transaction) until the
broker's compiler threads go quiet (bounded). Its topic and group are deleted afterwards; only the
two internal topics stay, as any first use leaves them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdcrouter.config.durations import env_seconds
from cdcrouter.errors import StackError

log = logging.getLogger("cdcrouter.stack")

WARMUP_TOPIC = "cdcrouter-stack-warmup"
WARMUP_GROUP = "cdcrouter-stack-warmup"
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
PARTITIONS = 12  # about what one fused transaction spans (raw + filtered + position partitions)
MIN_TRANSACTIONS = 300  # about a demo run's commits
LIMIT_S = 20.0  # the stream stops here even if the compilers are still busy (a loaded machine)
RECORDS_PER_TXN = 24
RECORD = b"w" * 400  # about one business event
_COORDINATOR_ERRORS = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
)
ENV_SWITCH = "CDCROUTER_STACK_WARMUP"  # "0" skips the traffic (the internal topics are still made)
LIMIT_ENV = "CDCROUTER_STACK_WARMUP_LIMIT_S"  # seconds: caps the stream and the JIT wait (tests)
JIT_WAIT_S = 15.0  # the wait for the compile queue to drain after the stream, at most


@dataclass
class WarmupReport:
    """What the warm-up did, for ``stack up``'s report line."""

    transactions: int = 0
    first_commit_ms: float = 0.0
    last_commits_ms: float = 0.0  # median of the last 20 commits
    traffic_s: float = 0.0
    jit_wait_s: float = 0.0

    def summary(self) -> str:
        if not self.transactions:
            return "internal topics created"
        return (
            f"warmed up: {self.transactions} transactions in {self.traffic_s:.1f} s (commit "
            f"{self.first_commit_ms:.0f} ms first, {self.last_commits_ms:.0f} ms at the end), "
            f"compilers quiet after {self.jit_wait_s:.1f} s more"
        )


def warm_broker(bootstrap: str, pid: int | None, *, traffic: bool | None = None) -> WarmupReport:
    """Create the internal topics and, unless ``traffic`` is False (or ``CDCROUTER_STACK_WARMUP=0``),
    run the warm-up stream and wait for the JIT of the broker process ``pid`` to settle."""
    if traffic is None:
        traffic = os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no")
    base = {"bootstrap.servers": bootstrap, "log_level": 0}
    admin = AdminClient(base)
    report = WarmupReport()
    topic = WARMUP_TOPIC if traffic else None
    if topic:
        for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)], operation_timeout=30).values():
            with contextlib.suppress(Exception):  # exists already (an interrupted earlier warm-up)
                fut.result(60)
    txn_id = f"{WARMUP_GROUP}-{uuid.uuid4().hex[:8]}"
    producer = Producer({**base, "transactional.id": txn_id, "linger.ms": 5})
    consumer = Consumer(
        {
            **base,
            "group.id": WARMUP_GROUP,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        producer.init_transactions(120)  # creates __transaction_state
        _committed(consumer, topic or "__consumer_offsets")  # creates __consumer_offsets
        if topic:
            _stream(producer, consumer, topic, pid, report)
    finally:
        consumer.close()
    if topic:
        _cleanup(admin, topic)
        report.jit_wait_s = _wait_jit_quiet(pid, min(JIT_WAIT_S, _limit_s()))
    return report


def _committed(consumer: Consumer, topic: str, limit_s: float = 120.0) -> None:
    """The group's committed offset: its coordinator lookup creates ``__consumer_offsets``. While
    the topic's partitions are being created and loaded the broker answers with retriable errors."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            consumer.committed([TopicPartition(topic, 0)], timeout=30)
            return
        except KafkaException as exc:
            err = exc.args[0]
            if time.monotonic() > deadline or not (err.retriable() or err.code() in _COORDINATOR_ERRORS):
                raise
            time.sleep(0.2)


def _stream(
    producer: Producer, consumer: Consumer, topic: str, pid: int | None, report: WarmupReport
) -> None:
    """Transactions over every partition, each also committing the consumer's position (the
    router's path), read back read_committed as they commit: at least ``MIN_TRANSACTIONS``, then
    until the broker's compiler threads went quiet (all this traffic touches is compiled), at most
    ``LIMIT_S`` (or ``CDCROUTER_STACK_WARMUP_LIMIT_S``)."""
    consumer.subscribe([topic])
    started = time.monotonic()
    took: list[float] = []
    jit = _JitWatch(pid)
    limit_s = _limit_s()
    while time.monotonic() - started < limit_s:
        began = time.monotonic()
        producer.begin_transaction()
        for j in range(RECORDS_PER_TXN):
            producer.produce(topic, RECORD, partition=j % PARTITIONS)
        consumer.consume(1000, 0.0)
        if took and consumer.assignment():
            with contextlib.suppress(KafkaException):  # no position yet (assignment still starting)
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
                )
        producer.commit_transaction(60)
        took.append((time.monotonic() - began) * 1000)
        if jit.quiet() and len(took) >= MIN_TRANSACTIONS:
            break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and consumer.consume(1000, 0.2):
        pass
    report.transactions = len(took)
    report.traffic_s = time.monotonic() - started
    report.first_commit_ms = took[0]
    report.last_commits_ms = sorted(took[-20:])[len(took[-20:]) // 2]


class _JitWatch:
    """Samples the compiler threads' CPU once a second: ``quiet`` once two seconds in a row used
    under 10% of a core (always True when the broker's threads cannot be read)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.last = compiler_cpu_s(pid) if pid else None
        self.at = time.monotonic()
        self.calm = 0

    def quiet(self) -> bool:
        if self.last is None or self.pid is None:
            return True
        now = time.monotonic()
        if now - self.at < 1.0:
            return self.calm >= 2
        used = compiler_cpu_s(self.pid)
        if used is None:
            return True
        self.calm = self.calm + 1 if used - self.last < 0.1 * (now - self.at) else 0
        self.last, self.at = used, now
        return self.calm >= 2


def _cleanup(admin: AdminClient, topic: str) -> None:
    """The warm-up leaves neither its topic nor its group behind."""
    try:
        for fut in admin.delete_consumer_groups([WARMUP_GROUP], request_timeout=30).values():
            fut.result(30)
        for fut in admin.delete_topics([topic], operation_timeout=30).values():
            fut.result(60)
    except Exception as exc:  # a leftover is harmless: the stack still works
        log.warning("could not remove the broker warm-up's topic or group: %s", exc)


def compiler_threads(pid: int) -> list[tuple[str, float]] | None:
    """``(name, CPU seconds used)`` of each JIT compiler thread of JVM ``pid``, e.g. ``("C2
    CompilerThre", 3.1)`` (None: not readable)."""
    try:
        tids = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for tid in tids:
        try:
            name = (tid / "comm").read_text().strip()
            if "CompilerThre" not in name:
                continue
            fields = (tid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((name, (int(fields[11]) + int(fields[12])) / tick))
    return out or None


def compiler_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by the JIT compiler threads of JVM ``pid`` (None: not readable)."""
    threads = compiler_threads(pid)
    return sum(cpu for _, cpu in threads) if threads else None


def _limit_s() -> float:
    return env_seconds(LIMIT_ENV, LIMIT_S, StackError)


def _wait_jit_quiet(pid: int | None, limit_s: float = JIT_WAIT_S, window_s: float = 0.5) -> float:
    """Wait until the compiler threads used under 10% of a core over one window (the compile
    queue the warm-up filled has drained), at most ``limit_s``; return the seconds waited."""
    if pid is None:
        return 0.0
    started = time.monotonic()
    before = compiler_cpu_s(pid)
    while before is not None and time.monotonic() - started < limit_s:
        time.sleep(window_s)
        now = compiler_cpu_s(pid)
        if now is None or now - before < 0.1 * window_s:
            break
        before = now
    return time.monotonic() - started
