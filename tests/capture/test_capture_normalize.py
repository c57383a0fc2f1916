"""The normalisation both engines share: canonical values, changed columns, TOAST, uuids."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cdcrouter.capture.canonical import attributes, canonical_timestamp, flatten_json, parse_json
from cdcrouter.capture.normalize import (
    UNCHANGED,
    OutboxRowError,
    OutboxShape,
    RowChange,
    TableShape,
    event_key,
    normalize_outbox,
    normalize_row,
)

LOANS = TableShape(
    table="loan_entities",
    entity_type="Loan",
    id_columns=("id",),
    kinds={
        "id": "plain",
        "loan": "json",
        "approved": "bool",
        "created_at": "timestamptz",
        "documents": "plain",
    },
    event_names={
        "INSERT": "LoanCreated",
        "UPDATE": "LoanUpdated",
        "DELETE": "LoanDeleted",
        "SNAPSHOT": "LoanCreated",
    },
)


def _change(op: str, new=None, old=None, position="0/1:0") -> RowChange:
    return RowChange(operation=op, new=new, old=old, position=position, commit_ms=1_700_000_000_000)


def _attrs(event: dict) -> dict:
    return event["eventBody"]["entities"][0]["updatedAttributes"]


def test_insert_reports_every_column_in_canonical_form() -> None:
    row = {
        "id": "L1",
        "loan": '{"loanAmount": 25000.50, "terms": {"months": 60}, "cosigner": null, "tags": ["a"]}',
        "approved": "t",
        "created_at": "2024-05-01 10:00:00.5+00",
        "documents": None,
    }
    event = normalize_row(_change("INSERT", new=row), LOANS, saved_ms=5)
    assert _attrs(event) == {
        "id": "L1",
        "loan.loanAmount": "25000.50",
        "loan.terms.months": "60",
        "loan.cosigner": None,
        "loan.tags.0": "a",
        "approved": "true",
        "created_at": "2024-05-01T10:00:00.5Z",
        "documents": None,
    }
    assert event["eventHeader"]["eventName"] == "LoanCreated"
    assert event["eventHeader"]["createdDate"] == 1_700_000_000_000
    assert event["eventHeader"]["savedDate"] == 5
    assert event["sourceMetadata"] == {
        "table": "loan_entities",
        "operation": "INSERT",
        "timestamp": 1_700_000_000_000,
    }
    assert event_key(event) == b"L1"


def test_update_reports_changed_columns_and_key_only() -> None:
    old = {"id": "L1", "loan": '{"loanAmount": 100, "rate": 1.5}', "approved": "f", "documents": "x" * 10}
    new = {"id": "L1", "loan": '{"loanAmount": 200, "rate": 1.5}', "approved": "f", "documents": UNCHANGED}
    event = normalize_row(_change("UPDATE", new=new, old=old), LOANS, 0)
    assert _attrs(event) == {"id": "L1", "loan.loanAmount": "200"}
    assert event["eventHeader"]["eventName"] == "LoanUpdated"


def test_unchanged_toast_is_never_reported_even_without_old_row() -> None:
    new = {"id": "L1", "approved": "t", "documents": UNCHANGED}
    assert _attrs(normalize_row(_change("UPDATE", new=new), LOANS, 0)) == {"id": "L1", "approved": "true"}


def test_json_key_removed_in_update_is_reported_as_null() -> None:
    old = {"id": "L1", "loan": '{"a": 1, "b": 2}'}
    new = {"id": "L1", "loan": '{"a": 1}'}
    assert _attrs(normalize_row(_change("UPDATE", new=new, old=old), LOANS, 0)) == {
        "id": "L1",
        "loan.b": None,
    }


def test_delete_carries_the_old_row() -> None:
    event = normalize_row(_change("DELETE", old={"id": "L9", "approved": "t"}), LOANS, 0)
    assert _attrs(event) == {"id": "L9", "approved": "true"}
    assert event["eventHeader"]["eventName"] == "LoanDeleted"
    assert event_key(event) == b"L9"


def test_uuid_is_deterministic_per_position() -> None:
    a = normalize_row(_change("INSERT", new={"id": "1"}, position="0/A:1"), LOANS, 1)
    b = normalize_row(_change("INSERT", new={"id": "1"}, position="0/A:1"), LOANS, 2)
    c = normalize_row(_change("INSERT", new={"id": "1"}, position="0/A:2"), LOANS, 1)
    assert a["eventHeader"]["uuid"] == b["eventHeader"]["uuid"] != c["eventHeader"]["uuid"]


def test_timestamps_become_utc_iso_z() -> None:
    assert canonical_timestamp("2024-05-01 10:00:00+00") == "2024-05-01T10:00:00Z"
    assert canonical_timestamp("2024-05-01 12:30:00.250+02:30") == "2024-05-01T10:00:00.25Z"
    assert canonical_timestamp("2024-05-01 10:00:00.123456") == "2024-05-01T10:00:00.123456Z"
    assert canonical_timestamp("2024-05-01T10:00:00.120000Z") == "2024-05-01T10:00:00.12Z"
    assert canonical_timestamp("infinity") == "infinity"


def test_outbox_row_becomes_the_described_event() -> None:
    row = {
        "id": "7",
        "event_name": "LoanPaymentSubmitted",
        "event_type": "payment",
        "entities": '[{"entityType": "Loan", "entityId": "L1",'
        ' "updatedAttributes": {"loan": {"paid": 12.30}, "ok": true}}]',
    }
    event = normalize_outbox(_change("INSERT", new=row), OutboxShape("business_events"), 0)
    assert event["eventHeader"]["eventName"] == "LoanPaymentSubmitted"
    assert event["eventHeader"]["eventType"] == "payment"
    assert event["eventBody"]["entities"] == [
        {"entityType": "Loan", "entityId": "L1", "updatedAttributes": {"loan.paid": "12.30", "ok": "true"}}
    ]
    assert event["sourceMetadata"]["operation"] == "OUTBOX"


def test_outbox_row_without_entities_is_an_error() -> None:
    row = {"event_name": "X", "entities": "[]"}
    try:
        normalize_outbox(_change("INSERT", new=row), OutboxShape("business_events"), 0)
    except OutboxRowError as exc:
        assert "non-empty" in str(exc)
    else:
        raise AssertionError("an outbox row without entities must be rejected")


# --- properties -------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), kids, max_size=3)
    ),
    max_leaves=12,
)


def _dumps(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


@given(json_values)
def test_json_numbers_keep_their_exact_text(value: object) -> None:
    """Every JSON number comes out exactly as written: no float rounding anywhere."""
    flat = dict(attributes("json", "c", _dumps(value)))

    def expected(prefix: str, v: object):
        if isinstance(v, dict):
            if not v:
                yield prefix, "{}"
            for k, x in v.items():
                yield from expected(f"{prefix}.{k}", x)
        elif isinstance(v, list):
            if not v:
                yield prefix, "[]"
            for i, x in enumerate(v):
                yield from expected(f"{prefix}.{i}", x)
        elif v is None:
            yield prefix, None
        elif isinstance(v, bool):
            yield prefix, "true" if v else "false"
        elif isinstance(v, Decimal | int):
            yield prefix, str(v)
        else:
            yield prefix, v

    assert flat == dict(expected("c", value))


@given(
    st.dictionaries(
        st.sampled_from(["approved", "documents", "loan", "x", "y"]), st.text(max_size=5) | st.none()
    ),
    st.dictionaries(
        st.sampled_from(["approved", "documents", "loan", "x", "y"]), st.text(max_size=5) | st.none()
    ),
    st.sets(st.sampled_from(["approved", "documents", "loan", "x", "y"])),
)
def test_update_reports_exactly_the_columns_that_differ(old: dict, new: dict, toasted: set) -> None:
    kinds = {c: "plain" for c in ["approved", "documents", "loan", "x", "y"]}
    shape = TableShape("t", "T", ("id",), {"id": "plain", **kinds}, {"UPDATE": "TUpdated"})
    new_row = {"id": "k", **{c: (UNCHANGED if c in toasted else v) for c, v in new.items()}}
    old_row = {"id": "k", **old}
    attrs = _attrs(normalize_row(_change("UPDATE", new=new_row, old=old_row), shape, 0))
    expected = {c: v for c, v in new.items() if c not in toasted and (c not in old or old[c] != v)}
    assert attrs == {"id": "k", **expected}
    assert not (set(attrs) & toasted), "an unchanged TOASTed value was reported"


@given(json_values)
def test_flatten_parse_roundtrip_has_no_float_objects(value: object) -> None:
    for _, v in flatten_json("", parse_json(_dumps(value))):
        assert v is None or isinstance(v, str)


def test_fast_uuid5_matches_the_standard_library() -> None:
    import uuid as _uuid

    from cdcrouter.capture.normalize import EVENT_NAMESPACE, event_uuid

    positions = ["0/16B3748:1", "snapshot:1A:car_entities:C1", "", "ÄÖ:99"]
    positions += [f"{i:X}:car_entities:C{i}" for i in range(2000)]  # every variant digit
    for pos in positions:
        assert event_uuid(pos) == str(_uuid.uuid5(EVENT_NAMESPACE, pos))
