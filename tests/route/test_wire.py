"""The fast path (raw body + appended FilterMetadata) is byte-for-byte a full re-encode."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.route.codec import DecodeError, RawDecoder, encode_filtered
from cdcrouter.route.events import encode_raw, make_event
from cdcrouter.route.wire import MetadataEncoder, filtered_value, header, split
from cdcrouter.schemas import filtered_schema_text, parsed_filtered_schema, raw_schema_text

RAW_ID, FILTERED_ID = 17, 4242


def _fetch(schema_id: int) -> str | None:
    return {RAW_ID: raw_schema_text(), 99: '{"type": "string"}'}.get(schema_id)


def test_fast_path_equals_full_reencode_on_generated_events() -> None:
    decoder = RawDecoder(_fetch)
    for i in range(2_000):
        event = make_event(i)
        decoded, body, writer = decoder.decode(encode_raw(event, RAW_ID))
        assert writer.passthrough
        assert decoded == event
        meta = {"filterId": f"f-{i % 7}", "consumerId": "c-é", "filteredAt": 1_764_000_000_123 + i}
        fast = filtered_value(
            header(FILTERED_ID), body, MetadataEncoder("f-" + str(i % 7), "c-é").encode(meta["filteredAt"])
        )
        assert fast == header(FILTERED_ID) + encode_filtered(event, meta)
        assert fastavro.schemaless_reader(io.BytesIO(fast[5:]), parsed_filtered_schema(), None) == {
            **event,
            "filterMetadata": meta,
        }


@given(
    filter_id=st.text(min_size=1, max_size=40),
    consumer_id=st.text(min_size=1, max_size=40),
    at=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_metadata_encoding_matches_fastavro(filter_id: str, consumer_id: str, at: int) -> None:
    event = make_event(3)
    full = encode_filtered(event, {"filterId": filter_id, "consumerId": consumer_id, "filteredAt": at})
    raw_body = encode_raw(event, RAW_ID)[5:]
    assert raw_body + MetadataEncoder(filter_id, consumer_id).encode(at) == full


def test_zigzag_known_values() -> None:
    assert encode_long(0) == b"\x00"
    assert encode_long(-1) == b"\x01"
    assert encode_long(1) == b"\x02"
    assert encode_long(64) == b"\x80\x01"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "tombstone"),
        (b"\x00\x00", "shorter than"),
        (b"garbage bytes here", "unknown magic byte"),
        (header(12345) + b"\x02a", "unknown schema id 12345"),
        (header(RAW_ID) + b"\xff\xff\xff", "not a valid Avro record"),
        (encode_raw(make_event(1), RAW_ID) + b"\x00\x00", "trailing bytes"),
        (header(99) + b"\x02a", "cannot be read as a BusinessEvent"),
    ],
)
def test_undecodable_records_raise_decode_error(value: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        RawDecoder(_fetch).decode(value)


def test_evolved_writer_schema_takes_the_safe_path() -> None:
    """A raw writer schema with an extra field is resolved to the contract's shape, not passed through."""
    import json

    evolved = json.loads(raw_schema_text())
    evolved["fields"].append({"name": "extra", "type": "string", "default": ""})
    text = json.dumps(evolved)
    decoder = RawDecoder(lambda i: text if i == 5 else None)
    buf = io.BytesIO()
    event = make_event(9)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(evolved), {**event, "extra": "x"})
    decoded, _, writer = decoder.decode(header(5) + buf.getvalue())
    assert not writer.passthrough
    assert decoded == event


def test_split_reads_the_schema_id() -> None:
    schema_id, body = split(header(70000) + b"abc")
    assert schema_id == 70000 and bytes(body) == b"abc"
    assert filtered_schema_text().startswith('{"type":"record"')


def test_bench_reads_saved_date_without_decoding() -> None:
    from cdcrouter.bench.route import saved_date

    for i in range(200):
        event = make_event(i)
        assert saved_date(encode_raw(event, RAW_ID)) == event["eventHeader"]["savedDate"]
