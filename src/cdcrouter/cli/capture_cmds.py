"""``cdcrouter capture run|status`` and ``cdcrouter connector render|deploy|status``.

Thin bodies: the work lives in :mod:`cdcrouter.capture`.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

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


def register(app: typer.Typer) -> None:
    """Add ``capture`` and ``connector`` command groups to ``app``."""
    capture = typer.Typer(
        help="Embedded capture: PostgreSQL changes to raw-business-events.", no_args_is_help=True
    )
    app.add_typer(capture, name="capture")

    @capture.command("run")
    def run(
        pipeline: PipelineFile = Path("pipeline.yaml"),
        config: ConfigFile = None,
        duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
        resnapshot: Annotated[
            bool, typer.Option("--resnapshot", help="Drop the slot and take a new initial snapshot.")
        ] = False,
        metrics_port: Annotated[
            int | None,
            typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port (default: off)."),
        ] = None,
        metrics_address: Annotated[
            str, typer.Option(help="Address for --metrics-port (0.0.0.0: every interface).")
        ] = "127.0.0.1",
    ) -> None:
        """Capture changes until SIGTERM/Ctrl-C (finishes the open batch, then exits)."""
        import logging

        from cdcrouter.capture import CaptureEngine
        from cdcrouter.errors import CaptureError

        logging.basicConfig(level=logging.WARNING)
        p, conns = _load(pipeline, config)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        def say(line: str) -> None:
            typer.echo(f"capture: {line}", err=True)

        say(f"{conns.postgres.redacted()} -> {conns.kafka.bootstrap_servers} topic {p.raw_topic.name}")
        engine = CaptureEngine(p, conns, resnapshot=resnapshot, progress=say)
        if metrics_port is not None:
            try:
                engine.metrics.serve(metrics_port, metrics_address)
            except OSError as exc:
                raise CaptureError(
                    f"cannot serve metrics on {metrics_address}:{metrics_port}: {exc.strerror or exc}",
                    hint="pick a free port with --metrics-port, or check --metrics-address",
                ) from exc
            say(f"metrics on http://{metrics_address}:{engine.metrics.port}/metrics")
        stats = engine.run(stop, duration_s=duration)
        say(
            f"stopped: {stats.events} events in {stats.transactions} transactions, "
            f"{stats.kafka_commits} Kafka commits, {stats.snapshot_events} snapshot rows"
        )

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

    @capture.command("bench")
    def bench(
        config: ConfigFile = None,
        changes: Annotated[int, typer.Option(help="Backlog size for the throughput phase.")] = 200_000,
        rate: Annotated[int, typer.Option(help="Changes/s for the latency phase.")] = 2000,
        seconds: Annotated[float, typer.Option(help="Length of the latency phase.")] = 15.0,
        debezium: Annotated[
            bool, typer.Option("--debezium/--no-debezium", help="Compare with Debezium.")
        ] = True,
        fmt: Format = "human",
    ) -> None:
        """Embedded vs Debezium, same machine and data: changes/s and COMMIT-to-Kafka latency."""
        from cdcrouter.capture.bench import run_bench
        from cdcrouter.config import load_connections

        conns = load_connections(config_file=config)
        res = run_bench(
            conns,
            changes=changes,
            rate=rate,
            latency_seconds=seconds,
            with_debezium=debezium,
            report=lambda m: typer.echo(f"bench: {m}", err=True),
        )
        if fmt == "json":
            typer.echo(json.dumps(res, indent=2))
            return
        typer.echo(f"{'engine':<10} {'changes/s':>12} {'CPU us/change':>14} {'p50 ms':>8} {'p99 ms':>8}")
        for engine in ("embedded", "debezium"):
            if engine in res:
                r = {
                    "p50_ms": float("nan"),
                    "p99_ms": float("nan"),
                    "cpu_us_per_change": float("nan"),
                    **res[engine],
                }
                typer.echo(
                    f"{engine:<10} {r['changes_per_s']:>12,.0f} {r['cpu_us_per_change']:>14.1f} "
                    f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
                )
        if "throughput_ratio" in res:
            typer.echo(f"embedded / debezium throughput: {res['throughput_ratio']:.2f}x")

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

    connector = typer.Typer(
        help="Debezium engine: the PostgreSQL connector on Kafka Connect or Confluent Cloud.",
        no_args_is_help=True,
    )
    app.add_typer(connector, name="connector")

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
