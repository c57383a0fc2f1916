"""``cdcrouter dr drill``, ``dr failover``, ``dr failback``, ``dr start|stop|ps``: drills and region moves.

Thin bodies: the work lives in :mod:`cdcrouter.dr.drill`, :mod:`cdcrouter.dr.failover` and
:mod:`cdcrouter.dr.processes`. The commands hang off the shared ``dr`` group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cdcrouter.cli.dr_cmds import dr_group

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="CDCROUTER_CONFIG", help="Connections file (default cdcrouter.yaml).",
                 show_default=False),
]  # fmt: skip

Force = Annotated[
    bool,
    typer.Option("--force", help="Move even when the mirror has not caught up (the gap is printed)."),
]
CatchUp = Annotated[float, typer.Option("--catch-up", help="Seconds to wait for the mirror to catch up.")]
Grace = Annotated[float, typer.Option("--grace", help="Seconds a process gets to stop before SIGKILL.")]


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
        pg_version: Annotated[
            str, typer.Option("--pg-version", help="db-primary: the PostgreSQL major (15-18).")
        ] = "18",
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
        if pg_version not in ("15", "16", "17", "18"):
            raise UsageError(f"--pg-version must be 15, 16, 17 or 18, got {pg_version!r}")
        built = scenarios.factory(scenario)(restart=restart, config=config, pg_version=pg_version)
        say = (lambda line: typer.echo(line, err=True)) if as_json else typer.echo
        report = run_drill(built, conns, opts, say=say)
        typer.echo(report.to_json() if as_json else report.render())
        if not report.ok:
            raise typer.Exit(1)

    _failover_commands(group)
    _process_commands(group)


def _plan(target: str, force: bool, catch_up: float, grace: float, config: Path | None):  # -> FailoverPlan
    from cdcrouter.dr.failover import FailoverPlan, active_region, default_registry
    from cdcrouter.dr.regions import region_connections
    from cdcrouter.errors import DrError, UsageError
    from cdcrouter.stack.regions import check_region

    target = check_region(target)
    source = active_region()["region"]
    if source == target:
        raise UsageError(
            f"region {target} is already the active one", hint="cdcrouter dr ps shows what runs where"
        )
    mirror = None
    try:
        from cdcrouter.dr.mirror import load_mirror

        mirror = load_mirror(target_region=target, config_file=config)
        if mirror.source_region != source:
            mirror = None
    except DrError:
        mirror = None
    return FailoverPlan(
        source=source,
        target=target,
        source_conns=region_connections(source, config_file=config),
        target_conns=region_connections(target, config_file=config),
        procs=default_registry(),
        mirror=mirror,
        force=force,
        catch_up_s=catch_up,
        stop_grace_s=grace,
    )


def _failover_commands(group: typer.Typer) -> None:
    @group.command("failover")
    def failover_cmd(
        to: Annotated[str, typer.Option("--to", help="The region to move the pipeline to (e.g. b).")],
        force: Force = False,
        catch_up: CatchUp = 30.0,
        grace: Grace = 15.0,
        config: ConfigFile = None,
    ) -> None:
        """Move capture, routers and consumers to region TO (stop, check the mirror, translate, start)."""
        from cdcrouter.dr.failover import failover

        failover(_plan(to, force, catch_up, grace, config), say=typer.echo)

    group.command("failback")(_to_home(failover_cmd))


def _to_home(failover_cmd: Callable[..., None]) -> Callable[..., None]:
    """``dr failback``: ``dr failover --to <home region>``, with the same options but ``--to`` (one
    implementation, one set of option declarations)."""

    def failback_cmd(**options: Any) -> None:
        """Move the pipeline back to the home region (a), once a mirror into it has caught up."""
        from cdcrouter.dr.failover import HOME_REGION

        failover_cmd(to=HOME_REGION, **options)

    full = inspect.signature(failover_cmd, eval_str=True)  # typer reads the options from it
    failback_cmd.__signature__ = full.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in full.parameters.items() if name != "to"]
    )
    return failback_cmd


def _process_commands(group: typer.Typer) -> None:
    @group.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def start(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="A name for this process (unique).")],
        role: Annotated[str, typer.Option("--role", help="capture, router or consumer.")],
        exec_: Annotated[
            bool,
            typer.Option("--exec", help="Run ARGS as a program (an SDK consumer app), not cdcrouter ARGS."),
        ] = False,
        config: ConfigFile = None,
    ) -> None:
        """Start `cdcrouter ARGS...` (or, with --exec, any program) detached in the active region and
        record it for failovers.

        Example: cdcrouter dr start capture --role capture -- capture run --pipeline pipeline.yaml
        """
        from cdcrouter.dr.drill import region_env
        from cdcrouter.dr.failover import active_region, default_registry
        from cdcrouter.dr.processes import cdcrouter_argv
        from cdcrouter.dr.regions import region_connections
        from cdcrouter.errors import UsageError

        if not ctx.args:
            raise UsageError("what to run? nothing after --", hint="e.g. -- run --filters filters.yaml")
        region = active_region()["region"]
        env = region_env(region_connections(region, config_file=config))
        argv = list(ctx.args) if exec_ else cdcrouter_argv(*ctx.args)
        m = default_registry().launch(name, role, argv, region, env)
        typer.echo(f"started {name} ({role}) in region {region}: pid {m.pid}, log {m.log_file}")

    @group.command("stop")
    def stop_cmd(
        name: Annotated[str | None, typer.Argument(help="The process to stop (default: all).")] = None,
        grace: Annotated[float, typer.Option("--grace", help="Seconds before SIGKILL.")] = 20.0,
    ) -> None:
        """Stop recorded processes (SIGTERM, then SIGKILL after --grace) and forget them."""
        from cdcrouter.dr.failover import default_registry
        from cdcrouter.dr.processes import stop_all
        from cdcrouter.errors import UsageError

        reg = default_registry()
        todo = [m for m in reg.all() if name is None or m.name == name]
        if name is not None and not todo:
            raise UsageError(f"no recorded process {name!r}", hint="cdcrouter dr ps lists them")
        for n, what in stop_all(todo, grace).items():
            reg.forget(n)
            typer.echo(f"{n}: {what}")

    @group.command("ps")
    def ps() -> None:
        """The recorded processes: role, region, pid, running or not, log file."""
        from cdcrouter.dr.failover import active_region, default_registry

        active = active_region()
        typer.echo(f"active region: {active['region']}")
        for m in default_registry().all():
            state = "running" if m.alive() else "exited"
            typer.echo(
                f"{m.name:<16} {m.role:<9} region {m.region:<3} pid {m.pid:<8} {state:<8} {m.log_file}"
            )
