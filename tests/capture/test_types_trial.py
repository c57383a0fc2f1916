"""Column values a real schema holds, captured as PostgreSQL itself prints them (the oracle is a
query on the same rows), on the snapshot and the streamed paths."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline

from cdcrouter.capture.sink import read_offsets

pytestmark = [pytest.mark.integration]


def _attrs(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, str | None]]]:
    return [
        (e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["updatedAttributes"]) for e in events
    ]


def _pg(run: CaptureRun, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(run.conns.postgres.conninfo(), options=f"-c search_path={run.schema}") as conn:
        return conn.execute(query.encode()).fetchall()


def test_a_json_value_without_utf8_form_is_kept_as_text_and_capture_goes_on(capture_run: CaptureRun) -> None:
    """PostgreSQL's ``json`` (not jsonb) stores a lone surrogate escape ("\\ud800"). Flattened, it
    is a string no Avro record can hold: capture stopped at it on every start. It is now kept
    unflattened, as PostgreSQL's text, on the snapshot and the streamed paths, and the rows after
    it arrive."""
    run = capture_run
    run.sql(
        "CREATE TABLE docs (id int PRIMARY KEY, j json, note text)",
        """INSERT INTO docs VALUES (1, '{"s": "\\ud800", "ok": 1}', 'snap')""",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"docs": {}})
    run.start()
    run.sql("""INSERT INTO docs VALUES (2, '["\\udfff"]', 'lone')""")
    run.sql("""INSERT INTO docs VALUES (3, '{"pair": "\\ud83d\\ude00"}', 'after')""")
    run.sql("""UPDATE docs SET j = '{"s": "\\udbff x"}' WHERE id = 3""")
    events = run.events(expect=4)
    text = dict(_pg(run, "SELECT id, j::text FROM docs"))
    assert _attrs(events) == [
        ("SNAPSHOT", {"id": "1", "j": text[1], "note": "snap"}),
        ("INSERT", {"id": "2", "j": text[2], "note": "lone"}),
        ("INSERT", {"id": "3", "j.pair": "\N{GRINNING FACE}", "note": "after"}),
        ("UPDATE", {"id": "3", "j": text[3], "j.pair": None}),  # a key that disappeared: null
    ]


def test_alter_column_type_while_capturing_changes_the_canonical_form(capture_run: CaptureRun) -> None:
    """A column whose type changes under a running capture (text -> jsonb, text -> timestamptz)
    is canonicalised by its new type from the next change on: JSON flattened, timestamps ISO-8601
    in UTC. Capture kept the start-up types until a column name changed."""
    run = capture_run
    run.sql("CREATE TABLE docs (id int PRIMARY KEY, v text, w text)")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"docs": {}})
    run.start()
    run.sql("""INSERT INTO docs VALUES (1, '{"a": 1}', '2024-01-01 10:00:00+02')""")
    run.sql(
        "ALTER TABLE docs ALTER COLUMN v TYPE jsonb USING v::jsonb",
        "ALTER TABLE docs ALTER COLUMN w TYPE timestamptz USING w::timestamptz",
    )
    run.sql("""INSERT INTO docs VALUES (2, '{"a": {"b": 2}}', '2024-06-01 10:00:00.5+02')""")
    run.sql("""UPDATE docs SET v = '{"a": {"b": 3}, "c": [true]}' WHERE id = 2""")
    events = run.events(expect=3)
    ((b3, c0, w2),) = _pg(
        run,
        """SELECT v #>> '{a,b}', v #>> '{c,0}', to_char(w AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM docs WHERE id = 2""",
    )
    assert _attrs(events) == [
        ("INSERT", {"id": "1", "v": '{"a": 1}', "w": "2024-01-01 10:00:00+02"}),  # text, as it was
        ("INSERT", {"id": "2", "v.a.b": "2", "w": w2.replace(".500Z", ".5Z")}),
        ("UPDATE", {"id": "2", "v.a.b": b3, "v.c.0": c0}),
    ]


def test_the_sdk_reads_numeric_nan_and_infinity_as_postgresql_holds_them(capture_run: CaptureRun) -> None:
    """numeric NaN, Infinity and values past float range, as the consumer SDK reads them:
    ``decimal`` is exact or the default for NaN (``Decimal('NaN')`` broke every comparison in a
    handler), ``integer`` the default for NaN and infinities (it raised OverflowError)."""
    from decimal import Decimal

    from cdcrouter.consumer import Event

    run = capture_run
    run.sql(
        "CREATE TABLE amounts (id int PRIMARY KEY, n numeric, r float8)",
        "INSERT INTO amounts VALUES (1, 'NaN', 'NaN'), (2, 'Infinity', '-Infinity'), "
        "(3, '-123456789012345678901234567890.000', 1e308), (4, 12, 0.1)",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"amounts": {}})
    run.start()
    entities = {e.entity.entity_id: e.entity for e in map(Event.from_avro, run.events(expect=4))}
    oracle = _pg(
        run,
        "SELECT id::text, n::text, r::text, n = trunc(n) AND n NOT IN ('Infinity', '-Infinity') FROM amounts",
    )
    for eid, n, r, integral in oracle:
        entity = entities[eid]
        assert (entity.attr("n"), entity.attr("r")) == (n, r)
        want = None if n == "NaN" else Decimal(n)
        assert entity.decimal("n") == want and (want is None or entity.decimal("n") >= 0 or want < 0)
        assert entity.integer("n") == (int(Decimal(n)) if n != "NaN" and integral else None)
        assert entity.integer("r") is None or Decimal(r) == entity.integer("r")


def test_a_table_dropped_and_created_again_while_capturing_is_published_and_snapshotted(
    capture_run: CaptureRun,
) -> None:
    """PostgreSQL takes a dropped table out of the publication, and the table created again under
    its name is in none: its rows were never captured, silently, and a restart did not bring back
    those written before it. Capture now puts it back and snapshots it."""
    run = capture_run
    run.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE u (id int PRIMARY KEY, v text)")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"t": {}, "u": {}})
    run.start()
    run.sql("INSERT INTO u VALUES (1, 'first')")
    run.sql("DROP TABLE u")
    run.sql("CREATE TABLE u (id int PRIMARY KEY, v text, w int)", "INSERT INTO u VALUES (5, 'again', 1)")
    run.sql("INSERT INTO t VALUES (1, 'other table')")
    events = run.events(expect=3)
    assert [(e["sourceMetadata"]["table"], e["sourceMetadata"]["operation"]) for e in events] == [
        ("u", "INSERT"),
        ("t", "INSERT"),
        ("u", "SNAPSHOT"),  # written before capture noticed the new table: sent by its snapshot
    ]
    run.sql("INSERT INTO u VALUES (6, 'streamed', 2)")
    events = run.events(expect=4)
    oracle = {str(i): {"id": str(i), "v": v, "w": str(w)} for i, v, w in _pg(run, "SELECT id, v, w FROM u")}
    attrs = [e["eventBody"]["entities"][0]["updatedAttributes"] for e in events[2:]]
    assert attrs == [oracle["5"], oracle["6"]]
    assert events[3]["sourceMetadata"]["operation"] == "INSERT"


@pytest.mark.parametrize("identity", ["full", "default"])
def test_an_update_of_the_entity_id_is_the_old_entity_deleted_and_the_new_one_created(
    capture_run: CaptureRun, identity: str
) -> None:
    """``UPDATE … SET id = 2 WHERE id = 1`` was one ``Updated`` event under id 2 carrying only
    the id: a consumer keeping the last state per entity kept entity 1 for ever and got entity 2
    without its columns (and the Debezium engine, which reports a key change as a delete and a
    create, disagreed). It is now entity 1's ``Deleted`` and entity 2's ``Created`` with the
    whole row, in that order, as a row moved to another partition is reported."""
    run = capture_run
    run.sql("CREATE TABLE items (id int PRIMARY KEY, v text, big text)")
    tables = {"items": {}}
    name = run.topic.removeprefix("raw-")
    run.pipeline = make_pipeline(run.schema, name, tables=tables, replication={"replica_identity": identity})
    run.start()
    run.sql("INSERT INTO items SELECT 1, 'kept', string_agg(md5(g::text), '') FROM generate_series(1, 200) g")
    run.sql("UPDATE items SET id = 2 WHERE id = 1")
    run.sql("UPDATE items SET v = 'changed' WHERE id = 2")
    events = run.events(expect=4)
    ((v, big),) = _pg(run, "SELECT v, big FROM items WHERE id = 2")
    whole_old = {"id": "1", "v": "kept", "big": big}
    assert [(e["eventHeader"]["eventName"], e["eventBody"]["entities"][0]["entityId"]) for e in events] == [
        ("ItemCreated", "1"),
        ("ItemDeleted", "1"),
        ("ItemCreated", "2"),
        ("ItemUpdated", "2"),
    ]
    attrs = [a for _, a in _attrs(events)]
    if identity == "full":  # the old row is all there: the new entity gets every column
        assert attrs[1:] == [whole_old, {**whole_old, "id": "2"}, {"id": "2", "v": v}]
    else:  # the key only, and the TOASTed value PostgreSQL did not send stays unreported
        assert attrs[1:] == [{"id": "1"}, {"id": "2", "v": "kept"}, {"id": "2", "v": v}]


def test_network_addresses_are_captured_as_postgresql_prints_them(capture_run: CaptureRun) -> None:
    """macaddr and macaddr8 were refused at start-up as unsupported, although inet and cidr
    were taken: all four are scalars captured as PostgreSQL's text, on both paths."""
    run = capture_run
    cols = "i inet, c cidr, m macaddr, m8 macaddr8"
    row = "'192.168.0.1/24', '2001:db8::/32', '08-00-2B-01-02-03', '08:00:2b:01:02:03:04:05'"
    run.sql(f"CREATE TABLE hosts (id int PRIMARY KEY, {cols})", f"INSERT INTO hosts VALUES (1, {row})")
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"hosts": {}})
    run.start()
    run.sql(f"INSERT INTO hosts VALUES (2, {row})", "UPDATE hosts SET m = '0800.2b01.0204' WHERE id = 2")
    events = run.events(expect=3)
    oracle = {
        str(r[0]): dict(zip(("i", "c", "m", "m8"), r[1:], strict=True))
        for r in _pg(run, "SELECT id, i::text, c::text, m::text, m8::text FROM hosts")
    }
    assert _attrs(events) == [
        ("SNAPSHOT", {"id": "1", **oracle["1"]}),
        ("INSERT", {"id": "2", **oracle["1"]}),  # the same values
        ("UPDATE", {"id": "2", "m": oracle["2"]["m"]}),
    ]


def test_rows_of_a_partition_attached_while_capturing_are_snapshotted(capture_run: CaptureRun) -> None:
    """ATTACH PARTITION brings a table's rows into the captured partitioned table without any
    change PostgreSQL reports: they never reached Kafka. Capture now snapshots the partition."""
    run = capture_run
    run.sql(
        "CREATE TABLE sales (id int, region text, v text, PRIMARY KEY (id, region))"
        " PARTITION BY LIST (region)",
        "CREATE TABLE sales_eu PARTITION OF sales FOR VALUES IN ('eu')",
        "CREATE TABLE sales_us (id int, region text, v text, PRIMARY KEY (id, region))",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"sales": {}})
    run.start()
    run.sql("INSERT INTO sales VALUES (1, 'eu', 'streamed')")
    run.sql("INSERT INTO sales_us VALUES (2, 'us', 'before attach'), (3, 'us', 'also before')")
    run.sql("ALTER TABLE sales ATTACH PARTITION sales_us FOR VALUES IN ('us')")
    events = run.events(expect=3)
    oracle = {f"{i}:{r}": {"id": str(i), "region": r, "v": v} for i, r, v in _pg(run, "SELECT * FROM sales")}
    got = [(e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["entityId"]) for e in events]
    assert got == [("INSERT", "1:eu"), ("SNAPSHOT", "2:us"), ("SNAPSHOT", "3:us")]
    assert [a for _, a in _attrs(events)] == [oracle["1:eu"], oracle["2:us"], oracle["3:us"]]


def test_rows_of_a_partition_attached_while_capture_was_stopped_are_snapshotted_at_start(
    capture_run: CaptureRun,
) -> None:
    """A partition attached while capture is stopped was never snapshotted: its rows never
    reached Kafka. The position now records the leaf partitions capture knows, and a start
    snapshots the ones it does not (once: the next position records them)."""
    run = capture_run
    run.sql(
        "CREATE TABLE sales (id int, region text, v text, PRIMARY KEY (id, region))"
        " PARTITION BY LIST (region)",
        "CREATE TABLE sales_eu PARTITION OF sales FOR VALUES IN ('eu')",
    )
    run.pipeline = make_pipeline(run.schema, run.topic.removeprefix("raw-"), tables={"sales": {}})
    run.start()
    run.sql("INSERT INTO sales VALUES (1, 'eu', 'streamed')")
    assert len(run.events(expect=1)) == 1
    run.stop()
    run.sql(
        "CREATE TABLE sales_us (id int, region text, v text, PRIMARY KEY (id, region))",
        "INSERT INTO sales_us VALUES (2, 'us', 'before attach'), (3, 'us', 'also before')",
        "ALTER TABLE sales ATTACH PARTITION sales_us FOR VALUES IN ('us')",
    )
    run.start()
    events = run.events(expect=3)
    oracle = {f"{i}:{r}": {"id": str(i), "region": r, "v": v} for i, r, v in _pg(run, "SELECT * FROM sales")}
    got = [(e["sourceMetadata"]["operation"], e["eventBody"]["entities"][0]["entityId"]) for e in events]
    assert got == [("INSERT", "1:eu"), ("SNAPSHOT", "2:us"), ("SNAPSHOT", "3:us")]
    assert [a for _, a in _attrs(events)] == [oracle["1:eu"], oracle["2:us"], oracle["3:us"]]
    run.stop()
    query = "SELECT c.oid::int FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
    leaves = tuple(sorted(r[0] for r in _pg(run, f"{query} AND c.relname IN ('sales_eu', 'sales_us')")))
    position = read_offsets(run.conns, run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot)
    assert position is not None and position.partitions == {"sales": leaves}  # no second snapshot
