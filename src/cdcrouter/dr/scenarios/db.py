"""Scenario ``db-primary``: ``kill -9`` of the primary database, its standby promoted.

The drill's pipeline runs against a PostgreSQL of its own, a primary and a synchronous physical
standby (:class:`cdcrouter.dr.standby.Standby`, in a scratch dir: the shared stack's server is
never killed). Capture, the routers, the consumer app and the workload all connect to both servers
in libpq's multi-host form with ``target_session_attrs=primary``, so once the standby is promoted
they find it on their own; nothing is restarted.

On PostgreSQL 17+ the slot is a failover slot and the standby keeps a synchronised copy: capture
resumes from it (0 lost, 0 doubled). On 15-16 the slot does not survive the promotion: capture
stops with the guided error, and the recovery step runs the ``capture run --resnapshot`` it names;
the rows sent again by that snapshot show up as changes under a second uuid (the report's
``duplicate_changes``), which is what a 15-16 failover costs.
"""

from __future__ import annotations

import contextlib
import time

import psycopg

from cdcrouter.config import Connections
from cdcrouter.dr import processes
from cdcrouter.dr.drill import DrillContext
from cdcrouter.dr.standby import Standby, kill_primary, private_primary_and_standby
from cdcrouter.errors import CdcrouterError

FAILOVER_SLOTS_SINCE = 17


class DbPrimaryKill:
    name = "db-primary"

    def __init__(self, pg_version: str | None = None, promote_after_s: float = 3.0, **_: object) -> None:
        self.pg_version = pg_version or "18"
        # the time a failover manager (or a provider) takes to notice and promote; meanwhile the only
        # server answering is a standby, which capture must not mistake for the primary
        self.promote_after_s = promote_after_s
        self.failover_slots = int(self.pg_version) >= FAILOVER_SLOTS_SINCE
        self.description = (
            f"kill -9 of the primary PostgreSQL {self.pg_version}, its synchronous standby promoted "
            f"{promote_after_s:g} s later"
            + ("" if self.failover_slots else "; no failover slots before 17: --resnapshot bridges the gap")
        )
        self._servers = contextlib.ExitStack()
        self.standby: Standby | None = None

    def prepare(self, ctx: DrillContext) -> None:
        # the drill made its table on the stack's database: it lives on the drill's own primary instead
        ctx.run.drop_database_objects(ctx.conns.postgres.conninfo())
        self.standby = self._servers.enter_context(private_primary_and_standby(self.pg_version, ctx.step))
        ctx.conns = ctx.conns.model_copy(update={"postgres": self.standby.failover_settings()})
        ctx.run.create_table(ctx.conns)
        self._pipeline_options(ctx)
        ctx.run.create_topics_and_schemas(ctx.conns)
        ctx.start_capture()
        ctx.start_router("router-1")
        ctx.start_view()
        ctx.step("started capture, router-1 and the consumer app, all connected to host=primary,standby")
        self._await_slot(ctx)

    def _await_slot(self, ctx: DrillContext, timeout_s: float = 90.0) -> None:
        """Until capture has made its slot: rows written before it would be snapshotted and streamed
        (a chunked snapshot may send a row it already streamed), which is no failover's doing."""
        deadline = time.monotonic() + timeout_s
        while True:
            ctx.check_processes()
            with psycopg.connect(ctx.conns.postgres.conninfo(), connect_timeout=5) as conn:
                found = conn.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (ctx.run.slot,)
                ).fetchone()
            if found:
                ctx.step(f"capture created slot {ctx.run.slot}")
                return
            if time.monotonic() > deadline:
                raise CdcrouterError(f"capture did not create slot {ctx.run.slot} within {timeout_s:.0f} s")
            time.sleep(0.3)

    def _pipeline_options(self, ctx: DrillContext) -> None:
        """A failover slot (17+), or a snapshot to bridge a lost slot with (15-16)."""
        path = ctx.run.pipeline_file
        text = path.read_text()
        options = "snapshot: never, failover: true" if self.failover_slots else "snapshot: initial"
        if "snapshot: never" not in text:
            raise CdcrouterError(f"unexpected drill pipeline file {path}: no `snapshot: never` to replace")
        path.write_text(text.replace("snapshot: never", options))

    def surviving(self, ctx: DrillContext) -> Connections:
        return ctx.conns  # the same Kafka; PostgreSQL: whichever server is the primary

    def inject(self, ctx: DrillContext) -> None:
        assert self.standby is not None
        if self.failover_slots:  # a copy still catching up would be dropped at promotion
            state = self.standby.wait_slot_synced(ctx.run.slot, timeout_s=90)
            ctx.step(
                f"the standby holds a synchronised copy of slot {ctx.run.slot} at {state['confirmed_flush']}"
            )
            ctx.failed_at = time.time()
        pid = kill_primary(self.standby.stack)
        ctx.step(f"kill -9 of the primary PostgreSQL (pid {pid}) and its backends")

    def recover(self, ctx: DrillContext) -> float | None:
        assert self.standby is not None
        began = time.monotonic()
        time.sleep(self.promote_after_s)
        took = self.standby.promote()
        ctx.step(f"standby promoted (pg_promote {took:.2f} s); capture reconnects to it on its own")
        if not self.failover_slots:
            self._resnapshot(ctx)
        return time.monotonic() - began

    def _resnapshot(self, ctx: DrillContext) -> None:
        """15-16: capture stops on the lost slot; run the command its error names."""
        capture = ctx.procs.get("capture")
        assert capture is not None
        deadline = time.monotonic() + 150
        while capture.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if capture.alive():
            raise CdcrouterError("capture did not stop on the slot lost at promotion within 150 s")
        said = [ln for ln in processes.log_tail(capture, 40) if "error:" in ln or "hint:" in ln]
        ctx.notes.extend(said[-2:])
        ctx.step("capture stopped: " + (said[-2].strip() if len(said) >= 2 else "(see its log)"))
        argv = [*capture.argv, "--resnapshot"]
        ctx.procs.launch("capture", "capture", argv, ctx.region, processes.region_env(ctx.conns))
        ctx.step("capture run --resnapshot started (as the error's hint says)")
        bridged = self._await_bridge(ctx)
        if bridged:
            ctx.notes.append(bridged)
            ctx.step(bridged)

    def _await_bridge(self, ctx: DrillContext, timeout_s: float = 60.0) -> str | None:
        capture = ctx.procs.get("capture")
        assert capture is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in processes.log_tail(capture, 60):
                if "re-snapshot bridges the window" in line:
                    return line.strip()
            time.sleep(0.3)
        return None

    def cleanup(self, ctx: DrillContext) -> None:
        ctx.stop_all()  # before the servers go: the processes would otherwise retry for minutes
        self._servers.close()
