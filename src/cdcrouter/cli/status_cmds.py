"""``cdcrouter status``: the whole pipeline in one view (the work lives in :mod:`cdcrouter.observe`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdcrouter.cli.filters_cmds import Format
from cdcrouter.cli.filters_cmds import Target as DeployTarget


def register(app: typer.Typer) -> None:
    """Add ``status`` to ``app``."""

    @app.command("status")
    def status(
        pipeline: Annotated[
            Path | None,
            typer.Option(
                "--pipeline",
                "-p",
                envvar="CDCROUTER_PIPELINE",
                help="pipeline.yaml (default: ./pipeline.yaml if present; without one, no capture section)",
            ),
        ] = None,
        filters: Annotated[
            Path | None,
            typer.Option(
                "--filters",
                "-f",
                envvar="CDCROUTER_FILTERS",
                help="filters.yaml (default: ./filters.yaml if present)",
            ),
        ] = None,
        raw_topic: Annotated[str | None, typer.Option("--raw-topic", help="default: the pipeline's")] = None,
        group: Annotated[
            str, typer.Option("--group", "-g", help="the router's consumer group")
        ] = "cdcrouter-router",
        config: Annotated[
            Path | None, typer.Option("--config", envvar="CDCROUTER_CONFIG", help="cdcrouter.yaml")
        ] = None,
        interval: Annotated[
            float, typer.Option(min=0.2, help="sampling window in seconds (rates, lag growing)")
        ] = 2.0,
        latency_records: Annotated[
            int, typer.Option(min=0, help="newest records per filtered topic for the latency estimate")
        ] = 50,
        deploy_target: Annotated[
            DeployTarget | None,
            typer.Option(help="routing job to show (default: Flink deployments recorded by `deploy`)"),
        ] = None,
        deploy_name: Annotated[
            str | None,
            typer.Option(envvar="CDCROUTER_DEPLOY_NAME", help="deployment name (default cdcrouter-routing)"),
        ] = None,
        router_metrics: Annotated[
            list[str] | None,
            typer.Option(
                "--router-metrics",
                help="a router's metrics URL (cdcrouter run --metrics-port), repeatable: exact routed totals",
            ),
        ] = None,
        state_dir: Annotated[
            Path | None,
            typer.Option(
                "--state-dir",
                envvar="CDCROUTER_STATE_DIR",
                help="local stack endpoints and `deploy` records (default .cdcrouter)",
            ),
        ] = None,
        watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C")] = False,
        fmt: Annotated[Format, typer.Option("--format", help="human or json")] = Format.human,
        exit_code: Annotated[
            bool, typer.Option("--exit-code", help="exit 3 when a problem is marked (for probes)")
        ] = False,
    ) -> None:
        """Capture, raw-topic lag, per-filter rates, consumer lag, DLQ depths, jobs, latency; problems marked."""  # noqa: E501
        from cdcrouter.observe.watch import run_status

        healthy = run_status(
            pipeline=pipeline,
            filters=filters,
            raw_topic=raw_topic,
            group=group,
            config=config,
            interval=interval,
            latency_records=latency_records,
            deploy_target=deploy_target.value if deploy_target else None,
            deploy_name=deploy_name,
            state_dir=state_dir,
            router_metrics=tuple(router_metrics or ()),
            watch=watch,
            as_json=fmt is Format.json,
        )
        if exit_code and not healthy:
            from cdcrouter.observe import EXIT_UNHEALTHY

            raise typer.Exit(EXIT_UNHEALTHY)
