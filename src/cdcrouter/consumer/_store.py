"""Idempotency stores: skip an event whose ``eventHeader.uuid`` was already processed.

Kafka delivers at least once: a consumer that dies after its handler ran but before the offset
commit sees the record again. A store remembers processed uuids. The PostgreSQL store goes one
step further: it records the uuid *in the same database transaction* as the handler's own writes
(the handler gets that connection as ``ctx.conn``). Either both commit or neither does, so a
redelivered event is skipped exactly when its effects are already there: effectively-once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from cdcrouter.consumer._errors import ConsumerError

Work = Callable[[Any], None]
BatchWork = Callable[[Any, set[str]], None]


class IdempotencyStore(Protocol):
    """Run ``work`` once per ``(consumer, key)``; ``work`` gets the store's resource (or ``None``)."""

    def run_once(self, consumer: str, key: str, work: Work) -> bool:
        """Run ``work`` unless ``key`` was processed; return ``False`` when skipped as a duplicate."""
        ...

    def run_batch(self, consumer: str, keys: list[str], work: BatchWork) -> set[str]:
        """Run ``work(resource, new_keys)`` once, atomically with recording ``new_keys``; return them."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """In-process set of uuids: dedupes redeliveries within one process lifetime only (tests, demos)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def run_once(self, consumer: str, key: str, work: Work) -> bool:
        with self._lock:
            if (consumer, key) in self._seen:
                return False
        work(None)
        with self._lock:
            self._seen.add((consumer, key))
        return True

    def run_batch(self, consumer: str, keys: list[str], work: BatchWork) -> set[str]:
        with self._lock:
            new = {k for k in keys if (consumer, k) not in self._seen}
        work(None, new)
        with self._lock:
            self._seen.update((consumer, k) for k in new)
        return new

    def close(self) -> None:
        pass


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class PostgresStore:
    """Processed uuids in a PostgreSQL table, written in the handler's own transaction.

    Args:
        conninfo: a libpq connection string (``connections.postgres.conninfo()``).
        table: the table (``schema.table`` allowed), created if missing.

    The handler must use ``ctx.conn`` for its writes to get effectively-once; writes through any
    other connection are only at-least-once.
    """

    def __init__(self, conninfo: str, table: str = "cdcrouter_processed_events") -> None:
        import psycopg

        if not _IDENT.match(table):
            raise ConsumerError(f"invalid idempotency table name {table!r}", hint="use [schema.]name")
        self.table = table
        self._conninfo = conninfo
        self.conn = self._connect()
        try:
            with self.conn.transaction():
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} ("
                    " consumer text NOT NULL, event_uuid text NOT NULL,"
                    " processed_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (consumer, event_uuid))"
                )
        except psycopg.errors.UniqueViolation:
            pass  # another consumer created it at the same moment

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._conninfo, autocommit=False)
        except psycopg.Error as exc:
            raise ConsumerError(
                f"cannot connect to PostgreSQL for the idempotency store: {exc}".strip(),
                hint="check connections.postgres / CDCROUTER_POSTGRES__* (cdcrouter stack up starts one)",
            ) from exc

    def run_once(self, consumer: str, key: str, work: Work) -> bool:
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()  # the server restarted: the retry gets a fresh connection
        with self.conn.transaction():
            cur = self.conn.execute(
                f"INSERT INTO {self.table} (consumer, event_uuid) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (consumer, key),
            )
            if cur.fetchone() is None:
                return False
            work(self.conn)  # an exception rolls back the marker together with the handler's writes
        return True

    def run_batch(self, consumer: str, keys: list[str], work: BatchWork) -> set[str]:
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()
        with self.conn.transaction():
            rows = self.conn.execute(
                f"INSERT INTO {self.table} (consumer, event_uuid) SELECT %s, k FROM unnest(%s::text[]) AS k"
                " ON CONFLICT DO NOTHING RETURNING event_uuid",
                (consumer, keys),
            ).fetchall()
            new = {r[0] for r in rows}
            work(self.conn, new)
        return new

    def prune(self, older_than: timedelta, consumer: str | None = None) -> int:
        """Forget uuids recorded more than ``older_than`` ago; returns how many.

        Safe once no redelivery can be that old: keep ``older_than`` above the source topic's
        retention (and any replay window), e.g. run it daily with the topic's retention plus a day.
        """
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()
        with self.conn.transaction():
            cur = self.conn.execute(
                f"DELETE FROM {self.table} WHERE processed_at < now() - %s"
                + (" AND consumer = %s" if consumer else ""),
                (older_than, consumer) if consumer else (older_than,),
            )
        return cur.rowcount

    def processed(self, consumer: str) -> int:
        """How many uuids ``consumer`` has recorded (for tests and the demo summary)."""
        with self.conn.transaction():
            row = self.conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE consumer = %s", (consumer,)
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()
