"""Write workloads whose end state the tests know without asking the code under test."""

from __future__ import annotations

import time

import psycopg


def write_car_rounds(
    conn: psycopg.Connection, *, cars: int, rounds: int, per_txn: int, pause_s: float
) -> None:
    """Insert ``cars`` rows ``C0000``.. into ``car_entities`` (``model_year`` 0), then ``rounds``
    rounds of updates setting ``model_year`` to the round, ``per_txn`` rows a transaction and a pause
    of ``pause_s`` after each update transaction (it sets how long the stream lasts, so a kill can
    land mid-way). Every car then has the history 0, 1, .., ``rounds`` in commit order:
    ``cars * (rounds + 1)`` changes."""
    for start in range(0, cars, per_txn):
        with conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO car_entities (id, vin, make, model, model_year) VALUES (%s, 'V', 'M', 'X', 0)",
                [(f"C{i:04d}",) for i in range(start, start + per_txn)],
            )
    for r in range(1, rounds + 1):
        for start in range(0, cars, per_txn):
            with conn.transaction():
                conn.execute(
                    "UPDATE car_entities SET model_year = %s WHERE id >= %s AND id < %s",
                    (r, f"C{start:04d}", f"C{start + per_txn:04d}"),
                )
            time.sleep(pause_s)
