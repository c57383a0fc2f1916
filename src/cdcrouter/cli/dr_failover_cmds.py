"""``cdcrouter dr drill``, ``dr failover``, ``dr failback``, ``dr start|stop|ps``: drills and region moves.

Thin bodies: the work lives in :mod:`cdcrouter.dr.drill`, :mod:`cdcrouter.dr.failover` and
:mod:`cdcrouter.dr.processes`. The commands hang off the shared ``dr`` group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdcrouter.cli.dr_cmds import dr_group

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="CDCROUTER_CONFIG", help="Connections file (default cdcrouter.yaml).",
                 show_default=False),
]  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``drill`` (and the failover commands) to the ``dr`` group."""
    group = dr_group()

    @group.command("drill")
    def drill(
        scenario: Annotated[str, typer.Option("--scenario", "-s", help="Which failure (see --list).")] = "",
        list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
        long: Annotated[
            bool, typer.Option("--long", help="The long form: 60 s before and after the failure at 200/s.")
        ] = False,
        rate: Annotated[float | None, typer.Option(help="Changes/s the workload writes.")] = None,
        before: Annotated[
            float | None, typer.Option(help="Seconds of steady state before the failure.")
        ] = None,
        after: Annotated[
            float | None, typer.Option(help="Seconds of writing after the recovery step.")
        ] = None,
        restart: Annotated[
            bool, typer.Option("--restart", help="router-kill: restart the killed router with its id.")
        ] = False,
        keep: Annotated[
            bool, typer.Option("--keep", help="Leave the drill's processes and objects.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        config: ConfigFile = None,
    ) -> None:
        """Inject a failure while a steady workload runs, then account for every committed change.

        Exit 0 when nothing was lost (and every duplicate is one a uuid dedup removes), 1 otherwise.
        """
        from cdcrouter.config import load_connections
        from cdcrouter.dr import scenarios
        from cdcrouter.dr.drill import DrillOptions, run_drill
        from cdcrouter.errors import UsageError

        if list_:
            for name in scenarios.names():
                typer.echo(name)
            return
        if scenario not in scenarios.names():
            raise UsageError(
                f"unknown scenario {scenario!r}" if scenario else "which scenario? --scenario is missing",
                hint=f"one of: {', '.join(scenarios.names())}",
            )
        opts = DrillOptions(
            rate=rate or (200.0 if long else 50.0),
            before_s=before if before is not None else (60.0 if long else 3.0),
            after_s=after if after is not None else (60.0 if long else 5.0),
            settle_s=300.0 if long else 120.0,
            keep=keep,
        )
        conns = load_connections(config_file=config)
        built = scenarios.factory(scenario)(restart=restart, config=config)
        say = (lambda line: typer.echo(line, err=True)) if as_json else typer.echo
        report = run_drill(built, conns, opts, say=say)
        typer.echo(report.to_json() if as_json else report.render())
        if not report.ok:
            raise typer.Exit(1)
