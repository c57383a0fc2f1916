"""``cdcrouter dr standby up|status|promote|down``: a standby for database failover on the local
stack (docs/disaster-recovery.md, "Database failover").

Command bodies stay thin: the work happens in :mod:`cdcrouter.dr.standby` and
:mod:`cdcrouter.dr.scenarios.db` (``dr drill --scenario db-primary``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cdcrouter.cli.groups import subgroup

if TYPE_CHECKING:
    from cdcrouter.dr.standby import Standby

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CDCROUTER_STATE_DIR",
        help="The stack whose PostgreSQL is the primary (default .cdcrouter).",
        show_default=False,
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port", help="The standby's port (default 55433, or the one it ran on).", show_default=False
    ),
]


def _standby(state_dir: Path | None, port: int | None = None, synchronous: bool = True) -> Standby:
    from cdcrouter.dr.standby import Standby
    from cdcrouter.stack.manager import Stack

    return Standby(Stack(state_dir), port=port, synchronous=synchronous)


def _connection_lines(standby: Standby) -> list[str]:
    pg = standby.failover_settings()
    return [
        "capture follows a promotion when it connects to both servers:",
        f"  export CDCROUTER_POSTGRES__HOST={pg.host} CDCROUTER_POSTGRES__PORT={pg.port}",
        "  (or connections.postgres.host/port in cdcrouter.yaml; target_session_attrs=primary is "
        "the default for several hosts)",
    ]


def _register_standby(group: typer.Typer) -> None:
    standby_app = subgroup(
        group, "standby", help="A physical standby of the stack's PostgreSQL, for database failover."
    )

    @standby_app.command("up")
    def up_cmd(
        state_dir: StateDir = None,
        port: Port = None,
        asynchronous: Annotated[
            bool,
            typer.Option(
                "--async",
                help="Do not make the primary wait for the standby at commit (acknowledged commits "
                "may then be lost at failover).",
            ),
        ] = False,
    ) -> None:
        """Copy the running primary (pg_basebackup) and start it as a streaming standby; idempotent."""
        sb = _standby(state_dir, port, synchronous=not asynchronous)
        started = sb.up()
        sb.wait_streaming()
        pid = sb.record().pid if sb.record() else "?"
        typer.echo(
            f"postgres-standby: {'started' if started else 'already running'} (pid {pid}) on port {sb.port}"
        )
        typer.echo(
            f"primary: physical slot {sb.slot}, "
            + ("synchronous_standby_names set, " if sb.synchronous else "")
            + "synchronized_standby_slots set (PostgreSQL 17+)"
        )
        for line in _connection_lines(sb):
            typer.echo(line)

    @standby_app.command("status")
    def status_cmd(
        state_dir: StateDir = None,
        port: Port = None,
        fmt: Annotated[str, typer.Option("--format", help="human or json.")] = "human",
    ) -> None:
        """Is the standby running, still a standby, and which logical slots it holds copies of."""
        import psycopg

        sb = _standby(state_dir, port)
        rec = sb.running()
        doc: dict[str, object] = {"running": bool(rec), "pid": rec.pid if rec else None, "port": sb.port}
        if rec:
            try:
                with psycopg.connect(sb.settings().conninfo(), connect_timeout=5) as conn:
                    doc["in_recovery"] = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
                    synced = (
                        "synced, invalidation_reason" if conn.info.server_version >= 170000 else "false, null"
                    )
                    doc["logical_slots"] = [
                        {"slot": r[0], "temporary": r[1], "synced": r[2], "invalidation_reason": r[3]}
                        for r in conn.execute(
                            f"SELECT slot_name, temporary, {synced} FROM pg_replication_slots "
                            "WHERE slot_type = 'logical' ORDER BY 1"
                        )
                    ]
            except psycopg.Error as exc:
                doc["error"] = str(exc).strip().splitlines()[0]
        if fmt == "json":
            typer.echo(json.dumps(doc, indent=2))
            return
        if not rec:
            typer.echo("postgres-standby: stopped")
            return
        role = "standby (in recovery)" if doc.get("in_recovery") else "promoted: a primary now"
        typer.echo(f"postgres-standby: running (pid {rec.pid}) on port {sb.port}, {role}")
        for slot in doc.get("logical_slots", []):  # type: ignore[attr-defined]
            usable = slot["synced"] and not slot["temporary"] and not slot["invalidation_reason"]
            note = "ready for failover" if usable else "NOT ready (temporary, catching up, or invalidated)"
            typer.echo(
                f"  slot {slot['slot']}: synced={slot['synced']} temporary={slot['temporary']} - {note}"
            )

    @standby_app.command("promote")
    def promote_cmd(state_dir: StateDir = None, port: Port = None) -> None:
        """Promote the standby to primary (pg_promote). Do not restart the old primary as it is."""
        sb = _standby(state_dir, port)
        took = sb.promote()
        typer.echo(f"postgres-standby promoted in {took:.2f} s; it is the primary now on port {sb.port}")
        typer.echo(
            "the old primary must not come back as a primary: rebuild it as a standby of this one "
            "(docs/disaster-recovery.md)"
        )

    @standby_app.command("down")
    def down_cmd(
        state_dir: StateDir = None,
        port: Port = None,
        purge: Annotated[
            bool, typer.Option("--purge", help="Also delete the standby's data and log.")
        ] = False,
    ) -> None:
        """Stop the standby by its PID; reset the primary's standby settings and drop its physical slot."""
        sb = _standby(state_dir, port)
        stopped = sb.down(purge=purge)
        typer.echo(
            f"postgres-standby: {'stopped' if stopped else 'was not running'}" + (", purged" if purge else "")
        )


def register(app: typer.Typer) -> None:
    """Add ``dr standby ...`` to the shared ``dr`` group (the drill is ``dr drill --scenario db-primary``)."""
    from cdcrouter.cli.dr_cmds import dr_group

    group = dr_group()
    _register_standby(group)
