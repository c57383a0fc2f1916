"""``cdcrouter stack fetch|up|down|status|logs``: the local real stack, no Docker.

Command bodies stay thin: the work happens in :mod:`cdcrouter.stack.manager`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CDCROUTER_STATE_DIR",
        help="Where data, logs and PID files live (default .cdcrouter).",
        show_default=False,
    ),
]
Only = Annotated[
    str | None,
    typer.Option("--only", help="Comma-separated services (dependencies are added), e.g. postgres,kafka."),
]
Ports = Annotated[
    list[str] | None,
    typer.Option("--port", help="NAME=PORT override, repeatable (e.g. --port kafka=19092)."),
]
Format = Annotated[str, typer.Option("--format", help="human or json.")]
Region = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="a (default): this stack; b: the second Kafka region for disaster recovery "
        "(<state-dir>/region-b, Kafka only, ports 19092/19093).",
        show_default=False,
    ),
]
PgVersion = Annotated[
    str | None,
    typer.Option(
        "--pg-version",
        envvar="CDCROUTER_STACK_PG_VERSION",
        help="PostgreSQL major: 15, 16, 17 or 18 (default: the data dir's, else 15).",
        show_default=False,
    ),
]


def _only(only: str | None) -> list[str] | None:
    return [s.strip() for s in only.split(",") if s.strip()] if only else None


def _stack(
    state_dir: Path | None,
    ports: list[str] | None = None,
    *,
    allow_fetch: bool = True,
    pg_version: str | None = None,
    region: str | None = None,
):
    from cdcrouter.stack.manager import Stack, parse_port_overrides
    from cdcrouter.stack.regions import check_region

    return Stack(
        state_dir,
        ports=parse_port_overrides(ports or []),
        allow_fetch=allow_fetch,
        pg_version=pg_version,
        region=check_region(region),
    )


def _reporter():
    from rich.console import Console

    console = Console(stderr=True)

    def report(name: str, message: str) -> None:
        console.print(f"[bold]{name:<18}[/bold] {message}")

    return report


def _print_status(stack, fmt: str) -> None:
    rows = stack.status()
    if fmt == "json":
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    colours = {"running": "green", "unhealthy": "yellow", "dead": "red", "stopped": "dim"}
    table = Table(title=f"stack in {stack.state_dir}")
    for col in ("service", "state", "pid", "port", "version", "endpoint"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name,
            f"[{colours.get(r.state, 'white')}]{r.state}[/]",
            str(r.pid or "-") if r.state in ("running", "unhealthy") else "-",
            ",".join(str(p) for p in r.ports.values()),
            r.version,
            r.endpoint,
        )
    console = Console()
    console.width = max(console.width, 132)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``stack`` command group to ``app``."""
    stack_app = typer.Typer(help="The local real stack: PostgreSQL, Kafka, registry, Connect, Flink.")
    app.add_typer(stack_app, name="stack")

    @stack_app.command("fetch")
    def fetch_cmd(only: Only = None, state_dir: StateDir = None, pg_version: PgVersion = None) -> None:
        """Download jars (Maven) and packages the services need into the jar cache."""
        stack = _stack(state_dir, pg_version=pg_version)
        started = time.monotonic()
        stack.fetch(_only(only), report=_reporter())
        typer.echo(f"fetched into {stack.ctx.cache_dir} in {time.monotonic() - started:.1f}s")

    @stack_app.command("up")
    def up_cmd(
        only: Only = None,
        state_dir: StateDir = None,
        port: Ports = None,
        no_fetch: Annotated[
            bool, typer.Option("--no-fetch", help="Never download; fail if jars are missing.")
        ] = False,
        fmt: Format = "human",
        pg_version: PgVersion = None,
        region: Region = None,
    ) -> None:
        """Start all services (or --only some) and wait until each is healthy; a no-op if running."""
        stack = _stack(state_dir, port, allow_fetch=not no_fetch, pg_version=pg_version, region=region)
        started = time.monotonic()
        stack.up(_only(only), report=_reporter())
        if fmt != "json":
            typer.echo(f"stack ready in {time.monotonic() - started:.1f}s")
        _print_status(stack, fmt)

    @stack_app.command("down")
    def down_cmd(
        only: Only = None,
        state_dir: StateDir = None,
        purge: Annotated[bool, typer.Option("--purge", help="Also delete data, logs and secrets.")] = False,
        region: Region = None,
    ) -> None:
        """Stop services by their recorded PIDs (SIGTERM, then SIGKILL); keeps data unless --purge."""
        stack = _stack(state_dir, region=region)
        stack.down(_only(only), purge=purge, report=_reporter())

    @stack_app.command("status")
    def status_cmd(state_dir: StateDir = None, fmt: Format = "human", region: Region = None) -> None:
        """Show each service's state, PID, port, version and endpoint."""
        _print_status(_stack(state_dir, region=region), fmt)

    @stack_app.command("logs")
    def logs_cmd(
        service: Annotated[str, typer.Argument(help="Service name, e.g. kafka.")],
        lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines.")] = 50,
        follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
        state_dir: StateDir = None,
        region: Region = None,
    ) -> None:
        """Print the last lines of a service's log (under <state-dir>/logs)."""
        from cdcrouter.stack.process import tail

        path = _stack(state_dir, region=region).log_path(service)
        for line in tail(path, lines):
            typer.echo(line)
        if follow:
            _follow(path)

    @stack_app.command("env")
    def env_cmd(state_dir: StateDir = None) -> None:
        """Print the stack's endpoints as CDCROUTER_* variables (no secrets)."""
        conns = _stack(state_dir).connections()
        typer.echo(f"export CDCROUTER_KAFKA__BOOTSTRAP_SERVERS={conns.kafka.bootstrap_servers}")
        typer.echo(f"export CDCROUTER_REGISTRY__URL={conns.registry.url}")
        typer.echo(f"export CDCROUTER_CONNECT__URL={conns.connect.url}")
        typer.echo(f"export CDCROUTER_FLINK__SQL_GATEWAY_URL={conns.flink.sql_gateway_url}")
        typer.echo(f"export CDCROUTER_FLINK__REST_URL={conns.flink.rest_url}")
        typer.echo(
            f"# postgres: {conns.postgres.redacted()} (password in <state-dir>/secrets/postgres-password)"
        )

    from cdcrouter.cli.bench_cmds import register_alias

    register_alias(stack_app, "stack", "stack")


def _follow(path: Path) -> None:
    with open(path, errors="replace") as fh:
        fh.seek(0, 2)
        try:
            while True:
                line = fh.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.3)
        except KeyboardInterrupt:
            return
