"""Embedded capture on the real stack: each change yields exactly the expected Avro records."""

from __future__ import annotations

import random
import string

import pytest
from capture_helpers import CaptureRun, make_pipeline, strip_volatile

from cdcrouter.capture import CaptureEngine

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18

T0 = "2024-05-01 10:00:00+00"


def _event(name: str, etype: str, eid: str, attrs: dict, table: str, op: str, event_type=None) -> dict:
    return {
        "eventHeader": {"eventName": name, "eventType": event_type},
        "eventBody": {"entities": [{"entityType": etype, "entityId": eid, "updatedAttributes": attrs}]},
        "sourceMetadata": {"table": table, "operation": op},
    }


CAR_ROW = {
    "id": "C1",
    "vin": "VIN1",
    "make": "Volvo",
    "model": "XC40",
    "model_year": "2023",
    "price": "41999.90",
    "color": None,
    "active": "true",
    "notes": None,
    "created_at": "2024-05-01T10:00:00Z",
    "updated_at": "2024-05-01T10:00:00Z",
}


def _insert_car(run: CaptureRun, cid: str = "C1") -> None:
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model, model_year, price, created_at, updated_at) "
        f"VALUES ('{cid}', 'VIN1', 'Volvo', 'XC40', 2023, 41999.90, '{T0}', '{T0}')"
    )


def test_insert_update_delete_and_outbox(capture_run: CaptureRun) -> None:
    run = capture_run
    _insert_car(run, "C0")  # existing before capture starts: arrives as a SNAPSHOT event
    run.start()
    _insert_car(run)
    run.sql(
        "INSERT INTO loan_entities (id, car_id, customer_name, loan, interest_rate, created_at, updated_at) "
        "VALUES ('L1', 'C1', 'Ann', '{\"loanAmount\": 25000.50, \"terms\": {\"months\": 60}}', 0.0425, "
        f"'{T0}', '{T0}')"
    )
    run.sql("UPDATE loan_entities SET loan = jsonb_set(loan, '{loanAmount}', '26000.00'), approved = true")
    run.sql(
        "INSERT INTO business_events (event_name, event_type, entities) VALUES ('LoanPaymentSubmitted', "
        '\'payment\', \'[{"entityType": "Loan", "entityId": "L1", '
        '"updatedAttributes": {"payment": {"amount": 512.25}}}]\')'
    )
    run.sql("DELETE FROM loan_entities WHERE id = 'L1'")
    got = [strip_volatile(e) for e in run.events(expect=6)]
    loan_row = {
        "id": "L1",
        "car_id": "C1",
        "customer_name": "Ann",
        "status": "PENDING",
        "loan.loanAmount": "25000.50",
        "loan.terms.months": "60",
        "interest_rate": "0.0425",
        "approved": "false",
        "documents": None,
        "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z",
    }
    deleted_row = {**loan_row, "loan.loanAmount": "26000.00", "approved": "true"}
    assert got == [
        _event("CarCreated", "Car", "C0", {**CAR_ROW, "id": "C0"}, "car_entities", "SNAPSHOT"),
        _event("CarCreated", "Car", "C1", CAR_ROW, "car_entities", "INSERT"),
        _event("LoanCreated", "Loan", "L1", loan_row, "loan_entities", "INSERT"),
        _event(
            "LoanUpdated",
            "Loan",
            "L1",
            {"id": "L1", "loan.loanAmount": "26000.00", "approved": "true"},
            "loan_entities",
            "UPDATE",
        ),
        {
            "eventHeader": {"eventName": "LoanPaymentSubmitted", "eventType": "payment"},
            "eventBody": {
                "entities": [
                    {
                        "entityType": "Loan",
                        "entityId": "L1",
                        "updatedAttributes": {"payment.amount": "512.25"},
                    }
                ]
            },
            "sourceMetadata": {"table": "business_events", "operation": "OUTBOX"},
        },
        _event("LoanDeleted", "Loan", "L1", deleted_row, "loan_entities", "DELETE"),
    ]


@pytest.mark.parametrize("identity", ["full", "default"])
def test_unchanged_toasted_column_is_not_reported(capture_run: CaptureRun, identity: str) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema, run.topic.removeprefix("raw-"), replication={"replica_identity": identity}
    )
    big = "".join(random.choices(string.ascii_letters + string.digits, k=20_000))  # incompressible: TOASTed
    run.sql(
        "INSERT INTO car_entities (id, vin, make, model, created_at, updated_at) "
        f"VALUES ('C1', 'V', 'Saab', '900', '{T0}', '{T0}')"
    )
    run.start()
    run.sql(
        "INSERT INTO loan_entities (id, car_id, customer_name, documents, created_at, updated_at) "
        f"VALUES ('L1', 'C1', 'Ann', %s, '{T0}', '{T0}')",
        params=(big,),
    )
    run.sql("UPDATE loan_entities SET status = 'APPROVED' WHERE id = 'L1'")
    events = run.events(expect=3)
    assert [e["sourceMetadata"]["operation"] for e in events] == ["SNAPSHOT", "INSERT", "UPDATE"]
    assert events[1]["eventBody"]["entities"][0]["updatedAttributes"]["documents"] == big
    update = events[2]["eventBody"]["entities"][0]["updatedAttributes"]
    assert "documents" not in update, "an unchanged TOASTed value must not be reported (not even as null)"
    if identity == "full":
        assert update == {"id": "L1", "status": "APPROVED"}
    else:  # no old row: every column PostgreSQL sent, still without the unsent TOASTed one
        assert update["status"] == "APPROVED" and update["id"] == "L1" and update["customer_name"] == "Ann"


def test_multi_row_transaction_keeps_order_and_commit_time(capture_run: CaptureRun) -> None:
    run = capture_run
    run.start()
    _insert_car(run)
    run.sql(
        "INSERT INTO loan_entities (id, car_id, customer_name) VALUES ('L1', 'C1', 'A'), ('L2', 'C1', 'B')",
        "INSERT INTO loan_payments (id, loan_id, amount) VALUES ('P1', 'L1', 10.00)",
        "UPDATE loan_entities SET status = 'ACTIVE' WHERE id = 'L2'",
        "INSERT INTO service_records (id, car_id, service_type, cost, details) "
        "VALUES ('S1', 'C1', 'oil', 89.5, '{\"parts\": [\"filter\", \"oil\"], \"ok\": true}')",
    )
    events = run.events(expect=6)[1:]
    assert [(e["eventHeader"]["eventName"], e["eventBody"]["entities"][0]["entityId"]) for e in events] == [
        ("LoanCreated", "L1"),
        ("LoanCreated", "L2"),
        ("LoanPaymentSubmitted", "P1"),
        ("LoanUpdated", "L2"),
        ("ServiceRecordCreated", "S1"),
    ]
    assert len({e["eventHeader"]["createdDate"] for e in events}) == 1, "one transaction, one commit time"
    assert len({e["eventHeader"]["uuid"] for e in events}) == 5
    svc = events[-1]["eventBody"]["entities"][0]["updatedAttributes"]
    assert (svc["cost"], svc["details.parts.0"], svc["details.parts.1"], svc["details.ok"]) == (
        "89.50",
        "filter",
        "oil",
        "true",
    )


def test_restart_resumes_after_the_committed_position(capture_run: CaptureRun) -> None:
    run = capture_run
    run.start()
    _insert_car(run, "C1")
    assert len(run.events(expect=1)) == 1
    run.stop()
    _insert_car(run, "C2")  # made while capture is down
    run.start()
    _insert_car(run, "C3")
    events = run.events(expect=3)
    assert [e["eventBody"]["entities"][0]["entityId"] for e in events] == ["C1", "C2", "C3"]
    assert len({e["eventHeader"]["uuid"] for e in events}) == 3


def test_malformed_outbox_row_goes_to_the_dead_letter_topic(capture_run: CaptureRun) -> None:
    run = capture_run
    engine: CaptureEngine = run.start()
    run.sql("INSERT INTO business_events (event_name, entities) VALUES ('Broken', '[]')")
    _insert_car(run)
    assert [e["eventHeader"]["eventName"] for e in run.events(expect=1)] == ["CarCreated"]
    assert engine.stats.dead_letters == 1
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            **run.conns.kafka.to_librdkafka(),
            "group.id": "dlq-" + run.schema,
            "isolation.level": "read_committed",
        }
    )
    c.assign([TopicPartition(run.pipeline.raw_topic.dlq_topic, 0, 0)])
    msg = c.poll(10)
    c.close()
    assert msg is not None and b"non-empty JSON array" in msg.value()
