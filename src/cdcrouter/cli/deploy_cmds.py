"""``cdcrouter deploy``: the routing statement set on Flink (SQL Gateway) or Confluent Cloud.

``cdcrouter deploy --target flink|confluent-cloud`` shows a plan, then applies it (``--yes`` for
scripts, ``--dry-run`` to stop at the plan); ``deploy status|stop|resume|delete|list`` manage what
runs. Command bodies stay thin: the work lives in :mod:`cdcrouter.deploy`.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from cdcrouter.errors import CdcrouterError, UsageError


class Target(StrEnum):
    flink = "flink"
    confluent_cloud = "confluent-cloud"


TargetOpt = typer.Option(Target.flink, "--target", "-t", help="flink (SQL Gateway) or confluent-cloud")
NameOpt = typer.Option(
    "cdcrouter-routing",
    "--name",
    "-n",
    help="deployment name (job/statement prefix)",
    envvar="CDCROUTER_DEPLOY_NAME",
)
FiltersOpt = typer.Option(
    Path("filters.yaml"), "--filters", "-f", help="filters.yaml", envvar="CDCROUTER_FILTERS"
)
ConfigOpt = typer.Option(None, "--config", help="cdcrouter.yaml with a connections: section")
StateOpt = typer.Option(None, "--state-dir", envvar="CDCROUTER_STATE_DIR", help="default .cdcrouter")
FormatOpt = typer.Option("human", "--format", help="human or json")


def _state_dir(state_dir: Path | None) -> Path:
    from cdcrouter.config.connections import DEFAULT_STATE_DIR

    return Path(state_dir or DEFAULT_STATE_DIR)


def _conns(config: Path | None, state_dir: Path | None) -> Any:
    from cdcrouter.config import load_connections

    return load_connections(config, state_dir)


def _flink(name: str, conns: Any, state_dir: Path | None, **opts: Any) -> Any:
    from cdcrouter.backends.flink_sql import render_placeholders
    from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions
    from cdcrouter.deploy.values import flink_connection_options, flink_values

    values = flink_values(conns, f"cdcrouter-{name}")
    options = FlinkOptions(connection_options=flink_connection_options(conns), **opts)
    return FlinkDeployment(
        name,
        conns.flink.sql_gateway_url,
        conns.flink.rest_url,
        _state_dir(state_dir),
        lambda sql: render_placeholders(sql, values),
        options,
    )


def _cloud(name: str, conns: Any, carry_over: str = "property") -> Any:
    from cdcrouter.backends.flink_sql import render_placeholders
    from cdcrouter.deploy.cc_target import CloudDeployment
    from cdcrouter.deploy.confluent_cloud import ConfluentCloudFlink

    api = ConfluentCloudFlink.from_settings(conns.confluent_cloud)
    return CloudDeployment(name, api, lambda sql: render_placeholders(sql, {}), carry_over=carry_over)


def _confirm(yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CdcrouterError(
            "not applying without confirmation", hint="pass --yes (or --dry-run to only plan)"
        )
    if not typer.confirm("Apply this plan?", default=False):
        raise CdcrouterError("cancelled; nothing was changed")


def _echo(data: Any, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2, default=str))
    elif isinstance(data, list):
        for row in data:
            typer.echo("  ".join(f"{k}={v}" for k, v in row.items()))
        if not data:
            typer.echo("(none)")
    else:
        for k, v in data.items():
            typer.echo(f"{k}: {v}")


def register(app: typer.Typer) -> None:
    """Add ``deploy`` and its subcommands to ``app``."""
    deploy = typer.Typer(help="Deploy the routing SQL to Flink or Confluent Cloud (plan first).")
    app.add_typer(deploy, name="deploy", invoke_without_command=True)

    @deploy.callback(invoke_without_command=True)
    def deploy_cmd(
        ctx: typer.Context,
        target: Target = TargetOpt,
        filters: Path = FiltersOpt,
        name: str = NameOpt,
        dry_run: bool = typer.Option(False, "--dry-run", help="show the plan, change nothing"),
        yes: bool = typer.Option(False, "--yes", "-y", help="apply without asking"),
        raw_topic: str | None = typer.Option(None, "--raw-topic", help="Flink: read this raw topic instead"),
        checkpoint_interval: str = typer.Option("5s", "--checkpoint-interval", help="Flink: commit interval"),
        savepoint_dir: str | None = typer.Option(None, "--savepoint-dir", help="Flink: file:// dir"),
        sink_shape: str = typer.Option(
            "per-topic", "--sink-shape", help="Flink: per-topic, or one-sink (see docs/deploy.md)"
        ),
        carry_over: str = typer.Option(
            "property", "--carry-over", help="Confluent Cloud: property (initial-offset-from) or hints"
        ),
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
        fmt: str = FormatOpt,
    ) -> None:
        """Plan and apply a deployment of FILTERS' routing statement set."""
        if ctx.invoked_subcommand is not None:
            return
        from cdcrouter.backends.flink_sql import generate_sql
        from cdcrouter.filters import load_filters

        if not filters.is_file():
            raise UsageError(f"filters file {filters} does not exist", hint="pass --filters PATH")
        script = generate_sql(load_filters(filters), target=target.value, sink_shape=sink_shape)
        conns = _conns(config, state_dir)
        if target is Target.flink:
            dep = _flink(
                name, conns, state_dir,
                checkpoint_interval=checkpoint_interval, savepoint_dir=savepoint_dir, raw_topic=raw_topic,
            )  # fmt: skip
        else:
            dep = _cloud(name, conns, carry_over)
        plan, parsed = dep.plan(script)
        typer.echo(json.dumps(plan.to_dict(), indent=2) if fmt == "json" else plan.render())
        if dry_run or not plan.changes:
            return
        _confirm(yes)
        result = dep.apply(plan, parsed)
        _echo({"applied": plan.name, **result}, fmt)

    def _dep(target: Target, name: str, config: Path | None, state_dir: Path | None) -> Any:
        conns = _conns(config, state_dir)
        return _flink(name, conns, state_dir) if target is Target.flink else _cloud(name, conns)

    @deploy.command("status")
    def status_cmd(
        target: Target = TargetOpt,
        name: str = NameOpt,
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
        fmt: str = FormatOpt,
    ) -> None:
        """Show what runs for deployment NAME."""
        _echo(_dep(target, name, config, state_dir).status(), fmt)

    @deploy.command("stop")
    def stop_cmd(
        target: Target = TargetOpt,
        name: str = NameOpt,
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
    ) -> None:
        """Stop (Flink: with a savepoint); ``resume`` continues from where it stopped."""
        typer.echo(f"stopped: {_dep(target, name, config, state_dir).stop()}")

    @deploy.command("resume")
    def resume_cmd(
        target: Target = TargetOpt,
        name: str = NameOpt,
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
    ) -> None:
        """Resume a stopped deployment from its own offsets."""
        typer.echo(f"resumed: {_dep(target, name, config, state_dir).resume()}")

    @deploy.command("delete")
    def delete_cmd(
        target: Target = TargetOpt,
        name: str = NameOpt,
        yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking"),
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
    ) -> None:
        """Cancel and forget deployment NAME (topics and tables stay)."""
        _confirm(yes)
        typer.echo(f"deleted: {_dep(target, name, config, state_dir).delete()}")

    @deploy.command("list")
    def list_cmd(
        target: Target = TargetOpt,
        config: Path | None = ConfigOpt,
        state_dir: Path | None = StateOpt,
        fmt: str = FormatOpt,
    ) -> None:
        """Every cdcrouter deployment on the target."""
        conns = _conns(config, state_dir)
        if target is Target.flink:
            from cdcrouter.deploy.flink_target import list_deployments

            rows = list_deployments(conns.flink.rest_url)
        else:
            from cdcrouter.deploy.confluent_cloud import ConfluentCloudFlink

            api = ConfluentCloudFlink.from_settings(conns.confluent_cloud)
            rows = [{"statement": s["name"], "phase": s["status"].get("phase")} for s in api.list()]
        _echo(rows, fmt)
