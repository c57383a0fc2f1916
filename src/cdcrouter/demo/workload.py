"""A realistic stream of car, loan and service changes against the sample domain.

The generator is a seeded state machine over what already exists (cars get loans, loans get
approved and paid, cars get serviced), so the captured events look like a real application's:
inserts, updates of plain and JSONB columns, deletes, multi-row transactions and outbox events.
Every id carries the run id, so several demo runs on one database never collide.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from psycopg import sql

MAKES = {
    "Toyota": ["Corolla", "RAV4", "Camry"],
    "Ford": ["F-150", "Mustang", "Escape"],
    "Tesla": ["Model 3", "Model Y"],
    "Honda": ["Civic", "CR-V"],
    "BMW": ["X5", "330i"],
}
COLORS = ["black", "white", "silver", "red", "blue"]
SERVICES = ["OIL_CHANGE", "TIRE_ROTATION", "BRAKE_SERVICE", "INSPECTION", "BATTERY_REPLACEMENT"]
CUSTOMERS = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Ken Thompson",
]


@dataclass
class WorkloadStats:
    """What the generator wrote, by kind of change (one row change each)."""

    changes: Counter[str] = field(default_factory=Counter)
    transactions: int = 0

    @property
    def total(self) -> int:
        return sum(self.changes.values())


class Workload:
    """Writes changes into the sample tables of ``schema``.

    Args:
        conninfo: libpq connection string.
        schema: the PostgreSQL schema holding the sample tables.
        run_id: a short tag put into every id of this run.
        seed: random seed, so a run can be repeated.
    """

    def __init__(self, conninfo: str, schema: str, run_id: str, seed: int = 7) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.run_id = run_id
        self.rng = random.Random(seed)
        self.stats = WorkloadStats()
        self._cars: list[str] = []
        self._loans: dict[str, Decimal] = {}  # loan id -> outstanding amount
        self._services: list[str] = []
        self._seq = 0

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.run_id}-{self._seq:06d}"

    def run(
        self,
        changes: int,
        rate: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> WorkloadStats:
        """Write about ``changes`` row changes, at most ``rate`` changes/s if given."""
        started = time.monotonic()
        with psycopg.connect(self.conninfo) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.commit()
            while self.stats.total < changes:
                before = self.stats.total
                with conn.transaction():
                    self._step(conn)
                self.stats.transactions += 1
                if progress:
                    progress(self.stats.total - before)
                if rate:
                    ahead = self.stats.total / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        return self.stats

    # ------------------------------------------------------------------ one business step

    def _step(self, conn: psycopg.Connection) -> None:
        roll = self.rng.random()
        if not self._cars or roll < 0.18:
            self._new_car(conn)
        elif roll < 0.33:
            self._new_loan(conn)
        elif roll < 0.45 and self._loans:
            self._approve_or_reprice_loan(conn)
        elif roll < 0.65 and self._payable():
            self._payment(conn)
        elif roll < 0.82:
            self._service(conn)
        elif roll < 0.90:
            self._reprice_car(conn)
        elif roll < 0.95 and self._services:
            self._delete_service(conn)
        else:
            self._outbox(conn)

    def _count(self, kind: str, n: int = 1) -> None:
        self.stats.changes[kind] += n

    def _new_car(self, conn: psycopg.Connection) -> None:
        make = self.rng.choice(list(MAKES))
        car = self._id("car")
        conn.execute(
            "INSERT INTO car_entities (id, vin, make, model, model_year, price, color) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                car,
                f"VIN{self.rng.randrange(10**13):013d}",
                make,
                self.rng.choice(MAKES[make]),
                self.rng.randrange(2015, 2027),
                Decimal(self.rng.randrange(15_000, 95_000)) + Decimal("0.99"),
                self.rng.choice(COLORS),
            ),
        )
        self._cars.append(car)
        self._count("car inserted")

    def _new_loan(self, conn: psycopg.Connection) -> None:
        car = self.rng.choice(self._cars)
        loan = self._id("loan")
        amount = Decimal(self.rng.randrange(5_000, 80_000))
        details = {
            "loanAmount": str(amount),
            "terms": {"months": self.rng.choice([24, 36, 48, 60, 72])},
            "currency": "USD",
        }
        conn.execute(
            "INSERT INTO loan_entities (id, car_id, customer_name, status, loan, interest_rate) "
            "VALUES (%s, %s, %s, 'PENDING', %s, %s)",
            (
                loan,
                car,
                self.rng.choice(CUSTOMERS),
                json.dumps(details),
                Decimal(self.rng.randrange(250, 1200)) / 10_000,
            ),
        )
        self._loans[loan] = amount
        self._count("loan inserted")

    def _approve_or_reprice_loan(self, conn: psycopg.Connection) -> None:
        loan = self.rng.choice(list(self._loans))
        if self.rng.random() < 0.6:
            conn.execute(
                "UPDATE loan_entities SET status = 'APPROVED', approved = true, updated_at = now() "
                "WHERE id = %s",
                (loan,),
            )
        else:  # a JSONB change: the flattened key loan.loanAmount changes
            amount = self._loans[loan] + self.rng.randrange(-2_000, 5_000)
            self._loans[loan] = max(amount, Decimal(1_000))
            conn.execute(
                "UPDATE loan_entities SET loan = jsonb_set(loan, '{loanAmount}', to_jsonb(%s::text)), "
                "updated_at = now() WHERE id = %s",
                (str(self._loans[loan]), loan),
            )
        self._count("loan updated")

    def _payable(self) -> list[str]:
        return [loan for loan, outstanding in self._loans.items() if outstanding > 2_500]

    def _payment(self, conn: psycopg.Connection) -> None:
        """A monthly payment, only on loans that still owe more than one."""
        loan = self.rng.choice(self._payable())
        amount = (Decimal(self.rng.randrange(200, 2_500)) + Decimal("0.50")).quantize(Decimal("0.01"))
        conn.execute(
            "INSERT INTO loan_payments (id, loan_id, amount, method) VALUES (%s, %s, %s, %s)",
            (self._id("pay"), loan, amount, self.rng.choice(["ACH", "CARD", "WIRE"])),
        )
        self._loans[loan] -= amount
        self._count("payment inserted")

    def _service(self, conn: psycopg.Connection) -> None:
        car = self.rng.choice(self._cars)
        service = self._id("svc")
        kind = self.rng.choice(SERVICES)
        conn.execute(
            "INSERT INTO service_records (id, car_id, service_type, cost, mileage, serviced_on, details) "
            "VALUES (%s, %s, %s, %s, %s, current_date, %s)",
            (
                service,
                car,
                kind,
                Decimal(self.rng.randrange(40, 1_800)) + Decimal("0.00"),
                self.rng.randrange(1_000, 150_000),
                json.dumps(
                    {"technician": self.rng.choice(["kim", "raj", "ola"]), "warranty": kind != "INSPECTION"}
                ),
            ),
        )
        self._services.append(service)
        self._count("service inserted")

    def _reprice_car(self, conn: psycopg.Connection) -> None:
        """A multi-row transaction: a price change on up to three cars at once."""
        cars = self.rng.sample(self._cars, k=min(3, len(self._cars)))
        for car in cars:
            conn.execute(
                "UPDATE car_entities SET price = round(price * %s, 2), updated_at = now() WHERE id = %s",
                (Decimal(self.rng.randrange(90, 106)) / 100, car),
            )
        self._count("car updated", len(cars))

    def _delete_service(self, conn: psycopg.Connection) -> None:
        service = self._services.pop(self.rng.randrange(len(self._services)))
        conn.execute("DELETE FROM service_records WHERE id = %s", (service,))
        self._count("service deleted")

    def _outbox(self, conn: psycopg.Connection) -> None:
        """An event the application writes itself (no table row behind it)."""
        loan = self.rng.choice(list(self._loans)) if self._loans else None
        if loan is None:
            return self._new_car(conn)
        entities = [
            {
                "entityType": "Loan",
                "entityId": loan,
                "updatedAttributes": {"loan.reminderChannel": self.rng.choice(["sms", "email"])},
            }
        ]
        conn.execute(
            "INSERT INTO business_events (event_name, event_type, entities) VALUES (%s, %s, %s)",
            ("LoanPaymentReminderSent", "NOTIFICATION", json.dumps(entities)),
        )
        self._count("outbox event")
        return None
