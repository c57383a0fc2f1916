"""At-least-once delivery made effectively-once, groups and rebalances, on the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from cdcrouter.consumer import ConsumerApp, PostgresStore
from cdcrouter.consumer._app import KILL_BEFORE_COMMIT_ENV

from .conftest import event, rows

pytestmark = pytest.mark.integration
CRASHER = Path(__file__).with_name("crash_consumer.py")


def test_crash_after_processing_before_commit_is_redelivered_and_deduplicated(
    conns, topic, produce, effects
) -> None:
    src = topic(partitions=1)
    uuids = produce(src, [event("LoanCreated", f"L-{i}") for i in range(8)])
    group = f"{src}-g"
    args = [sys.executable, str(CRASHER), src, group, effects]
    env = {**os.environ, KILL_BEFORE_COMMIT_ENV: "3"}
    crashed = subprocess.run([*args, "8"], env=env, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL, after the handlers ran
    done_before = rows(conns, effects)
    assert len(done_before) >= 3

    again = subprocess.run([*args, "8"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    stats = json.loads(again.stdout.strip().splitlines()[-1])
    assert stats["duplicates"] == len(done_before)  # redelivered, recognised, skipped
    got = rows(conns, effects)
    assert sorted(got) == sorted(uuids)  # every event's effect exactly once


ERRORS: list[BaseException] = []


@pytest.fixture(autouse=True)
def _no_thread_errors():
    ERRORS.clear()
    yield
    assert not ERRORS, f"a consumer thread failed: {ERRORS[0]!r}"


def _run_in_thread(app: ConsumerApp, **kw) -> threading.Thread:
    def target() -> None:
        try:
            app.run(**kw)
        except BaseException as exc:  # reported by the test, not lost in a thread
            ERRORS.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def _wait(cond, timeout: float = 120.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert not ERRORS, f"a consumer thread failed: {ERRORS[0]!r}"
        assert time.monotonic() < end, f"timed out after {timeout}s waiting for {what or cond}"
        time.sleep(0.1)


def test_two_consumers_in_one_group_split_the_partitions(conns, topic, produce) -> None:
    src = topic(partitions=4)
    group = f"{src}-g"
    seen: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}
    apps = {}
    for who in ("a", "b"):
        app = ConsumerApp("splitter", conns, group=group, batch_timeout=0.2)
        app.on(src)(lambda ev, ctx, who=who: seen[who].append((ctx.origin.partition, ev.uuid)))
        apps[who] = app
    threads = [_run_in_thread(app, timeout=240) for app in apps.values()]
    _wait(
        lambda: len(apps["a"].assignment) == 2 and len(apps["b"].assignment) == 2,
        what=f"2+2 partitions (now {apps['a'].assignment} / {apps['b'].assignment})",
    )
    uuids = produce(src, [event("LoanCreated", f"L-{i}") for i in range(40)])
    _wait(lambda: len(seen["a"]) + len(seen["b"]) >= 40, what="40 events")
    for app in apps.values():
        app.stop()
    for t in threads:
        t.join(30)
    parts_a, parts_b = ({p for p, _ in seen[w]} for w in ("a", "b"))
    assert parts_a and parts_b and not parts_a & parts_b, (parts_a, parts_b)
    assert parts_a | parts_b == {0, 1, 2, 3}
    assert sorted(u for w in seen for _, u in seen[w]) == sorted(uuids)


def test_a_rebalance_mid_stream_loses_nothing(conns, topic, produce, effects) -> None:
    src = topic(partitions=4)
    group = f"{src}-g"
    uuids = produce(src, [event("LoanCreated", f"L-{i}") for i in range(30)])
    stores = []

    def make() -> ConsumerApp:
        store = PostgresStore(conns.postgres.conninfo(), table=f"{effects}_seen")
        stores.append(store)
        app = ConsumerApp("rebalancer", conns, group=group, store=store, max_batch=5, batch_timeout=0.2)

        @app.on(src)
        def book(ev, ctx):
            time.sleep(0.05)  # slow enough that the stream is mid-way when members come and go
            ctx.conn.execute(f"INSERT INTO {effects} (event_uuid) VALUES (%s)", (ev.uuid,))

        return app

    a, b = make(), make()
    ta = _run_in_thread(a, timeout=240)
    _wait(lambda: a.stats.processed >= 10)
    tb = _run_in_thread(b, timeout=240)  # joins mid-stream: partitions move from a to b
    _wait(lambda: len(b.assignment) == 2)
    uuids += produce(src, [event("LoanCreated", f"M-{i}") for i in range(40)])
    _wait(lambda: a.stats.processed + b.stats.processed >= 45)
    a.stop()  # leaves mid-stream: b takes over a's partitions from a's committed offsets
    ta.join(30)
    _wait(lambda: len(rows(conns, effects)) >= 70, what="70 effects")
    b.stop()
    tb.join(30)
    for s in stores:
        s.close()
    got = rows(conns, effects)
    assert sorted(got) == sorted(uuids)  # nothing lost, nothing doubled
    assert a.stats.processed > 0 and b.stats.processed > 0
    assert not a.assignment and b.stats.processed + a.stats.processed + b.stats.duplicates >= 70


def test_the_postgres_store_reconnects_when_its_connection_dies(conns, topic, produce, effects) -> None:
    src = topic(partitions=1)
    first, second = produce(src, [event("LoanCreated", "L-1"), event("LoanCreated", "L-2")])
    store = PostgresStore(conns.postgres.conninfo(), table=f"{effects}_seen")
    app = ConsumerApp("reconnect", conns, group=f"{src}-g", store=store, retries=2, backoff=0.05, max_batch=1)

    @app.on(src)
    def book(ev, ctx):
        ctx.conn.execute(f"INSERT INTO {effects} (event_uuid) VALUES (%s)", (ev.uuid,))
        if (
            ev.uuid == first and ctx.attempt == 1
        ):  # the server drops the store's session (a failover, a restart...)
            pid = ctx.conn.info.backend_pid
            with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    stats = app.run(timeout=60, max_messages=2)
    store.close()
    assert stats.dead_lettered == 0 and stats.failed >= 1
    assert sorted(rows(conns, effects)) == sorted([first, second])


def test_the_postgres_store_prunes_old_uuids(conns, effects) -> None:
    store = PostgresStore(conns.postgres.conninfo(), table=f"{effects}_seen")
    try:
        assert store.run_once("a", "u1", lambda conn: None) and store.run_once("b", "u1", lambda conn: None)
        assert not store.run_once("a", "u1", lambda conn: None)
        assert store.prune(timedelta(hours=1)) == 0
        time.sleep(0.05)
        assert store.prune(timedelta(milliseconds=1), consumer="a") == 1
        assert (store.processed("a"), store.processed("b")) == (0, 1)
        assert store.run_once("a", "u1", lambda conn: None)  # forgotten: would run again
    finally:
        store.close()
