"""The fused hot path (fastpath.RowEncoder) gives exactly the generic path's key and bytes:
pgoutput decode -> RowChange -> normalize_row -> AvroEncoder.encode."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcrouter.capture.avro_fast import encode_long
from cdcrouter.capture.fastpath import KeyMoved, RowEncoder
from cdcrouter.capture.normalize import (
    UNCHANGED,
    RowChange,
    TableShape,
    event_key,
    moved_key,
    normalize_row,
)
from cdcrouter.capture.pgoutput import Change, PgOutputDecoder, Relation
from cdcrouter.capture.sink import AvroEncoder

KINDS = ["plain", "bool", "timestamptz", "timestamp", "json"]
OID = 16401


def _tuple(row: list[Any]) -> bytes:
    out = [struct.pack(">h", len(row))]
    for v in row:
        if v is None:
            out.append(b"n")
        elif v is UNCHANGED:
            out.append(b"u")
        else:
            b = v.encode()
            out.append(b"t" + struct.pack(">I", len(b)) + b)
    return b"".join(out)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "a.b", "c\\"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _value(kind: str) -> st.SearchStrategy[Any]:
    if kind == "bool":
        text: st.SearchStrategy[str] = st.sampled_from(["t", "f"])
    elif kind in ("timestamptz", "timestamp"):
        text = st.sampled_from(
            [
                "2024-05-01 10:00:00.5+00",
                "2024-05-01 10:00:00+00",
                "2024-05-01 12:00:00.250+02",
                "2024-05-01 10:00:00.25",
                "infinity",
                "0044-03-15 12:00:00+00 BC",
                "10000-01-01 00:00:00+00",
            ]
        )
    elif kind == "json":
        text = json_values.map(json.dumps) | st.just("not json")
    else:
        text = st.text(max_size=12) | st.sampled_from(["C1", "C2"])
    return st.none() | st.just(UNCHANGED) | text


@st.composite
def cases(draw: st.DrawFn) -> tuple[Relation, TableShape, bytes]:
    n = draw(st.integers(1, 6))
    cols = [f"c{i}" for i in range(n)]
    if draw(st.booleans()):  # a column named like a JSON column's nested key: keys stay apart
        cols[-1] = "c0.a"
    kinds = [draw(st.sampled_from(KINDS)) for _ in cols]
    keys = tuple(c for c in cols if draw(st.booleans())) or (cols[0],)
    ids = tuple(draw(st.lists(st.sampled_from(cols), min_size=1, max_size=2, unique=True)))
    if draw(st.booleans()):  # most tables: one plain id column
        kinds[cols.index(ids[0])] = "plain"
        ids = ids[:1]
    excluded = frozenset(c for c in cols if c not in ids and draw(st.integers(0, 4)) == 0)
    rel = Relation(OID, "s", "t_x", "f", tuple(cols), tuple(25 for _ in cols), keys)
    shape = TableShape(
        "t_x",
        "Thing",
        ids,
        dict(zip(cols, kinds, strict=True)),  # type: ignore[arg-type]
        {"INSERT": "ThingCreated", "UPDATE": "ThingUpdated", "DELETE": "ThingDeleted", "SNAPSHOT": "X"},
        draw(st.none() | st.just("thing")),
        excluded,
    )
    new = [draw(_value(k)) for k in kinds]
    # the old row: mostly the same values, so the comparison matters
    old = [v if draw(st.integers(0, 2)) else draw(_value(k)) for v, k in zip(new, kinds, strict=True)]
    op = draw(st.sampled_from("IUD"))
    if op == "I":
        buf = b"I" + struct.pack(">I", OID) + b"N" + _tuple([None if v is UNCHANGED else v for v in new])
    elif op == "D":
        marker = draw(st.sampled_from("KO"))
        if marker == "K":
            old = [v if c in keys else None for c, v in zip(cols, old, strict=True)]
        buf = b"D" + struct.pack(">I", OID) + marker.encode() + _tuple(old)
    else:
        marker = draw(st.sampled_from(["K", "O", ""]))
        if marker == "K":
            old = [v if c in keys else None for c, v in zip(cols, old, strict=True)]
        before = marker.encode() + _tuple(old) if marker else b""
        buf = b"U" + struct.pack(">I", OID) + before + b"N" + _tuple(new)
    return rel, shape, buf


@settings(max_examples=1500, deadline=None)
@given(cases(), st.integers(0, 2**40), st.integers(0, 2**42), st.integers(0, 2**31 - 1))
def test_row_encoder_equals_the_generic_path(
    case: tuple[Relation, TableShape, bytes], lsn: int, commit_ms: int, schema_id: int
) -> None:
    rel, shape, buf = case
    enc = AvroEncoder(schema_id)
    dec = PgOutputDecoder()
    dec.relations[rel.oid] = rel
    ch = dec.decode(buf)
    assert isinstance(ch, Change)
    change = RowChange(ch.operation, ch.new, ch.old, f"{lsn:X}:{rel.name}", commit_ms)
    row_encoder = RowEncoder(rel, shape, enc.prefix)
    if moved_key(change, shape):  # a new entity id: the engine reports it as DELETE + INSERT
        with pytest.raises(KeyMoved):
            row_encoder.encode(buf, lsn, encode_long(commit_ms), encode_long(commit_ms + 7))
        return
    event = normalize_row(change, shape, commit_ms + 7)
    expected = (event_key(event), enc.encode(event))
    got = row_encoder.encode(buf, lsn, encode_long(commit_ms), encode_long(commit_ms + 7))
    assert got == expected


def test_row_encoder_on_a_typical_update() -> None:
    cols = ("id", "price", "active", "updated_at", "notes")
    rel = Relation(OID, "s", "cars", "f", cols, (25, 1700, 16, 1184, 25), ("id",))
    kinds = {"id": "plain", "price": "plain", "active": "bool", "updated_at": "timestamptz", "notes": "plain"}
    names = {"INSERT": "CarCreated", "UPDATE": "CarUpdated", "DELETE": "CarDeleted", "SNAPSHOT": "CarCreated"}
    shape = TableShape("cars", "Car", ("id",), kinds, names)  # type: ignore[arg-type]
    old = ["C1", "10.00", "t", "2024-05-01 10:00:00+00", UNCHANGED]
    new = ["C1", "11.00", "t", "2024-05-01 10:00:01.5+00", UNCHANGED]
    buf = b"U" + struct.pack(">I", OID) + b"O" + _tuple(old) + b"N" + _tuple(new)
    enc = AvroEncoder(3)
    key, value = RowEncoder(rel, shape, enc.prefix).encode(buf, 0x1234, encode_long(5), encode_long(6))
    assert key == b"C1"
    import io

    import fastavro

    event: Any = fastavro.schemaless_reader(io.BytesIO(value[5:]), enc.schema)
    assert event["eventBody"]["entities"][0]["updatedAttributes"] == {
        "price": "11.00",
        "updated_at": "2024-05-01T10:00:01.5Z",
        "id": "C1",
    }
