"""Routing commands: ``topics plan|apply``, ``schemas plan|apply``, ``run``, ``replay``.

``route bench`` is a hidden, deprecated alias of ``bench route`` (:mod:`cdcrouter.cli.bench_cmds`).

Bodies stay thin and import lazily; the work lives in ``cdcrouter.topics``, ``cdcrouter.schemas``
and ``cdcrouter.route``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

FiltersOpt = typer.Option(
    Path("filters.yaml"), "--filters", "-f", help="filters.yaml", envvar="CDCROUTER_FILTERS"
)
PipelineOpt = typer.Option(None, "--pipeline", "-p", help="pipeline.yaml (raw topic name and settings)")
RawTopicOpt = typer.Option(
    None, "--raw-topic", help="raw topic (default: pipeline's, else raw-business-events)"
)
ConfigOpt = typer.Option(None, "--config", help="cdcrouter.yaml with a connections: section")


def _logging(verbose: bool = False) -> None:
    from cdcrouter.observe import logs

    logs.configure(level=logging.DEBUG if verbose else logging.INFO)  # the format: --log-format


def _raw_topic(raw_topic: str | None, pipeline: Path | None) -> str:
    if raw_topic:
        return raw_topic
    if pipeline is not None:
        from cdcrouter.capture.pipeline import load_pipeline

        return load_pipeline(pipeline).raw_topic.name
    from cdcrouter.route.engine import DEFAULT_RAW_TOPIC

    return DEFAULT_RAW_TOPIC


def _conns(config: Path | None) -> Any:
    from cdcrouter.config import load_connections

    return load_connections(config)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    topics = typer.Typer(help="Topics as code: plan, then apply.", no_args_is_help=True)
    schemas = typer.Typer(help="Schemas as code: register raw and filtered schemas.", no_args_is_help=True)
    route = typer.Typer(help="Embedded routing engine tools.", no_args_is_help=True)
    app.add_typer(topics, name="topics")
    app.add_typer(schemas, name="schemas")
    app.add_typer(route, name="route")

    def _topics(
        apply: bool,
        filters: Path,
        pipeline: Path | None,
        raw_topic: str | None,
        partitions: int,
        replication: int,
        retention_ms: int,
        allow_delete: bool,
        prune_prefix: list[str],
        config: Path | None,
    ) -> None:
        from cdcrouter.topics import TopicDefaults, admin_client, apply_topics, plan_topics, topics_for

        defaults = TopicDefaults(
            partitions=partitions, replication_factor=replication, retention_ms=retention_ms
        )
        specs = topics_for(filters, pipeline, defaults, raw_topic=raw_topic)
        admin = admin_client(_conns(config).kafka.to_librdkafka())
        plan = plan_topics(admin, specs, allow_delete=allow_delete, managed_prefixes=tuple(prune_prefix))
        typer.echo(plan.render())
        if apply:
            for line in apply_topics(admin, plan):
                typer.echo(line)
            typer.echo("applied")
        elif plan.refused:
            raise typer.Exit(1)

    def topics_options(apply: bool) -> Any:
        def cmd(
            filters: Path = FiltersOpt,
            pipeline: Path | None = PipelineOpt,
            raw_topic: str | None = RawTopicOpt,
            partitions: int = typer.Option(3, help="partitions of filtered topics (raw: pipeline.yaml)"),
            replication: int = typer.Option(1, help="replication factor (1 locally; 3 in production)"),
            retention_ms: int = typer.Option(7 * 24 * 3600 * 1000, help="retention of filtered topics"),
            allow_delete: bool = typer.Option(False, "--allow-delete", help="delete topics no longer wanted"),
            prune_prefix: list[str] = typer.Option(
                ["filtered-"], help="only topics with this prefix are candidates for deletion"
            ),
            config: Path | None = ConfigOpt,
        ) -> None:
            _topics(
                apply, filters, pipeline, raw_topic, partitions, replication, retention_ms, allow_delete,
                prune_prefix, config,
            )  # fmt: skip

        cmd.__doc__ = (
            "Create/alter the raw, filtered and DLQ topics (shows the plan first)."
            if apply
            else "Show what `topics apply` would change (reads only)."
        )
        return cmd

    topics.command("plan")(topics_options(False))
    topics.command("apply")(topics_options(True))

    def schemas_options(apply: bool) -> Any:
        def cmd(
            filters: Path = FiltersOpt,
            pipeline: Path | None = PipelineOpt,
            raw_topic: str | None = RawTopicOpt,
            compatibility: str = typer.Option(
                "FULL_TRANSITIVE",
                help="compatibility level set on every subject; FULL_TRANSITIVE keeps old readers "
                "working when capture upgrades first (docs/routing.md)",
            ),
            config: Path | None = ConfigOpt,
        ) -> None:
            from cdcrouter.filters import load_filters
            from cdcrouter.schemas.registry import (
                RegistryClient,
                apply_schemas,
                desired_subjects,
                plan_derived,
                plan_schemas,
            )

            fs = load_filters(filters)
            topics = sorted({f.output_topic for f in fs.filters})
            raw = _raw_topic(raw_topic, pipeline)
            subjects = desired_subjects(raw, topics)
            with RegistryClient(_conns(config).registry.to_client_conf()) as client:
                plan = plan_schemas(client, subjects, compatibility.upper())
                plan_derived(client, plan, raw, topics)
                typer.echo(plan.render())
                if apply:
                    ids = apply_schemas(client, plan)
                    for subject, schema_id in sorted(ids.items()):
                        typer.echo(f"{subject}: id {schema_id}")
                    typer.echo("applied")
                elif plan.incompatible:
                    raise typer.Exit(1)

        cmd.__doc__ = (
            "Register the raw and filtered schemas (compatibility checked first)."
            if apply
            else "Show what `schemas apply` would register and whether the registry accepts it."
        )
        return cmd

    schemas.command("plan")(schemas_options(False))
    schemas.command("apply")(schemas_options(True))

    @app.command("run")
    def run(
        filters: Path = FiltersOpt,
        pipeline: Path | None = PipelineOpt,
        raw_topic: str | None = RawTopicOpt,
        group: str = typer.Option(
            "cdcrouter-router", "--group", "-g", help="consumer group of all instances"
        ),
        instance_id: str | None = typer.Option(
            None,
            "--instance-id",
            help="stable and unique per instance, its transactional.id (default: the host name, "
            "which a Kubernetes StatefulSet keeps per pod)",
            envvar="CDCROUTER_INSTANCE_ID",
            show_default=False,
        ),
        max_txn_ms: int = typer.Option(100, help="commit a transaction at least this often under load"),
        lanes: int = typer.Option(
            2, min=1, max=8, help="transactional producers taking turns (one commits while the next fills)"
        ),
        metrics_port: int | None = typer.Option(
            None, min=0, max=65535, help="serve Prometheus metrics on this port (default: off)"
        ),
        metrics_address: str = typer.Option(
            "127.0.0.1",
            "--metrics-address",
            help="address for --metrics-port (0.0.0.0: every interface, e.g. in a pod)",
            envvar="CDCROUTER_METRICS_ADDRESS",
        ),
        transaction_timeout_ms: int | None = typer.Option(
            None,
            "--transaction-timeout-ms",
            min=1000,
            help="Kafka transaction.timeout.ms: how long a killed instance's open transaction can hold "
            "read_committed readers back (default: pipeline.yaml's transactions.router_timeout_ms, "
            "else 20000; at most the broker's transaction.max.timeout.ms)",
            show_default=False,
        ),
        txn_call_timeout_s: float = typer.Option(
            20.0,
            "--txn-call-timeout-s",
            min=1.0,
            help="hard limit per transactional Kafka call: past it (+5 s) the producer is replaced and "
            "the uncommitted work redone (librdkafka can hang on a stale coordinator after a broker restart)",
        ),
        no_reload: bool = typer.Option(False, "--no-reload", help="do not watch filters.yaml for changes"),
        max_events: int | None = typer.Option(
            None, help="stop after this many raw records (tests, benchmarks)"
        ),
        config: Path | None = ConfigOpt,
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Route the raw topic to the filtered topics, exactly once, until SIGTERM/Ctrl-C."""
        import signal
        import threading

        from cdcrouter.observe import logs
        from cdcrouter.route.engine import Router, RouterOptions
        from cdcrouter.route.instance import default_instance_id

        _logging(verbose)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if transaction_timeout_ms is None and pipeline is not None:
            from cdcrouter.capture.pipeline import load_pipeline

            transaction_timeout_ms = load_pipeline(pipeline).transactions.router_timeout_ms
        opts = RouterOptions(
            raw_topic=_raw_topic(raw_topic, pipeline),
            group_id=group,
            instance_id=instance_id or default_instance_id(),
            max_txn_ms=max_txn_ms,
            lanes=lanes,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            reload=not no_reload,
            txn_call_timeout_s=txn_call_timeout_s,
        )
        if transaction_timeout_ms is not None:
            opts.transaction_timeout_ms = transaction_timeout_ms
        stats = Router(filters, _conns(config), opts).run(stop, max_events=max_events)
        logs.summary("route", "stopped", stats.__dict__)  # the same JSON line as text; a record in json

    @app.command("replay")
    def replay_cmd(
        filter_id: str = typer.Option(..., "--filter", help="id of the filter to re-run"),
        start: str = typer.Option(..., "--from", help="offset (1200), ts:<epoch ms> or ISO time"),
        end: str | None = typer.Option(None, "--to", help="exclusive end; default: the end when started"),
        filters: Path = FiltersOpt,
        pipeline: Path | None = PipelineOpt,
        raw_topic: str | None = RawTopicOpt,
        config: Path | None = ConfigOpt,
    ) -> None:
        """Backfill one filter's topic from the raw topic, without touching the live routing group."""
        from cdcrouter.route.replay import parse_position, replay

        _logging()
        result = replay(
            filters,
            filter_id,
            _conns(config),
            _raw_topic(raw_topic, pipeline),
            parse_position(start),
            parse_position(end) if end else None,
        )
        typer.echo(
            f"replayed {filter_id}: scanned {result.scanned} raw records, routed {result.routed} to "
            f"{result.topic}, skipped {result.skipped_undecodable} undecodable"
        )

    from cdcrouter.cli.bench_cmds import register_alias

    register_alias(route, "route", "route")
