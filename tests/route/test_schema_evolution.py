"""Schema evolution on the real stack: a raw schema the contract cannot read is dead-lettered with
the field named; a compatible evolved raw schema (an added ``eventHeader.traceId``) is routed with
its raw body passed through under a derived filtered schema, so consumers get the new field; and
``consume`` shows every field and reports an undecodable record without stopping."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcrouter.cli.main import main
from cdcrouter.consumer._tail import tail
from cdcrouter.route.codec import DecodeError, RawDecoder
from cdcrouter.route.engine import Router, RouterOptions
from cdcrouter.route.events import event_key, make_event
from cdcrouter.route.replay import Position, replay
from cdcrouter.route.wire import header
from cdcrouter.schemas import filtered_schema, parsed_raw_schema, raw_schema
from cdcrouter.schemas.evolution import derived_filtered_schema
from cdcrouter.schemas.registry import RegistryClient, ensure_schema, subject_for

from .oracle import Oracle
from .routekit import RouteEnv, delete_topics, read_topic, setup_env

on_stack = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]

FILTERS = 4  # loan-created, loan-payments, big-loans, ... (routekit's benchmark filters)


@pytest.fixture
def env(stack: Any, unique_name: Any, tmp_path: Path) -> Iterator[RouteEnv]:
    e = setup_env(stack.connections, unique_name, tmp_path, filters=FILTERS)
    yield e
    delete_topics(e)


@pytest.fixture
def registry(env: RouteEnv) -> Iterator[RegistryClient]:
    with RegistryClient(env.conns.registry.to_client_conf()) as client:
        yield client


def with_trace_id() -> dict[str, Any]:
    """The raw contract plus an optional ``eventHeader.traceId`` in the middle of the header."""
    schema = raw_schema()
    schema["fields"][0]["type"]["fields"].insert(
        2, {"name": "traceId", "type": ["null", "string"], "default": None}
    )
    return schema


def produce(env: RouteEnv, schema: dict[str, Any], schema_id: int, events: list[dict[str, Any]]) -> None:
    parsed = fastavro.parse_schema(schema)
    producer = Producer(env.kafka(**{"partitioner": "murmur2_random", "enable.idempotence": True}))
    for event in events:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, event)
        producer.produce(env.raw, header(schema_id) + buf.getvalue(), event_key(event))
    assert producer.flush(60) == 0


def route(env: RouteEnv, n: int) -> Any:
    opts = RouterOptions(raw_topic=env.raw, group_id=env.prefix + "g", reload=False)
    return Router(env.filters_path, env.conns, opts).run(max_events=n, idle_timeout_s=20)


def test_the_derived_filtered_schema_of_the_contract_is_the_filtered_contract() -> None:
    derived = fastavro.parse_schema(derived_filtered_schema(raw_schema()))
    assert to_parsing_canonical_form(derived) == to_parsing_canonical_form(
        fastavro.parse_schema(filtered_schema())
    )


@on_stack[0]
@on_stack[1]
def test_an_unreadable_writer_schema_is_dead_lettered_naming_the_field(
    env: RouteEnv, registry: RegistryClient
) -> None:
    # Registered under subjects of their own (compatibility NONE, as any registry's default may be),
    # then written to the raw topic: the router must say which field makes them unreadable.
    no_name = raw_schema()
    header_fields = no_name["fields"][0]["type"]["fields"]
    header_fields[:] = [f for f in header_fields if f["name"] != "eventName"]
    mistyped = raw_schema()
    mistyped["fields"][0]["type"]["fields"][2]["type"] = "string"  # createdDate: long -> string
    ids = {}
    for label, schema in (("no-name", no_name), ("mistyped", mistyped)):
        subject = env.unique(label) + "-value"
        ensure_schema(registry, subject, schema, compatibility="NONE")
        ids[label] = registry.lookup(subject, json.dumps(schema))
    good = env.produce(0, 50)
    bad = [make_event(i, seed=9) for i in range(6)]
    for e in bad[:3]:
        del e["eventHeader"]["eventName"]
    for e in bad[3:]:
        e["eventHeader"]["createdDate"] = str(e["eventHeader"]["createdDate"])
    produce(env, no_name, ids["no-name"], bad[:3])
    produce(env, mistyped, ids["mistyped"], bad[3:])
    stats = route(env, 56)
    assert stats.consumed == 56 and stats.dead_lettered == 6
    reasons = Counter(dict(m.headers())["cdcrouter.error"].decode() for m in read_topic(env.kafka(), env.dlq))
    assert reasons == {
        f"schema id {ids['no-name']} cannot be read as a BusinessEvent: eventHeader.eventName is missing "
        "from the writer schema, and the contract has no default for it": 3,
        f"schema id {ids['mistyped']} cannot be read as a BusinessEvent: eventHeader.createdDate: the "
        "writer schema has string, the contract reads long": 3,
    }
    routed = sum(len(read_topic(env.kafka(), t)) for t in env.filtered_topics)
    assert routed == sum(len(Oracle(env.filters_path.read_text()).topics(e)) for e in good) > 0


@on_stack[0]
@on_stack[1]
def test_an_evolved_raw_schema_reaches_consumers_with_its_new_field(
    env: RouteEnv, registry: RegistryClient
) -> None:
    evolved = with_trace_id()
    # the raw subject (FULL_TRANSITIVE since setup) accepts the compatible change as its version 2
    evolved_id = ensure_schema(registry, subject_for(env.raw), evolved)
    assert evolved_id != env.raw_schema_id
    base = env.produce(0, 200)
    events = [make_event(i, seed=3) for i in range(300)]
    for i, e in enumerate(events):
        e["eventHeader"]["traceId"] = None if i % 5 == 0 else f"trace-{i}"
    produce(env, evolved, evolved_id, events)
    stats = route(env, 500)
    assert stats.consumed == 500 and stats.dead_lettered == 0

    oracle = Oracle(env.filters_path.read_text())
    consumer_of = {f["id"]: f["consumerId"] for f in oracle.filters}
    by_uuid = {e["eventHeader"]["uuid"]: e for e in events}
    base_uuids = {e["eventHeader"]["uuid"] for e in base}
    raw_body = {}  # uuid -> the raw record's Avro body, to check the pass-through
    for m in read_topic(env.kafka(), env.raw):
        value = m.value()
        schema = fastavro.parse_schema(json.loads(registry.schema_by_id(int.from_bytes(value[1:5], "big"))))
        rec = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
        raw_body[rec["eventHeader"]["uuid"]] = value[5:]
    evolved_seen = 0
    for topic in env.filtered_topics:
        want = Counter(e["eventHeader"]["uuid"] for e in [*base, *events] if topic in oracle.topics(e))
        got: Counter[str] = Counter()
        for m in read_topic(env.kafka(), topic):
            value = m.value()
            writer_id = int.from_bytes(value[1:5], "big")
            # the oracle: fastavro with the writer schema the registry has under that id
            schema_json = json.loads(registry.schema_by_id(writer_id))
            rec = fastavro.schemaless_reader(io.BytesIO(value[5:]), fastavro.parse_schema(schema_json), None)
            uuid = rec["eventHeader"]["uuid"]
            got[uuid] += 1
            meta = rec.pop("filterMetadata")
            assert meta["consumerId"] == consumer_of[meta["filterId"]]
            assert value[5:].startswith(raw_body[uuid])  # the raw body, untouched
            if uuid in base_uuids:
                assert "traceId" not in rec["eventHeader"]
                continue
            evolved_seen += 1
            assert rec == by_uuid[uuid]  # every field the raw record carried, traceId included
            assert registry.lookup(subject_for(topic), json.dumps(schema_json)) == writer_id
        assert got == want
    assert evolved_seen > 0

    # a replay frames evolved records the same way: the new field reaches the filter's topic again
    topic = env.prefix + "loan-created"
    before = len(read_topic(env.kafka(), topic))
    result = replay(env.filters_path, "loan-created", env.conns, env.raw, Position(offset=0))
    copies: Counter[str] = Counter()
    for m in read_topic(env.kafka(), topic):
        writer = json.loads(registry.schema_by_id(int.from_bytes(m.value()[1:5], "big")))
        rec = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), fastavro.parse_schema(writer), None)
        uuid = rec["eventHeader"]["uuid"]
        copies[uuid] += 1
        if uuid in by_uuid:
            assert rec["eventHeader"]["traceId"] == by_uuid[uuid]["eventHeader"]["traceId"]
    assert result.routed == before and set(copies.values()) == {2}
    assert any(u in by_uuid for u in copies)


@on_stack[0]
@on_stack[1]
def test_a_derived_schema_the_filtered_subject_refuses_dead_letters_its_records(
    env: RouteEnv, registry: RegistryClient
) -> None:
    """The loan-created subject already has a version whose eventHeader.traceId is a long: the
    schema derived from a raw writer whose traceId is a string cannot follow it, so the records that
    would go there are dead letters with the registry's word; the rest is routed."""
    topic = env.prefix + "loan-created"
    taken = filtered_schema()
    taken["fields"][0]["type"]["fields"].append({"name": "traceId", "type": "long", "default": 0})
    ensure_schema(registry, subject_for(topic), taken)
    evolved = with_trace_id()
    evolved_id = ensure_schema(registry, subject_for(env.raw), evolved)
    events = [make_event(i, seed=4) for i in range(200)]
    for i, e in enumerate(events):
        e["eventHeader"]["traceId"] = f"trace-{i}"
    produce(env, evolved, evolved_id, events)
    stats = route(env, 200)
    oracle = Oracle(env.filters_path.read_text())
    refused = {e["eventHeader"]["uuid"] for e in events if "loan-created" in oracle.matching_ids(e)}
    assert refused and stats.dead_lettered == len(refused)
    dlq = read_topic(env.kafka(), env.dlq)
    reasons = {dict(m.headers())["cdcrouter.error"].decode() for m in dlq}
    assert len(reasons) == 1
    (reason,) = reasons
    assert f"derived from raw schema id {evolved_id} was refused under {topic}-value" in reason
    assert read_topic(env.kafka(), topic) == []
    for other in env.filtered_topics:
        if other != topic:
            want = sum(
                1 for e in events if e["eventHeader"]["uuid"] not in refused and other in oracle.topics(e)
            )
            assert len(read_topic(env.kafka(), other)) == want


@on_stack[0]
@on_stack[1]
def test_consume_shows_new_fields_and_reports_undecodable_records_without_stopping(
    env: RouteEnv, registry: RegistryClient, capsys: Any, monkeypatch: Any
) -> None:
    evolved = with_trace_id()
    derived = derived_filtered_schema(evolved)
    topic = env.filtered_topics[0]
    derived_id = ensure_schema(registry, subject_for(topic), derived)
    parsed = fastavro.parse_schema(derived)
    events = [make_event(i, seed=5) for i in range(4)]
    values = []
    for i, e in enumerate(events):
        e["eventHeader"]["traceId"] = f"trace-{i}"
        rec = {**e, "filterMetadata": {"filterId": "f", "consumerId": "c", "filteredAt": 1}}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, rec)
        values.append(header(derived_id) + buf.getvalue())
    values.insert(2, header(2_000_000_000) + b"\x02\x04abc")  # an id the registry does not have
    values.insert(4, b"not avro")
    producer = Producer(env.kafka())
    for v in values:
        producer.produce(topic, v, b"k", partition=0)  # one partition: the order is the oracle
    assert producer.flush(30) == 0

    rows = list(tail(env.conns, topic, from_beginning=True, max_messages=6, idle_timeout=20))
    assert [r.origin.offset for r in rows] == list(range(6))  # nothing stopped the tail
    bad = {r.origin.offset: r.error for r in rows if r.event is None}
    assert set(bad) == {2, 4}
    assert "no schema with id 2000000000" in (bad[2] or "")
    assert "wire format" in (bad[4] or "")
    good = [r for r in rows if r.event is not None]
    assert [r.extras for r in good] == [{"eventHeader.traceId": f"trace-{i}"} for i in range(4)]
    assert [r.to_dict()["event"]["eventHeader"]["traceId"] for r in good] == [f"trace-{i}" for i in range(4)]
    assert all(r.to_dict()["partition"] == 0 for r in rows)

    # the same through the command, both formats
    monkeypatch.setenv("CDCROUTER_KAFKA__BOOTSTRAP_SERVERS", env.conns.kafka.bootstrap_servers)
    monkeypatch.setenv("CDCROUTER_REGISTRY__URL", env.conns.registry.url)
    assert (
        main(["consume", topic, "--from-beginning", "--max", "6", "--timeout", "20", "--format", "json"]) == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["offset"] for x in lines] == list(range(6))
    assert [x["event"]["eventHeader"]["traceId"] for x in lines if "event" in x] == [
        f"trace-{i}" for i in range(4)
    ]
    assert [x["offset"] for x in lines if "error" in x] == [2, 4]
    assert main(["consume", topic, "--from-beginning", "--max", "6", "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "+eventHeader.traceId=trace-3" in out and out.count("undecodable") == 2


# --- the evolved writer's native read (unit: no stack) ---------------------------------------------

# added fields of every Avro kind: (type, default, value maker)
ADDED: list[tuple[Any, Any, Any]] = [
    (["null", "string"], None, lambda r: None if r.random() < 0.3 else f"t{r.randrange(10**9)}"),
    ("double", 0.0, lambda r: r.uniform(-1e9, 1e9)),
    ("float", 0.0, lambda r: 0.5 * r.randrange(-100, 100)),
    ("boolean", False, lambda r: r.random() < 0.5),
    ("long", 0, lambda r: r.randrange(-(2**63), 2**63)),
    ("bytes", "", lambda r: r.randbytes(r.randrange(5))),
    ({"type": "array", "items": "string"}, [], lambda r: [str(i) for i in range(r.randrange(4))]),
    (
        {"type": "map", "values": ["null", "int"]},
        {},
        lambda r: {f"k{i}": i or None for i in range(r.randrange(4))},
    ),
    ({"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}, "A", lambda r: r.choice("ABC")),
    ({"type": "fixed", "name": "Digest", "size": 4}, "\u0000" * 4, lambda r: r.randbytes(4)),
    (
        {
            "type": "record",
            "name": "Nested",
            "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": ["null", "bytes"]}],
        },
        {"a": 0, "b": None},
        lambda r: {"a": r.randrange(-1000, 1000), "b": None if r.random() < 0.5 else b"xy"},
    ),
]


def _field(record: dict[str, Any], name: str) -> Any:
    return next(f["type"] for f in record["fields"] if f["name"] == name)


RECORDS = {  # contract record -> where it sits in the schema's JSON
    "event": lambda s: s,
    "header": lambda s: _field(s, "eventHeader"),
    "body": lambda s: _field(s, "eventBody"),
    "entity": lambda s: _field(_field(s, "eventBody"), "entities")["items"],
    "source": lambda s: _field(s, "sourceMetadata"),
}


def evolve(choices: list[tuple[str, int, int]]) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """The contract with added fields: (record, gap, kind of ADDED) each; returns the schema and
    (record, field name, kind) of every added field."""
    schema = raw_schema()
    added = []
    for n, (record, gap, k) in enumerate(choices):
        fields = RECORDS[record](schema)["fields"]
        contract = [f for f in fields if not f["name"].startswith("x")]
        at = fields.index(contract[gap]) if gap < len(contract) else len(fields)
        t = json.loads(json.dumps(ADDED[k][0]))
        if isinstance(t, dict) and "name" in t:
            t["name"] = f"{t['name']}{n}"
        fields.insert(at, {"name": f"x{n}", "type": t, "default": ADDED[k][1]})
        added.append((record, f"x{n}", k))
    return schema, added


def with_added(event: dict[str, Any], added: list[tuple[str, str, int]], rng: Any) -> dict[str, Any]:
    event = json.loads(json.dumps(event))
    places = {
        "event": [event],
        "header": [event["eventHeader"]],
        "body": [event["eventBody"]],
        "entity": event["eventBody"]["entities"],
        "source": [event["sourceMetadata"]],
    }
    for record, name, k in added:
        for place in places[record]:
            place[name] = ADDED[k][2](rng)
    return event


GAPS = {"event": 4, "header": 6, "body": 2, "entity": 4, "source": 4}
CHOICES = st.lists(
    st.sampled_from(sorted(GAPS)).flatmap(
        lambda rec: st.tuples(st.just(rec), st.integers(0, GAPS[rec] - 1), st.integers(0, len(ADDED) - 1))
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(CHOICES, st.integers(0, 10_000))
def test_the_native_read_of_an_evolved_writer_equals_fastavros_resolution(
    choices: list[tuple[str, int, int]], seed: int
) -> None:
    import random

    schema, added = evolve(choices)
    decoder = RawDecoder({41: json.dumps(schema)}.get)
    writer = decoder.writer(41)
    assert writer.problem is None and writer.projection is not None
    parsed = fastavro.parse_schema(schema)
    rng = random.Random(seed)
    for i in range(5):
        event = with_added(make_event(seed * 10 + i), added, rng)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, event)
        body = buf.getvalue()
        want = fastavro.schemaless_reader(io.BytesIO(body), parsed, parsed_raw_schema())
        got, passed, _ = decoder.decode(header(41) + body)
        assert got == want and repr(got) == repr(want)
        assert bytes(passed) == body
        for cut in (1, len(body) // 2):  # truncated: a DecodeError, never a crash
            with pytest.raises(DecodeError):
                decoder.decode(header(41) + body[:-cut])


@pytest.mark.parametrize(
    "change",
    ["swap union", "reorder", "recursive", "logical type"],
)
def test_other_evolved_shapes_are_read_by_fastavro(change: str) -> None:
    schema = raw_schema()
    fields = schema["fields"][0]["type"]["fields"]
    if change == "swap union":
        fields[4] = {"name": "eventType", "type": ["string", "null"], "default": "x"}
    elif change == "reorder":
        fields[2], fields[3] = fields[3], fields[2]
    elif change == "recursive":
        node = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
        fields.append({"name": "chain", "type": ["null", node], "default": None})
    else:
        fields[2] = {"name": "createdDate", "type": {"type": "long", "logicalType": "timestamp-millis"}}
        fields.append({"name": "traceId", "type": ["null", "string"], "default": None})
    decoder = RawDecoder({42: json.dumps(schema)}.get)
    writer = decoder.writer(42)
    assert writer.problem is None and writer.projection is None and not writer.passthrough
    event = make_event(3)
    if change == "swap union":
        event["eventHeader"]["eventType"] = "t"
    if change == "recursive":
        event["eventHeader"]["chain"] = {"next": {"next": None}}
    if change == "logical type":
        event["eventHeader"]["createdDate"] = 1_764_000_000_000
    buf = io.BytesIO()
    parsed = fastavro.parse_schema(schema)
    fastavro.schemaless_writer(buf, parsed, event)
    want = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), parsed, parsed_raw_schema())
    got, _, _ = decoder.decode(header(42) + buf.getvalue())
    assert got == want


@on_stack[0]
@on_stack[1]
def test_a_consumer_app_keeps_working_on_evolved_records(env: RouteEnv, registry: RegistryClient) -> None:
    """The guide's promise: an SDK app built on the contract handles records of a derived schema."""
    from cdcrouter.consumer import ConsumerApp

    topic = env.filtered_topics[1]
    derived = derived_filtered_schema(with_trace_id())
    derived_id = ensure_schema(registry, subject_for(topic), derived)
    parsed = fastavro.parse_schema(derived)
    events = [make_event(i, seed=8) for i in range(3)]
    producer = Producer(env.kafka())
    for i, e in enumerate(events):
        rec = {**e, "filterMetadata": {"filterId": "f", "consumerId": "c", "filteredAt": 1}}
        rec["eventHeader"] = {**e["eventHeader"], "traceId": f"trace-{i}"}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, rec)
        producer.produce(topic, header(derived_id) + buf.getvalue(), b"k", partition=0)
    assert producer.flush(30) == 0
    seen: list[Any] = []
    app = ConsumerApp(env.unique("app"), env.conns, group=env.unique("g"), retries=0)
    app.on(topic)(lambda ev: seen.append(ev))
    stats = app.run(timeout=60, max_messages=3)
    assert stats.dead_lettered == 0
    assert [ev.uuid for ev in seen] == [e["eventHeader"]["uuid"] for e in events]
    assert [ev.entity.entity_id for ev in seen] == [e["eventBody"]["entities"][0]["entityId"] for e in events]


def _mutations() -> list[tuple[str, Any]]:
    """(what, change of the contract's JSON) for the soundness test below."""

    def header_fields(s: dict[str, Any]) -> list[dict[str, Any]]:
        return s["fields"][0]["type"]["fields"]

    def entity_fields(s: dict[str, Any]) -> list[dict[str, Any]]:
        return s["fields"][1]["type"]["fields"][0]["type"]["items"]["fields"]

    return [
        ("other namespace", lambda s: s.update(namespace="com.other")),
        ("other record name", lambda s: s["fields"][0]["type"].update(name="Header2")),
        ("eventType dropped (has a default)", lambda s: header_fields(s).pop(4)),
        ("eventName dropped", lambda s: header_fields(s).pop(1)),
        ("createdDate int (promoted)", lambda s: header_fields(s)[2].update(type="int")),
        ("createdDate string", lambda s: header_fields(s)[2].update(type="string")),
        ("entityId bytes (promoted)", lambda s: entity_fields(s)[1].update(type="bytes")),
        ("eventName optional", lambda s: header_fields(s)[1].update(type=["null", "string"], default=None)),
        ("attributes of long", lambda s: entity_fields(s)[2].update(type={"type": "map", "values": "long"})),
        ("updatedAttributes dropped", lambda s: entity_fields(s).pop(2)),
        ("entities dropped", lambda s: s["fields"][1]["type"]["fields"].pop(0)),
    ]


@pytest.mark.parametrize("what,change", _mutations(), ids=[m[0] for m in _mutations()])
def test_resolution_problem_agrees_with_fastavro(what: str, change: Any) -> None:
    """No problem named means fastavro reads the records; a problem named means it cannot."""
    from cdcrouter.schemas.evolution import resolution_problem

    schema = raw_schema()
    change(schema)
    parsed = fastavro.parse_schema(schema)
    event = make_event(11)
    h, ent = event["eventHeader"], event["eventBody"]["entities"][0]
    h.pop("eventType") if "eventType" not in json.dumps(schema) else None
    if "eventName dropped" in what:
        h.pop("eventName")
    if "string" in what:
        h["createdDate"] = str(h["createdDate"])
    if "int" in what:
        h["createdDate"] = 7
    if "bytes" in what:
        ent["entityId"] = ent["entityId"].encode()
    if "of long" in what:
        ent["updatedAttributes"] = {"a": 1}
    if "updatedAttributes dropped" in what:
        ent.pop("updatedAttributes")
    if "entities dropped" in what:
        event["eventBody"] = {}
    if "optional" in what:
        h["eventName"] = None  # the branch the contract cannot read: strict means "some record"
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, event)
    problem = resolution_problem(parsed, parsed_raw_schema())
    try:
        fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), parsed, parsed_raw_schema())
        readable = True
    except Exception:
        readable = False
    assert (problem is None) == readable, problem
