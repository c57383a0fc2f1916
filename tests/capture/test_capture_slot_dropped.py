"""A replication slot dropped while capture runs is reported as such, at once (issue #12, finding 7).

No reconnect can bring a dropped slot back, so capture says the slot is gone and how to start
again. The reconnect budget used to run from the start of the process: once capture had run
longer than it, the first lost connection (the walsender ended so the slot could be dropped) was
reported as "check that PostgreSQL is up", and a plain PostgreSQL hiccup stopped capture too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from capture_helpers import CaptureRun

from cdcrouter.capture import CaptureEngine
from cdcrouter.errors import CaptureError

pytestmark = pytest.mark.integration

BUDGET_S = 3.0  # the engine's reconnect budget in these tests; each runs longer than it first


class Running:
    """An engine on its own thread that keeps a row stream going (events in flight)."""

    def __init__(self, run: CaptureRun) -> None:
        self.run = run
        self.engine = CaptureEngine(
            run.pipeline, run.conns, progress=lambda _m: None, reconnect_timeout_s=BUDGET_S
        )
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.rows = 0
        self.thread = threading.Thread(target=self._capture, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)

    def _capture(self) -> None:
        try:
            self.engine.run(self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def _write(self) -> None:
        with psycopg.connect(self.run.conns.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(f"SET search_path TO {self.run.schema}")
            while not self.stop.is_set() and self.rows < 50_000:
                conn.execute(
                    "INSERT INTO car_entities (id, vin, make, model) VALUES (%s, 'V', 'M', 'X')",
                    (f"c{self.rows}",),
                )
                self.rows += 1
                time.sleep(0.005)


@pytest.fixture
def running(capture_run: CaptureRun) -> Iterator[Running]:
    r = Running(capture_run)
    r.thread.start()
    try:
        assert r.engine.ready.wait(60), "capture did not start"
        r.writer.start()
        time.sleep(BUDGET_S + 1.5)  # longer than the reconnect budget
        yield r
    finally:
        r.stop.set()
        r.thread.join(60)
        r.writer.join(10)


def _end_walsender(run: CaptureRun, slot: str, *, drop: bool, deadline_s: float = 30) -> None:
    """Terminate the walsender holding the slot; with ``drop``, drop the slot before capture
    takes it again (it reconnects within a second, so try until the drop wins)."""
    end = time.monotonic() + deadline_s
    with psycopg.connect(run.conns.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() < end:
            ended = conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (slot,),
            ).fetchall()
            if not drop:
                if ended:
                    return
                time.sleep(0.02)
                continue
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.02)
    raise AssertionError(f"could not {'drop' if drop else 'end the walsender of'} slot {slot}")


def test_slot_dropped_while_running_names_the_slot_at_once(running: Running) -> None:
    slot = running.run.pipeline.replication.slot
    _end_walsender(running.run, slot, drop=True)
    dropped_at = time.monotonic()
    running.thread.join(30)
    took = time.monotonic() - dropped_at
    assert running.errors, "capture kept running without its slot"
    err = running.errors[0]
    assert isinstance(err, CaptureError), repr(err)
    assert f"replication slot {slot}" in err.message, err.message
    assert "dropped" in err.message, err.message
    assert "--resnapshot" in (err.hint or ""), err.hint
    assert "PostgreSQL is up" not in (err.hint or "")
    assert took < 10, f"took {took:.1f} s to report the dropped slot"


def test_lost_connection_after_running_longer_than_the_budget_reconnects(running: Running) -> None:
    slot = running.run.pipeline.replication.slot
    before = running.engine.stats.events
    _end_walsender(running.run, slot, drop=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not running.errors:
        if running.engine.stats.reconnects and running.engine.stats.events > before + 50:
            break
        time.sleep(0.1)
    assert not running.errors, f"capture stopped: {running.errors[0]!r}"
    assert running.engine.stats.reconnects >= 1
    assert running.engine.stats.events > before + 50, "capture did not resume after reconnecting"
