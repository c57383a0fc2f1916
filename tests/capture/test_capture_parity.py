"""Both engines, same changes: identical raw-business-events records (produce/commit times aside).

The Debezium engine is the real Debezium PostgreSQL connector on the stack's Kafka Connect plus
cdcrouter's normalising stage; the embedded engine reads its own slot. Even the event uuids
agree: both derive them from the change's WAL position.
"""

from __future__ import annotations

import contextlib
import random
import string
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline, read_topic

from cdcrouter.capture import debezium
from cdcrouter.capture.pipeline import Pipeline
from cdcrouter_testing.slots import wait_slot_active

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("postgres", "kafka", "registry", "connect")]


def _wait_slot_active(run: CaptureRun, slot: str, timeout_s: float = 60) -> None:
    wait_slot_active(run.conns.postgres.conninfo(), slot, timeout_s=timeout_s, who="Debezium")


def _comparable(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per (table, entity), in order, without the times that legitimately differ.

    Debezium writes one topic per table, so only the order within a table is comparable: an
    outbox event and a table change of the same entity may interleave differently.
    """
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        e = {
            **e,
            "eventHeader": {
                k: v for k, v in e["eventHeader"].items() if k not in ("createdDate", "savedDate")
            },
        }
        e["sourceMetadata"] = {k: v for k, v in e["sourceMetadata"].items() if k != "timestamp"}
        ent = e["eventBody"]["entities"][0]
        out[f"{e['sourceMetadata']['table']}/{ent['entityType']}/{ent['entityId']}"].append(e)
    return dict(out)


def records_of_both(
    run: CaptureRun, dbz_pipeline: Pipeline, errors: list[BaseException], expected: int
) -> list[dict[str, Any]]:
    """Wait for ``expected`` records from each engine, assert they agree; the embedded ones."""
    embedded = [e for _, e in read_topic(run.conns, run.topic, expect=expected)]
    dbz = [e for _, e in read_topic(run.conns, dbz_pipeline.raw_topic.name, expect=expected, timeout_s=180)]
    assert not errors, f"the normalising stage failed: {errors[0]!r}"
    status = debezium.ConnectClient(run.conns).status(debezium.connector_name(dbz_pipeline))
    assert len(dbz) == expected, f"Debezium delivered {len(dbz)}/{expected}; connector: {status}"
    assert len(embedded) == expected, embedded
    assert _comparable(dbz) == _comparable(embedded)
    return embedded


@contextlib.contextmanager
def both_engines(run: CaptureRun, **overrides: Any) -> Iterator[tuple[Pipeline, list[BaseException]]]:
    """The embedded engine on ``run`` and Debezium plus the normalising stage on the same tables
    (``snapshot: never``, each with its own raw topic). Yields the Debezium pipeline and the
    stage's errors; stops and removes everything afterwards."""
    base = run.topic.removeprefix("raw-")
    run.pipeline = make_pipeline(run.schema, base, replication={"snapshot": "never"}, **overrides)
    dbz_pipeline = make_pipeline(
        run.schema,
        base,
        replication={"snapshot": "never"},
        raw_topic={"name": f"raw-{base}-dbz", "partitions": 1},
        **overrides,
    )
    run.start()
    debezium.deploy(dbz_pipeline, run.conns)
    stop = threading.Event()
    normalizer = debezium.Normalizer(dbz_pipeline, run.conns)
    errors: list[BaseException] = []

    def normalize() -> None:
        try:
            normalizer.run(stop)
        except BaseException as exc:  # reported by the caller's assertion
            errors.append(exc)

    worker = threading.Thread(target=normalize, daemon=True)
    try:
        debezium.wait_running(run.conns, debezium.connector_name(dbz_pipeline))
        _wait_slot_active(run, debezium.debezium_slot(dbz_pipeline))
        worker.start()
        yield dbz_pipeline, errors
    finally:
        stop.set()
        worker.join(30) if worker.is_alive() else None
        debezium.undeploy(dbz_pipeline, run.conns)
        run.stop()  # dbz_pipeline names the same slot as the embedded run: stop that first
        prefix = debezium.topic_prefix(dbz_pipeline)
        raw = dbz_pipeline.raw_topic
        drop_capture_objects(
            run.conns,
            dbz_pipeline,
            None,
            [*debezium.table_topics(dbz_pipeline), f"__debezium-heartbeat.{prefix}", raw.offsets_topic],
        )


def test_embedded_and_debezium_give_identical_records(capture_run: CaptureRun, stack: Any) -> None:
    run = capture_run
    with both_engines(run) as (dbz_pipeline, errors):
        big = "".join(random.choices(string.ascii_letters, k=20_000))
        run.sql(
            "INSERT INTO car_entities (id, vin, make, model, model_year, price, active, created_at, "
            "updated_at) VALUES ('C1', 'V1', 'Volvo', 'XC40', 2023, 41999.90, true, "
            "'2024-05-01 10:00:00.25+02', now())"
        )
        run.sql(
            "INSERT INTO loan_entities (id, car_id, customer_name, loan, interest_rate, documents) VALUES "
            "('L1', 'C1', 'Ann', '{\"loanAmount\": 25000.50, \"terms\": {\"months\": 60}, \"tags\": []}', "
            "0.0425, %s)",
            params=(big,),
        )
        run.sql(
            "UPDATE loan_entities SET loan = jsonb_set(loan, '{loanAmount}', '26000.00'), approved = true"
        )
        run.sql(
            "INSERT INTO loan_payments (id, loan_id, amount) VALUES ('P1', 'L1', 10.00), ('P2', 'L1', 20.5)",
            "INSERT INTO service_records (id, car_id, service_type, cost, mileage, serviced_on, details) "
            "VALUES ('S1', 'C1', 'oil', 89.5, 12000, '2024-06-01', "
            '\'{"ok": true, "parts": ["filter"]}\')',
            "UPDATE car_entities SET color = 'red', notes = NULL WHERE id = 'C1'",
        )
        run.sql(
            "INSERT INTO business_events (event_name, event_type, entities) VALUES ('LoanPaymentSubmitted', "
            '\'payment\', \'[{"entityType": "Loan", "entityId": "L1", "updatedAttributes": {"a": 1.50}}]\')'
        )
        run.sql("DELETE FROM loan_payments WHERE id = 'P2'")
        records_of_both(run, dbz_pipeline, errors, expected=9)


def test_debezium_follows_a_column_type_changed_while_running(capture_run: CaptureRun, stack: Any) -> None:
    """ALTER COLUMN TYPE under running engines (text -> jsonb, timestamptz, date): the normalising
    stage canonicalised new values by the types it read at start-up (a jsonb value as text, a date
    as Debezium's day count), while the embedded engine follows the new type (7950a17). It now
    reads each record's types from the schema Debezium sends with it, so both engines agree."""
    run = capture_run
    run.sql("CREATE TABLE docs (id int PRIMARY KEY, v text, w text, d text)")
    with both_engines(run, tables={"docs": {}}) as (dbz_pipeline, errors):
        run.sql("""INSERT INTO docs VALUES (1, '{"a": 1}', '2024-01-01 10:00:00+02', '2024-01-31')""")
        run.sql(
            "ALTER TABLE docs ALTER COLUMN v TYPE jsonb USING v::jsonb",
            "ALTER TABLE docs ALTER COLUMN w TYPE timestamptz USING w::timestamptz",
            "ALTER TABLE docs ALTER COLUMN d TYPE date USING d::date",
        )
        run.sql(
            """INSERT INTO docs VALUES (2, '{"a": {"b": 2}}', '2024-06-01 10:00:00.5+02', '1999-12-31')"""
        )
        run.sql("""UPDATE docs SET v = '{"a": {"b": 3}}', d = '2000-02-29' WHERE id = 2""")
        embedded = records_of_both(run, dbz_pipeline, errors, expected=3)
        assert [e["eventBody"]["entities"][0]["updatedAttributes"] for e in embedded] == [
            {"id": "1", "v": '{"a": 1}', "w": "2024-01-01 10:00:00+02", "d": "2024-01-31"},  # text, as it was
            {"id": "2", "v.a.b": "2", "w": "2024-06-01T08:00:00.5Z", "d": "1999-12-31"},
            {"id": "2", "v.a.b": "3", "d": "2000-02-29"},
        ]
