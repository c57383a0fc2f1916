"""Unit: the router's commit order across lanes, made deterministic.

The guarantee under test: once a lane's commit fails, no later lane commits (its offsets would
pass records whose output is not committed); every open transaction is aborted instead. On real
Kafka the interleaving cannot be forced, so the lanes here are stand-ins that record what the
router asks of them. Everything else is the real Router; nothing here talks to Kafka.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from cdcrouter.config import Connections
from cdcrouter.route.engine import Router, RouterOptions, _Table
from cdcrouter.route.events import bench_filters_yaml
from cdcrouter.route.filterset import compile_filters_text
from cdcrouter.route.lanes import TxnWork


class _Lane:
    """Records commit and abort calls; ``fail`` makes its commit fail abortably."""

    def __init__(self, name: str, calls: list[str], fail: bool = False, gate: threading.Event | None = None):
        self.transactional_id = name
        self.calls = calls
        self.fail = fail
        self.gate = gate
        self.in_txn = True
        self.started = self.handed_off = self.commit_began = 0.0
        self.work = TxnWork(offsets={("raw", 0): 10}, consumed=10, matched=Counter({"f": 3}))
        self.abort_fails = False
        self.undelivered = 0

    def deliver(self, timeout_s: float) -> int:
        self.calls.append(f"deliver {self.transactional_id}")
        if self.undelivered < 0:  # what flush() raises on a fenced producer
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))
        return self.undelivered

    def commit(self, positions: list[Any], group_metadata: Any) -> float:
        if self.gate is not None:
            assert self.gate.wait(10)
        self.calls.append(f"commit {self.transactional_id}")
        if self.fail:
            err = KafkaError(KafkaError._TRANSPORT, "broker went away", txn_requires_abort=True)
            raise KafkaException(err)
        self.in_txn = False
        return 0.001

    def serve_reports(self) -> None:
        pass

    def abort(self) -> None:
        self.calls.append(f"abort {self.transactional_id}")
        if self.abort_fails:  # what Lane.abort raises once its retries ran out
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation"))
        self.in_txn = False

    def replace(self) -> None:
        self.calls.append(f"replace {self.transactional_id}")
        self.in_txn = False


class _Consumer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def consumer_group_metadata(self) -> object:
        return object()

    def assignment(self) -> list[Any]:
        self.calls.append("rewind")
        return []  # nothing to seek in a unit test; the rewind itself is what is checked


def _router(tmp_path: Path, lanes: list[_Lane], calls: list[str]) -> Router:
    router = Router(tmp_path / "filters.yaml", Connections(), RouterOptions(lanes=len(lanes)))
    router._table = _Table(compile_filters_text(bench_filters_yaml("t-", 2)), {})
    router._lanes = lanes  # type: ignore[assignment]
    router._consumer = _Consumer(calls)  # type: ignore[assignment]
    router._committer = ThreadPoolExecutor(1)
    return router


def test_after_a_failed_commit_no_later_lane_commits(tmp_path: Path) -> None:
    calls: list[str] = []
    gate = threading.Event()
    first, second = _Lane("a", calls, fail=True, gate=gate), _Lane("b", calls)
    router = _router(tmp_path, [first, second], calls)
    router._hand_off(first)  # queued, held at the gate
    threading.Timer(0.2, gate.set).start()
    router._hand_off(second)  # queued behind it; the router then waits for the next lane (a)
    assert calls == ["deliver a", "deliver b", "commit a", "abort a", "abort b", "rewind"]
    assert router.metrics.consumed == 0 and router._transactions == 0
    assert not router._inflight and not router._poisoned  # ready for the redo
    assert first.work.consumed == second.work.consumed == 0


def test_commits_in_the_order_handed_over(tmp_path: Path) -> None:
    calls: list[str] = []
    gate = threading.Event()
    first, second = _Lane("a", calls, gate=gate), _Lane("b", calls)
    router = _router(tmp_path, [first, second], calls)
    router._hand_off(first)
    threading.Timer(0.2, gate.set).start()
    router._hand_off(second)
    assert router._drain()
    assert calls == ["deliver a", "deliver b", "commit a", "commit b"]
    assert router.metrics.consumed == 20 and router._transactions == 2
    assert router.metrics.matched == Counter({"f": 6})


def test_a_lane_that_cannot_abort_is_replaced_and_the_router_goes_on(tmp_path: Path) -> None:
    """After a broker restart one producer's abort timed out for the whole retry window; the router
    then stopped. Now the lane gets a new producer, whose init_transactions aborts the old
    transaction on the broker, and the work is redone from the committed offsets."""
    calls: list[str] = []
    first, second = _Lane("a", calls, fail=True), _Lane("b", calls)
    second.abort_fails = True
    router = _router(tmp_path, [first, second], calls)
    router.opts.refence_backoff_s = 0.0
    router._hand_off(first)
    assert router._settle(wait=True) is False  # the commit failed: everything aborted, rewound
    assert calls == ["deliver a", "commit a", "abort a", "abort b", "replace b", "rewind"]
    assert not router._inflight and not router._poisoned
    assert second.work.consumed == 0


@pytest.mark.parametrize("undelivered", [3, -1])
def test_a_lane_is_delivered_before_the_next_routes_and_waited_out_when_it_cannot_be(
    tmp_path: Path, undelivered: int
) -> None:
    """Per-key order across the two producers: a lane's records are acknowledged before the next
    lane gets any. When they cannot be (broker trouble, or the producer was fenced: -1), its
    commit is waited for first."""
    calls: list[str] = []
    first, second = _Lane("a", calls), _Lane("b", calls)
    first.undelivered = undelivered
    router = _router(tmp_path, [first, second], calls)
    router._hand_off(first)
    assert calls == ["deliver a", "commit a"]  # commit a ended before the hand-off returned
    assert not router._inflight and router._fill is second
