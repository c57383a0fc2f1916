"""A library exception inside one of the demo's threads reaches the user as a CdcrouterError
(message and hint, exit 1), never as a traceback."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from cdcrouter.demo.runner import _Thread
from cdcrouter.errors import CdcrouterError


def _fail() -> None:
    raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "Not leader for partition"))


def test_library_error_in_a_thread_becomes_a_cdcrouter_error() -> None:
    t = _Thread("probe", _fail)
    t.start()
    t.join(5)
    with pytest.raises(CdcrouterError, match="probe thread failed: KafkaException") as info:
        t.check()
    assert info.value.hint and "stack status" in info.value.hint
    assert isinstance(info.value.__cause__, KafkaException)


def test_cdcrouter_errors_pass_through_unchanged() -> None:
    original = CdcrouterError("topic missing", hint="cdcrouter topics apply")

    def fail() -> None:
        raise original

    t = _Thread("router", fail)
    t.start()
    t.join(5)
    with pytest.raises(CdcrouterError) as info:
        t.check()
    assert info.value is original
