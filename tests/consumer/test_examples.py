"""The loan, service and car example consumers keep correct views, started as the demo does."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from cdcrouter.consumer.examples import start_examples

from .conftest import event

pytestmark = pytest.mark.integration


def test_examples_keep_their_views_and_ignore_redeliveries(conns, topic, produce) -> None:
    schema = f"ex_{uuid.uuid4().hex[:10]}"
    topics = {"loan": topic(), "service": topic(), "car": topic()}
    dup = event(
        "LoanPaymentSubmitted", "P-1", {"loan_id": "L-1", "amount": "250.25"}, entity_type="LoanPayment"
    )
    loans = [
        dup,  # before its loan: a different key, so a different partition may deliver it first
        event(
            "LoanCreated", "L-1", {"customer_name": "Ada", "status": "ACTIVE", "loan.loanAmount": "1000.00"}
        ),
        event("LoanCreated", "L-2", {"customer_name": "Bo", "status": "PENDING", "loan.loanAmount": "500"}),
        event("LoanPaymentSubmitted", "P-2", {"loan_id": "L-1", "amount": "100"}, entity_type="LoanPayment"),
        event("LoanUpdated", "L-2", {"status": "APPROVED"}, operation="UPDATE"),
        dup,  # the same event (same uuid) delivered twice
    ]
    svc = {"entity_type": "ServiceRecord"}
    services = [
        event(
            "ServiceRecordCreated",
            "S-1",
            {
                "car_id": "C-1",
                "service_type": "oil",
                "cost": "80.5",
                "mileage": "12000",
                "serviced_on": "2026-01-05",
            },
            **svc,
        ),
        event(
            "ServiceRecordCreated",
            "S-2",
            {
                "car_id": "C-1",
                "service_type": "tires",
                "cost": "400",
                "mileage": "15000",
                "serviced_on": "2026-03-01",
            },
            **svc,
        ),
        event("ServiceRecordCreated", "S-3", {"car_id": "C-2", "service_type": "oil", "cost": "75"}, **svc),
    ]
    car = {"entity_type": "Car"}
    cars = [
        event(
            "CarCreated",
            "C-1",
            {"make": "Volvo", "model": "XC40", "price": "30000.00", "active": "true"},
            **car,
        ),
        event(
            "CarCreated", "C-2", {"make": "Volvo", "model": "V60", "price": "25000", "active": "true"}, **car
        ),
        event(
            "CarCreated", "C-3", {"make": "Fiat", "model": "500", "price": "12000", "active": "true"}, **car
        ),
        event("CarUpdated", "C-2", {"active": "false"}, operation="UPDATE", **car),
        event("CarDeleted", "C-3", {}, operation="DELETE", **car),
    ]
    produce(topics["loan"], loans)
    produce(topics["service"], services)
    produce(topics["car"], cars)

    running = start_examples(conns, schema=schema, topics=topics, prefix=f"{schema}-", batch_timeout=0.2)
    try:
        assert running.wait_for(total=len(loans) + len(services) + len(cars), timeout=60), running.errors
    finally:
        running.stop()
    try:
        assert running.stats()["loan"].duplicates == 1
        views = running.views()
        assert [(r["loan_id"], r["status"], r["payments"], r["outstanding"]) for r in views["loan"]] == [
            ("L-1", "ACTIVE", 2, Decimal("649.75")),
            ("L-2", "APPROVED", 0, Decimal("500")),
        ]
        assert [
            (r["car_id"], r["services"], r["total_cost"], r["mileage"], r["last_service"])
            for r in views["service"]
        ] == [("C-1", 2, Decimal("480.5"), 15000, "tires"), ("C-2", 1, Decimal("75"), None, "oil")]
        assert [(r["make"], r["in_stock"], r["cars"], r["stock_value"]) for r in views["car"]] == [
            ("Volvo", 1, 2, Decimal("30000.00"))
        ]
    finally:
        with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
