"""Unit: every transactional call is bounded even when librdkafka ignores its own timeout."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from cdcrouter.route.lanes import StuckCall as _StuckCall
from cdcrouter.route.lanes import bounded as _bounded


def test_a_call_that_never_returns_is_cut_off() -> None:
    release = threading.Event()
    seen: list[float] = []
    started = time.monotonic()
    with pytest.raises(_StuckCall, match="sending offsets"):
        _bounded(lambda t: (seen.append(t), release.wait(60)), 0.2, "sending offsets")
    assert seen == [0.2]  # librdkafka gets the limit as its own timeout too
    assert time.monotonic() - started < 10
    release.set()


def test_results_and_errors_pass_through() -> None:
    _bounded(lambda t: None, 1.0, "committing")
    err = KafkaError(KafkaError._TRANSPORT, "Broker transport failure")
    with pytest.raises(KafkaException) as info:
        _bounded(lambda t: (_ for _ in ()).throw(KafkaException(err)), 1.0, "committing")
    assert info.value.args[0].code() == KafkaError._TRANSPORT
