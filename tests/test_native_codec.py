"""The native BusinessEvent codec (cdcrouter._native) is fastavro, byte for byte, only faster.

Decoding is checked against ``fastavro.schemaless_reader`` (same dict, key order and types) on
arbitrary events, on hand-built multi-block bodies (negative block counts with byte sizes), and on
random bytes; encoding against ``fastavro.schemaless_writer``.
Malformed input must raise ValueError, never crash.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcrouter._native import decode_business_event, encode_business_event
from cdcrouter.capture.avro_fast import encode_long as zigzag_long
from cdcrouter.capture.avro_fast import encode_string as avro_string
from cdcrouter.route.events import make_event
from cdcrouter.route.wire import header
from cdcrouter.schemas import parsed_raw_schema

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=30)  # hypothesis' text excludes lone surrogates: always encodable
OPT_TEXT = st.none() | TEXT

ENTITIES = st.lists(
    st.fixed_dictionaries(
        {
            "entityType": TEXT,
            "entityId": TEXT,
            "updatedAttributes": st.dictionaries(TEXT, OPT_TEXT, max_size=12),
        }
    ),
    max_size=8,
)
EVENTS = st.fixed_dictionaries(
    {
        "eventHeader": st.fixed_dictionaries(
            {
                "uuid": TEXT,
                "eventName": TEXT,
                "createdDate": LONGS,
                "savedDate": LONGS,
                "eventType": OPT_TEXT,
            }
        ),
        "eventBody": st.fixed_dictionaries({"entities": ENTITIES}),
        "sourceMetadata": st.fixed_dictionaries(
            {"table": OPT_TEXT, "operation": OPT_TEXT, "timestamp": st.none() | LONGS}
        ),
    }
)


def fa_encode(event: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_raw_schema(), event)
    return buf.getvalue()


def fa_decode(body: bytes) -> tuple[Any, int]:
    """fastavro's dict and how many bytes it consumed."""
    stream = io.BytesIO(body)
    return fastavro.schemaless_reader(stream, parsed_raw_schema(), None), stream.tell()


def same(a: Any, b: Any) -> bool:
    """Equal, with the same key order and the same types all the way down (repr shows both)."""
    return a == b and repr(a) == repr(b)


# --- decode ---------------------------------------------------------------------------------------


@given(EVENTS)
def test_decode_equals_fastavro(event: dict[str, Any]) -> None:
    body = fa_encode(event)
    expected, _ = fa_decode(body)
    assert same(decode_business_event(body), expected)
    assert same(decode_business_event(header(7) + body, 5), expected)


def test_decode_generated_events_and_offsets() -> None:
    for i in range(500):
        event = make_event(i)
        body = fa_encode(event)
        framed = header(1) + body
        assert same(decode_business_event(framed, 5), fa_decode(body)[0])
        assert decode_business_event(bytearray(framed), 5) == event


def _blocks(items: list[bytes], sizes: list[int], negative: list[bool]) -> bytes:
    """An Avro array/map body split into blocks; a negative count is followed by the block's size."""
    out, i, k = b"", 0, 0
    while i < len(items):
        n = max(1, sizes[k % len(sizes)])
        chunk = items[i : i + n]
        data = b"".join(chunk)
        if negative[k % len(negative)]:
            out += zigzag_long(-len(chunk)) + zigzag_long(len(data)) + data
        else:
            out += zigzag_long(len(chunk)) + data
        i, k = i + n, k + 1
    return out + b"\x00"


def _opt(s: str | None) -> bytes:
    return b"\x00" if s is None else b"\x02" + avro_string(s)


def _multi_block_body(event: dict[str, Any], sizes: list[int], negative: list[bool]) -> bytes:
    h, sm = event["eventHeader"], event["sourceMetadata"]
    entities = []
    for ent in event["eventBody"]["entities"]:
        attrs = [avro_string(k) + _opt(v) for k, v in ent["updatedAttributes"].items()]
        entities.append(
            avro_string(ent["entityType"]) + avro_string(ent["entityId"]) + _blocks(attrs, sizes, negative)
        )
    ts = sm["timestamp"]
    return b"".join(
        (
            avro_string(h["uuid"]),
            avro_string(h["eventName"]),
            zigzag_long(h["createdDate"]),
            zigzag_long(h["savedDate"]),
            _opt(h["eventType"]),
            _blocks(entities, sizes, negative),
            _opt(sm["table"]),
            _opt(sm["operation"]),
            b"\x00" if ts is None else b"\x02" + zigzag_long(ts),
        )
    )


@given(
    EVENTS,
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=5),
    st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_decode_multi_block_arrays_and_maps(
    event: dict[str, Any], sizes: list[int], negative: list[bool]
) -> None:
    body = _multi_block_body(event, sizes, negative)
    expected, consumed = fa_decode(body)
    assert consumed == len(body)
    assert expected == event
    assert same(decode_business_event(body), expected)


def test_multi_block_hand_checked() -> None:
    event = make_event(2)
    attrs = event["eventBody"]["entities"][0]["updatedAttributes"]
    assert len(attrs) >= 3
    body = _multi_block_body(event, [2, 1], [True, False])
    assert body != fa_encode(event)  # really a different (multi-block) layout
    assert same(decode_business_event(body), fa_decode(body)[0])


def test_duplicate_map_keys_last_wins_like_fastavro() -> None:
    event = make_event(1)
    ent = event["eventBody"]["entities"][0]
    items = [avro_string("k") + _opt("first"), avro_string("k") + _opt(None), avro_string("k") + _opt("last")]
    entity = avro_string(ent["entityType"]) + avro_string(ent["entityId"]) + _blocks(items, [2], [True])
    h, sm = event["eventHeader"], event["sourceMetadata"]
    body = b"".join(
        (
            avro_string(h["uuid"]),
            avro_string(h["eventName"]),
            zigzag_long(h["createdDate"]),
            zigzag_long(h["savedDate"]),
            _opt(h["eventType"]),
            b"\x02" + entity + b"\x00",
            _opt(sm["table"]),
            _opt(sm["operation"]),
            b"\x02" + zigzag_long(sm["timestamp"]),
        )
    )
    decoded = decode_business_event(body)
    assert same(decoded, fa_decode(body)[0])
    assert decoded["eventBody"]["entities"][0]["updatedAttributes"] == {"k": "last"}


# --- decode errors --------------------------------------------------------------------------------


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_every_prefix_raises_value_error(event: dict[str, Any]) -> None:
    body = header(3) + fa_encode(event)
    for n in range(5, len(body)):
        with pytest.raises(ValueError):
            decode_business_event(body[:n], 5)


def test_every_prefix_of_generated_events_raises_with_offset() -> None:
    for i in range(20):
        body = header(3) + fa_encode(make_event(i))
        for n in range(5, len(body)):
            with pytest.raises(ValueError, match=r"truncated BusinessEvent: .* at byte offset \d+"):
                decode_business_event(body[:n], 5)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_never_crash_and_agree_with_fastavro(data: bytes) -> None:
    try:
        decoded = decode_business_event(data)
    except ValueError:
        return
    expected, consumed = fa_decode(data)  # what native accepts, fastavro reads the same way
    assert consumed == len(data)
    assert same(decoded, expected)


@given(EVENTS, st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_corrupted_bodies_never_crash(event: dict[str, Any], where: int, byte: int) -> None:
    body = bytearray(fa_encode(event))
    body[where % len(body)] = byte
    try:
        decoded = decode_business_event(bytes(body))
    except ValueError:
        return
    expected, consumed = fa_decode(bytes(body))
    assert consumed == len(body)
    assert same(decoded, expected)


def _valid_body() -> bytes:
    return fa_encode(make_event(4))


def test_trailing_bytes_raise() -> None:
    body = _valid_body()
    with pytest.raises(
        ValueError, match=rf"2 trailing bytes after the BusinessEvent record .* {len(body) + 5}"
    ):
        decode_business_event(header(1) + body + b"\x00\x00", 5)


def test_bad_union_index_raises() -> None:
    body = fa_encode(
        {**make_event(4), "sourceMetadata": {"table": None, "operation": None, "timestamp": None}}
    )
    bad = body[:-3] + b"\x04" + body[-2:]  # table's union index 2: the union has only 0 and 1
    with pytest.raises(ValueError, match=r"bad union index 2 for sourceMetadata.table at byte offset"):
        decode_business_event(bad)


def test_invalid_utf8_raises() -> None:
    event = make_event(4)
    event["eventHeader"]["uuid"] = "ab"
    body = bytearray(fa_encode(event))
    body[1] = 0xFF  # first byte of the uuid's text
    with pytest.raises(ValueError, match=r"invalid UTF-8 in eventHeader.uuid: the string at byte offset 0"):
        decode_business_event(bytes(body))


def test_invalid_varint_raises() -> None:
    with pytest.raises(ValueError, match=r"invalid varint for eventHeader\.uuid at byte offset 0"):
        decode_business_event(b"\xff" * 11)
    # ten bytes whose last one carries more than the 64th bit
    with pytest.raises(ValueError, match="invalid varint"):
        decode_business_event(b"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f")


def test_negative_length_raises() -> None:
    with pytest.raises(ValueError, match=r"negative length -1 for eventHeader\.uuid"):
        decode_business_event(b"\x01")


def test_huge_block_count_fails_fast_without_allocating() -> None:
    nulls = {"table": None, "operation": None, "timestamp": None}
    body = fa_encode({**make_event(4), "eventBody": {"entities": []}, "sourceMetadata": nulls})
    assert body.endswith(b"\x00" * 4)  # the entities' end marker, then three null unions
    huge = body[:-4] + zigzag_long(-(2**62)) + zigzag_long(10) + b"\x00" * 10
    with pytest.raises(ValueError, match="truncated"):
        decode_business_event(huge)


@pytest.mark.parametrize("offset", [-1, 10_000])
def test_offset_outside_the_buffer_raises(offset: int) -> None:
    with pytest.raises(ValueError, match="outside the buffer"):
        decode_business_event(_valid_body(), offset)


def test_offset_at_the_end_is_truncation() -> None:
    body = _valid_body()
    with pytest.raises(ValueError, match="truncated"):
        decode_business_event(body, len(body))


# --- encode ---------------------------------------------------------------------------------------


@given(EVENTS)
def test_encode_equals_fastavro(event: dict[str, Any]) -> None:
    assert encode_business_event(event) == fa_encode(event)


def test_encode_generated_events() -> None:
    for i in range(500):
        event = make_event(i)
        assert encode_business_event(event) == fa_encode(event)


def test_encode_missing_optional_fields_take_the_schema_defaults() -> None:
    event = make_event(5)
    del event["eventHeader"]["eventType"]
    event["sourceMetadata"] = {}
    del event["eventBody"]["entities"][0]["updatedAttributes"]
    assert encode_business_event(event) == fa_encode(event)


def test_encode_accepts_a_tuple_of_entities() -> None:
    event = make_event(6)
    as_tuple = {**event, "eventBody": {"entities": tuple(event["eventBody"]["entities"])}}
    assert encode_business_event(as_tuple) == fa_encode(event)


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    event = make_event(8)
    target: Any = event
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return event


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        ([], TypeError, "event must be a dict, got list"),
        ({}, ValueError, "eventHeader is required"),
        (_with(("eventHeader", "uuid"), None), ValueError, "eventHeader.uuid is required"),
        (_with(("eventHeader", "uuid"), 12), TypeError, "eventHeader.uuid must be str, got int"),
        (_with(("eventHeader", "createdDate"), "1"), TypeError, "eventHeader.createdDate must be int"),
        (_with(("eventHeader", "savedDate"), 2**63), ValueError, "savedDate = .* does not fit an Avro long"),
        (_with(("eventHeader", "eventType"), 3), TypeError, "eventHeader.eventType must be str or None"),
        (_with(("eventBody", "entities"), "x"), TypeError, "eventBody.entities must be a list"),
        (
            _with(("eventBody", "entities", 0, "entityId"), b"x"),
            TypeError,
            r"entities\[0\].entityId must be str",
        ),
        (
            _with(("eventBody", "entities", 0, "updatedAttributes"), {1: "x"}),
            TypeError,
            r"entities\[0\].updatedAttributes must be a dict with str keys",
        ),
        (
            _with(("eventBody", "entities", 0, "updatedAttributes"), {"a": 1}),
            TypeError,
            r"entities\[0\].updatedAttributes\['a'\] must be str or None, got int",
        ),
        (_with(("sourceMetadata", "timestamp"), 1.5), TypeError, "sourceMetadata.timestamp must be int"),
        (_with(("sourceMetadata",), None), ValueError, "sourceMetadata is required"),
    ],
)
def test_encode_rejects_malformed_events(event: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        encode_business_event(event)


def test_encode_rejects_lone_surrogates() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_business_event(_with(("eventHeader", "eventName"), "\ud800"))


def test_many_distinct_and_long_keys_beyond_the_string_cache() -> None:
    """More distinct keys than the str cache holds, and keys too long to cache, still decode right."""
    for start in range(0, 20_000, 2_000):
        attrs = {f"col.{i}": str(i) for i in range(start, start + 2_000)}
        attrs["k" * 200] = None
        event = _with(("eventBody", "entities", 0, "updatedAttributes"), attrs)
        body = fa_encode(event)
        assert same(decode_business_event(body), fa_decode(body)[0])
