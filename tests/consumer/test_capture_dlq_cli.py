"""Capture's dead-letter topic through `cdcrouter dlq` and `cdcrouter status`'s hint.

A capture letter describes a change too large for the raw topic (table, entity id, LSN) and holds
no record. `dlq list` showed its origin as `None[None]@None`, `status` told the user to run
`cdcrouter dlq replay <raw>.capture-dlq`, and that command answered "... is not a dead-letter
topic": no way forward was named. Now each says where the change is and how to send it again.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from cdcrouter.capture.kafka_limits import Oversized
from cdcrouter.cli.main import main
from cdcrouter.consumer._kafka import ensure_topic, producer_conf
from cdcrouter.observe.health import problems_of

pytestmark = pytest.mark.integration


def test_capture_letters_name_the_row_and_the_way_to_send_it_again(conns, topic, capsys) -> None:  # type: ignore[no-untyped-def]
    dlq = topic(partitions=1) + ".capture-dlq"
    ensure_topic(conns, dlq)
    letter = Oversized(b"10", 9_600_128, 8_388_096, 0x37F90840, "docs", "Message size too large")
    producer = Producer(producer_conf(conns))
    producer.produce(dlq, key=b"10", value=letter.letter(), headers=letter.headers())
    assert producer.flush(30) == 0

    assert main(["dlq", "list", dlq]) == 0
    out = capsys.readouterr().out
    assert "table docs at LSN 0/37F90840" in out and "None[None]" not in out

    assert main(["dlq", "replay", dlq]) == 1
    err = capsys.readouterr().err
    assert "capture's dead-letter topic" in err and "capture snapshot" in err and "restart" in err, err

    doc = {"dead_letter_topics": [{"name": dlq, "depth": 1, "kind": "capture"}]}
    [found] = problems_of(doc)
    assert "capture snapshot" in found["hint"] and "dlq replay" not in found["hint"], found
