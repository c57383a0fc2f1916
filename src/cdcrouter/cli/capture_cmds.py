"""``cdcrouter capture run|status`` and ``cdcrouter connector render|deploy|status``.

Thin bodies: the work lives in :mod:`cdcrouter.capture`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from cdcrouter.cli.groups import subgroup

PipelineFile = Annotated[
    Path,
    typer.Option("--pipeline", "-p", envvar="CDCROUTER_PIPELINE", help="The pipeline file (see examples/)."),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CDCROUTER_CONFIG",
        help="Connections file (default cdcrouter.yaml).",
        show_default=False,
    ),
]
Format = Annotated[str, typer.Option("--format", help="human or json.")]


def _load(pipeline_file: Path, config: Path | None):
    from cdcrouter.capture import load_pipeline
    from cdcrouter.config import load_connections

    pipeline = load_pipeline(pipeline_file)
    # A `connections:` section in the pipeline file itself is honoured when no --config is given.
    if config is None and pipeline.connections:
        config = pipeline_file
    return pipeline, load_connections(config_file=config)


class _SnapshotBar:
    """A rich progress bar per snapshotted table, when capture runs in a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("snapshot {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.tasks: dict[str, Any] = {}

    def update(self, pr: Any) -> None:  # SnapshotProgress | None
        for table, task in list(self.tasks.items()):
            if pr is None or pr.table != table:  # that table is done
                self.progress.update(task, total=self.progress.tasks[task].completed)
                del self.tasks[table]
        if pr is None:
            return
        task = self.tasks.get(pr.table)
        total = max(pr.estimate, pr.rows) or None
        if task is None:
            task = self.tasks[pr.table] = self.progress.add_task(pr.table, total=total, rate=0.0)
        self.progress.update(task, completed=pr.rows, total=total, rate=pr.rows_per_s)

    def close(self) -> None:
        self.progress.stop()


def register(app: typer.Typer) -> None:
    """Add ``capture`` and ``connector`` command groups to ``app``."""
    capture = subgroup(app, "capture", help="Embedded capture: PostgreSQL changes to raw-business-events.")

    @capture.command("run")
    def run(
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
        duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
        resnapshot: Annotated[
            bool, typer.Option("--resnapshot", help="Drop the slot and take a new initial snapshot.")
        ] = False,
        from_slot: Annotated[
            bool,
            typer.Option(
                "--from-slot",
                help="Kafka has no position but the slot exists: resume from the slot's confirmed position.",
            ),
        ] = False,
        metrics_port: Annotated[
            int | None,
            typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port (default: off)."),
        ] = None,
        metrics_address: Annotated[
            str, typer.Option(help="Address for --metrics-port (0.0.0.0: every interface).")
        ] = "127.0.0.1",
        route: Annotated[
            Path | None,
            typer.Option(
                "--route",
                help="Fused mode: route through this filters.yaml in capture's own Kafka transactions "
                "(default: the pipeline's `route:`; see docs/routing.md).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Capture changes until SIGTERM/Ctrl-C (finishes the open batch, then exits)."""
        import logging

        from cdcrouter.capture import CaptureEngine
        from cdcrouter.errors import CaptureError
        from cdcrouter.observe import logs

        logs.configure(level=logging.WARNING)
        p, conns = _load(pipeline, config)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        bar = _SnapshotBar() if sys.stderr.isatty() else None

        def say(line: str) -> None:
            if bar is not None:
                bar.console.print(f"capture: {line}", markup=False, highlight=False)
            else:
                logs.progress("capture", line)  # "capture: ..." as text, a JSON record with --log-format json

        say(f"{conns.postgres.redacted()} -> {conns.kafka.bootstrap_servers} topic {p.raw_topic.name}")
        engine = CaptureEngine(
            p,
            conns,
            resnapshot=resnapshot,
            from_slot=from_slot,
            progress=say,
            snapshot_progress=bar.update if bar is not None else None,
            route=route,
        )
        if engine.route_path is not None:
            say(f"fused mode: routing through {engine.route_path} in the same transactions")
        if metrics_port is not None:
            try:
                engine.metrics.serve(metrics_port, metrics_address)
            except OSError as exc:
                raise CaptureError(
                    f"cannot serve metrics on {metrics_address}:{metrics_port}: {exc.strerror or exc}",
                    hint="pick a free port with --metrics-port, or check --metrics-address",
                ) from exc
            say(f"metrics on http://{metrics_address}:{engine.metrics.port}/metrics")
        try:
            stats = engine.run(stop, duration_s=duration)
        finally:
            if bar is not None:
                bar.close()
        say(
            f"stopped: {stats.events} events in {stats.transactions} transactions, "
            f"{stats.kafka_commits} Kafka commits, {stats.snapshot_events} snapshot rows, "
            f"longest Kafka transaction {stats.longest_txn_ms:,.0f} ms"
            + (
                f", routed {sum(engine.routes.matched.values())} filtered records, "
                f"{engine.routes.dead_lettered} router dead letters"
                if engine.routes is not None
                else ""
            )
        )

    @capture.command("snapshot")
    def snapshot(
        table: Annotated[str, typer.Option("--table", help="The captured table to snapshot again.")],
        where: Annotated[
            str | None, typer.Option("--where", help="One SQL condition: only the rows matching it.")
        ] = None,
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
    ) -> None:
        """Snapshot one table again, or part of it, on a running capture (nothing stops).

        The request is a transactional logical message that capture reads from its own stream:
        a running capture queues it at once, a stopped one when it starts again.
        """
        from cdcrouter.capture.snapshot import request_snapshot

        p, conns = _load(pipeline, config)
        sid = request_snapshot(p, conns.postgres, table, where)
        part = f" (rows where {where})" if where else ""
        typer.echo(f"snapshot {sid} of {table}{part} requested from the capture on slot {p.replication.slot}")
        typer.echo(f"progress: cdcrouter capture status --pipeline {pipeline}")

    @capture.command("status")
    def status(
        pipeline: PipelineFile = Path("pipeline.yaml"), config: ConfigFile = None, fmt: Format = "human"
    ) -> None:
        """Slot, active, confirmed_flush_lsn, retained WAL, wal_status, last event time, events/s."""
        from cdcrouter.capture.status import capture_status

        p, conns = _load(pipeline, config)
        st = capture_status(p, conns)
        if fmt == "json":
            typer.echo(json.dumps(st, indent=2))
            return
        for key, value in st.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    typer.echo(f"{key}.{k:<16} {v}")
            else:
                typer.echo(f"{key:<22} {value}")

    from cdcrouter.cli.bench_cmds import register_alias

    register_alias(capture, "capture", "capture")

    @capture.command("normalize")
    def normalize(
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
        duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    ) -> None:
        """Debezium engine: turn Debezium's per-table topics into raw-business-events (exactly once)."""
        from cdcrouter.capture.debezium import Normalizer

        p, conns = _load(pipeline, config)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        events = Normalizer(p, conns).run(stop, duration_s=duration)
        typer.echo(f"normalize: stopped after {events} events", err=True)

    connector = subgroup(
        app,
        "connector",
        help="Debezium engine: the PostgreSQL connector on Kafka Connect or Confluent Cloud.",
    )

    @connector.command("render")
    def render(
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
        target: Annotated[str, typer.Option(help="connect or confluent-cloud.")] = "connect",
    ) -> None:
        """Print the connector config as JSON (secrets as ${ENV} placeholders, never inlined)."""
        from cdcrouter.capture import debezium
        from cdcrouter.errors import UsageError

        p, conns = _load(pipeline, config)
        if target == "connect":
            body = {"name": debezium.connector_name(p), "config": debezium.render_connect_config(p, conns)}
        elif target == "confluent-cloud":
            body = debezium.render_confluent_cloud_config(p, conns)
        else:
            raise UsageError(f"unknown --target {target!r}", hint="use connect or confluent-cloud")
        typer.echo(json.dumps(body, indent=2))

    @connector.command("deploy")
    def deploy(
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
        provider_secrets: Annotated[
            bool,
            typer.Option(
                "--provider-secrets",
                help="Keep ${env:...} placeholders (the worker has config.providers=env).",
            ),
        ] = False,
    ) -> None:
        """Prepare the tables and publication, then PUT the connector config to Kafka Connect."""
        from cdcrouter.capture import debezium

        p, conns = _load(pipeline, config)
        out = debezium.deploy(p, conns, inline_secrets=not provider_secrets)
        typer.echo(f"deployed {out['connector']} to {conns.connect.url}; topics: {', '.join(out['topics'])}")
        typer.echo(f"next: cdcrouter capture normalize --pipeline {pipeline}")

    @connector.command("status")
    def connector_status(
        pipeline: PipelineFile = Path("pipeline.yaml"), config: ConfigFile = None, fmt: Format = "human"
    ) -> None:
        """Connector and task states from Kafka Connect."""
        from cdcrouter.capture import debezium
        from cdcrouter.errors import DeployError

        p, conns = _load(pipeline, config)
        name = debezium.connector_name(p)
        st = debezium.ConnectClient(conns).status(name)
        if st is None:
            raise DeployError(
                f"connector {name} is not deployed on {conns.connect.url}", hint="cdcrouter connector deploy"
            )
        if fmt == "json":
            typer.echo(json.dumps(st, indent=2))
            return
        typer.echo(f"{name}: {st['connector']['state']}")
        for task in st.get("tasks", []):
            typer.echo(
                f"  task {task['id']}: {task['state']}"
                + (f"\n{task.get('trace', '')[:600]}" if task.get("trace") else "")
            )
