"""``cdcrouter dashboard``: ``cdcrouter status`` as a live web page (:mod:`cdcrouter.observe.dashboard`)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cdcrouter.cli.filters_cmds import Target as DeployTarget


def register(app: typer.Typer) -> None:
    """Add ``dashboard`` to ``app``."""

    @app.command("dashboard")
    def dashboard(
        pipeline: Annotated[
            Path | None,
            typer.Option("--pipeline", "-p", envvar="CDCROUTER_PIPELINE", help="as for status"),
        ] = None,
        filters: Annotated[
            Path | None, typer.Option("--filters", "-f", envvar="CDCROUTER_FILTERS", help="as for status")
        ] = None,
        raw_topic: Annotated[str | None, typer.Option("--raw-topic", help="default: the pipeline's")] = None,
        group: Annotated[str, typer.Option("--group", "-g", help="the router's group")] = "cdcrouter-router",
        config: Annotated[Path | None, typer.Option(envvar="CDCROUTER_CONFIG", help="cdcrouter.yaml")] = None,
        state_dir: Annotated[
            Path | None, typer.Option(envvar="CDCROUTER_STATE_DIR", help="default .cdcrouter")
        ] = None,
        router_metrics: Annotated[
            list[str] | None, typer.Option(help="a router's metrics URL, repeatable (as for status)")
        ] = None,
        deploy_target: Annotated[
            DeployTarget | None, typer.Option(help="routing job to show (as for status)")
        ] = None,
        deploy_name: Annotated[
            str | None, typer.Option(envvar="CDCROUTER_DEPLOY_NAME", help="deployment name (as for status)")
        ] = None,
        host: Annotated[str, typer.Option(help="address to serve on (0.0.0.0: all)")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 8470,
        interval: Annotated[float, typer.Option(min=0.2, help="status sampling window, seconds")] = 2.0,
        refresh: Annotated[float, typer.Option(min=0.5, help="seconds between refreshes")] = 3.0,
    ) -> None:
        """Serve the status view as a live page: topology with rates, lags and DLQ depths, latency."""
        from cdcrouter.config.connections import DEFAULT_STATE_DIR
        from cdcrouter.observe.collect import StatusOptions, collect_status
        from cdcrouter.observe.dashboard import Dashboard, StatusFeed, topology_of
        from cdcrouter.observe.watch import load_inputs

        targets, conns = load_inputs(pipeline, filters, raw_topic, group, config, state_dir)
        opts = StatusOptions(
            interval_s=interval,
            state_dir=Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR)),
            router_metrics=tuple(router_metrics or ()),
            deploy_target=deploy_target.value if deploy_target else None,
            deploy_name=deploy_name,
        )
        feed = StatusFeed(lambda: collect_status(targets, conns, opts), pause_s=refresh)
        server = Dashboard(feed, topology_of(targets, refresh), host, port)
        typer.echo(f"cdcrouter dashboard on {server.url} (Ctrl-C to stop)")
        sys.stdout.flush()  # a supervisor (or a test) reads the URL while the server runs
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
