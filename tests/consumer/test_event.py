"""Pure parts of the consumer SDK: typed events, wire-format checks, DLQ headers."""

from __future__ import annotations

from decimal import Decimal

import pytest

import cdcrouter.consumer as sdk
from cdcrouter.consumer import _dlq
from cdcrouter.consumer._serde import decode

RECORD = {
    "eventHeader": {
        "uuid": "u-1",
        "eventName": "LoanCreated",
        "createdDate": 1,
        "savedDate": 2,
        "eventType": None,
    },
    "eventBody": {
        "entities": [
            {
                "entityType": "Loan",
                "entityId": "L-1",
                "updatedAttributes": {
                    "loan.loanAmount": "50000.10",
                    "status": None,
                    "term": "36",
                    "approved": "true",
                    "paid_at": "2026-11-24T21:00:00.123456Z",
                },
            }
        ]
    },
    "sourceMetadata": {"table": "loan_entities", "operation": "INSERT", "timestamp": 3},
    "filterMetadata": {"filterId": "loans", "consumerId": "loan-consumer", "filteredAt": 4},
}


def test_public_api_is_pinned() -> None:
    assert sorted(sdk.__all__) == [
        "ConsumerApp",
        "ConsumerError",
        "Context",
        "DecodeError",
        "DlqInfo",
        "DlqRecord",
        "Entity",
        "Event",
        "EventHeader",
        "FilterMetadata",
        "HandlerFailed",
        "IdempotencyStore",
        "MemoryStore",
        "Origin",
        "PostgresStore",
        "RegistryClient",
        "ReplayResult",
        "SourceMetadata",
        "Stats",
        "dlq_topic",
        "list_dlqs",
        "read_dlq",
        "replay_dlq",
    ]


def test_event_from_avro_round_trips_and_converts_exactly() -> None:
    event = sdk.Event.from_avro(RECORD)
    assert (event.uuid, event.name, event.entity.entity_id) == ("u-1", "LoanCreated", "L-1")
    assert event.entity.decimal("loan.loanAmount") == Decimal("50000.10")
    assert event.entity.integer("term") == 36
    assert event.entity.integer("loan.loanAmount") is None  # not integral: no silent truncation
    assert event.entity.attr("status") is None and event.entity.has("status")
    assert event.entity.attr("missing", "x") == "x"
    assert event.entity.boolean("approved") is True and event.entity.boolean("term") is None
    ts = event.entity.timestamp("paid_at")
    assert ts is not None and ts.isoformat() == "2026-11-24T21:00:00.123456+00:00"
    assert event.entity.timestamp("term") is None
    assert event.filter is not None and event.filter.consumer_id == "loan-consumer"
    assert event.to_dict() == RECORD
    with pytest.raises(TypeError):
        event.entity.updated_attributes["status"] = "X"  # type: ignore[index]


def test_raw_event_has_no_filter_metadata() -> None:
    raw = {k: v for k, v in RECORD.items() if k != "filterMetadata"}
    assert sdk.Event.from_avro(raw).filter is None


@pytest.mark.parametrize("value", [None, b"", b"\x01\x00\x00\x00\x01abc", b"{json}"])
def test_non_wire_format_values_are_decode_errors(value: bytes | None) -> None:
    with pytest.raises(sdk.DecodeError):
        decode(None, value)  # type: ignore[arg-type]  # rejected before any registry lookup


def test_dlq_headers_replace_earlier_failures_and_keep_the_originals() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        err = exc
    first = _dlq.failure_headers(
        [("trace", b"t1")],
        error=err,
        stage="handler",
        topic="filtered-loan-events",
        partition=2,
        offset=41,
        timestamp=None,
        consumer="c",
        group="g",
        attempts=4,
        event_uuid="u-1",
    )
    again = _dlq.failure_headers(
        first,
        error=RuntimeError("again"),
        stage="handler",
        topic="filtered-loan-events",
        partition=2,
        offset=41,
        timestamp=None,
        consumer="c",
        group="g",
        attempts=1,
        event_uuid="u-1",
    )
    h = _dlq.header_map(again)
    assert h["error"] == "RuntimeError: again" and h["attempts"] == "1" and h["offset"] == "41"
    assert [k for k, _ in again].count("cdcrouter.dlq.error") == 1
    assert _dlq.strip(again) == [("trace", b"t1")]
    assert "ValueError: boom" in _dlq.header_map(first)["error.stack"]
    assert sdk.dlq_topic("filtered-loan-events", "c") == "filtered-loan-events.c.dlq"


def test_bad_consumer_names_are_rejected_before_touching_kafka() -> None:
    with pytest.raises(sdk.ConsumerError, match="invalid consumer name"):
        sdk.ConsumerApp("loan consumer!", connections=None)


def test_the_routers_dead_letter_headers_are_understood() -> None:
    router = [
        ("trace", b"t"),
        ("cdcrouter.error", b"not Avro"),
        ("cdcrouter.source.topic", b"raw-business-events"),
        ("cdcrouter.source.partition", b"1"),
        ("cdcrouter.source.offset", b"7"),
    ]
    assert _dlq.header_map(router) == {
        "error": "not Avro",
        "topic": "raw-business-events",
        "partition": "1",
        "offset": "7",
    }
    assert _dlq.strip(router) == [("trace", b"t")]
