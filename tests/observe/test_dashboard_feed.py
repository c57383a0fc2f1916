"""The dashboard's status feed on its own: it collects only while pages ask (an unwatched dashboard
puts no load on Kafka and PostgreSQL), and a collection that fails is served as the error document
``status --watch`` prints, after which collecting goes on. The collection here is a counter: what
is tested is the feed's schedule, not the status (tests/observe/test_dashboard_*.py do that live)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from cdcrouter.errors import CdcrouterError
from cdcrouter.observe.dashboard import StatusFeed


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_collects_while_asked_and_rests_when_nobody_asks() -> None:
    calls: list[float] = []

    def collect() -> dict[str, Any]:
        calls.append(time.monotonic())
        return {"n": len(calls)}

    feed = StatusFeed(collect, pause_s=0.05, idle_after_s=0.5)
    feed.start()
    try:
        first = feed.latest(wait_s=10)
        assert first is not None and first["n"] >= 1
        _wait(lambda: feed.latest() is not None and len(calls) >= 3)  # asked: it keeps collecting
        time.sleep(1.5)  # nobody asks past idle_after_s: collecting stops
        resting = len(calls)
        time.sleep(1.0)
        assert len(calls) == resting, "collected while nobody asked"
        feed.latest(wait_s=10)  # a page asks again: collecting resumes
        _wait(lambda: len(calls) > resting + 1)
    finally:
        feed.stop()


def test_a_failed_collection_is_served_as_the_error_document_and_the_next_one_tries_again() -> None:
    steps: queue.Queue[Any] = queue.Queue()  # each collection takes the next outcome the test gives

    ending = threading.Event()

    def collect() -> dict[str, Any]:
        while not ending.is_set():
            try:
                out = steps.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(out, BaseException):
                raise out
            return dict(out)
        return {}

    def served(cond: Any) -> dict[str, Any]:
        _wait(lambda: cond(feed.latest(wait_s=10) or {}))
        return feed.latest(wait_s=10) or {}

    feed = StatusFeed(collect, pause_s=0.01)
    feed.start()
    try:
        steps.put(CdcrouterError("cannot connect to PostgreSQL", hint="is it running?"))
        down = served(lambda d: "error" in d)
        steps.put(RuntimeError("a bug"))
        bug = served(lambda d: "RuntimeError" in d.get("error", {}).get("message", ""))
        steps.put({"healthy": True})
        back = served(lambda d: "error" not in d)
    finally:
        ending.set()  # a collection waiting for its outcome ends, so the feed can stop
        feed.stop()
    assert down["error"] == {"message": "cannot connect to PostgreSQL", "hint": "is it running?"}
    assert down["healthy"] is False and bug["healthy"] is False
    assert bug["error"]["message"] == "status collection failed: RuntimeError: a bug"
    assert back == {"healthy": True}
