"""``cdcrouter dr``: disaster recovery across Kafka regions. Other modules add subcommands with
:func:`dr_group` (the group is created once, here; register their module in ``cli/main.py``).

This module: ``dr mirror start|stop`` (MirrorMaker 2, region a -> b) and ``dr status``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

_GROUP: typer.Typer | None = None

LAGGING_EXIT = 3  # `dr status` over a threshold (1 stays "error", 2 "usage")

Name = Annotated[
    str, typer.Option("--name", help="The mirror's name (its files in <state>/region-<to>/NAME).")
]
ToRegion = Annotated[str, typer.Option("--to", help="The target region (the source is a).")]
Config = Annotated[
    Path | None,
    typer.Option("--config", envvar="CDCROUTER_CONFIG", help="Connections file.", show_default=False),
]


def dr_group() -> typer.Typer:
    """The shared ``dr`` typer group (other command modules add their commands to it)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = typer.Typer(
            help="Disaster recovery: the second Kafka region (MirrorMaker 2), failover, backups, drills.",
            no_args_is_help=True,
        )
    return _GROUP


def register(app: typer.Typer) -> None:
    """Add the ``dr`` group to ``app`` (its commands come from this and other modules)."""
    group = dr_group()
    app.add_typer(group, name="dr")
    mirror = typer.Typer(help="MirrorMaker 2 from region a to another region.", no_args_is_help=True)
    group.add_typer(mirror, name="mirror")
    _mirror_commands(mirror)
    _status_command(group)


def _topics(pipeline: Path | None, filters: Path | None, topics: list[str] | None) -> tuple[str, ...]:
    from cdcrouter.dr.mirror import pipeline_topics
    from cdcrouter.errors import UsageError

    out: list[str] = []
    if pipeline is not None or filters is not None:
        from cdcrouter.capture.pipeline import load_pipeline
        from cdcrouter.filters import load_filters
        from cdcrouter.naming import DEFAULT_RAW_TOPIC

        raw = load_pipeline(pipeline).raw_topic.name if pipeline else DEFAULT_RAW_TOPIC
        filtered = [f.output_topic for f in load_filters(filters).filters] if filters else []
        out += pipeline_topics(raw, filtered)
    out += topics or []
    if not out:
        raise UsageError("nothing to mirror: give --pipeline and --filters, or --topic (repeatable)")
    return tuple(dict.fromkeys(out))


def _mirror_commands(mirror: typer.Typer) -> None:
    @mirror.command("start")
    def start(
        pipeline: Annotated[
            Path | None, typer.Option("--pipeline", help="pipeline.yaml: its raw, position and DLQ topics.")
        ] = None,
        filters: Annotated[
            Path | None, typer.Option("--filters", help="filters.yaml: its output topics.")
        ] = None,
        topic: Annotated[list[str] | None, typer.Option("--topic", help="Another topic to mirror.")] = None,
        group: Annotated[
            list[str] | None,
            typer.Option("--group", help="Consumer groups to translate (regex; default all)."),
        ] = None,
        to: ToRegion = "b",
        name: Name = "mirror",
        replication_factor: Annotated[
            int, typer.Option("--replication-factor", min=1, help="Of the topics MM2 creates in TO.")
        ] = 1,
        no_exactly_once: Annotated[
            bool, typer.Option("--no-exactly-once", help="At-least-once MM2 (no target transactions).")
        ] = False,
        config: Config = None,
    ) -> None:
        """Start MirrorMaker 2 (dedicated, exactly once, read_committed) mirroring a -> TO."""
        import os

        from cdcrouter.config.connections import DEFAULT_STATE_DIR
        from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec
        from cdcrouter.dr.regions import region_kafka
        from cdcrouter.stack.regions import check_region, region_state_dir

        state = Path(os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR))
        target = check_region(to)
        spec = MirrorSpec(
            source=region_kafka("a", config_file=config),
            target=region_kafka(target, config_file=config),
            topics=_topics(pipeline, filters, topic),
            groups=tuple(group or (".*",)),
            target_alias=target,
            exactly_once=not no_exactly_once,
            replication_factor=replication_factor,
        )
        mm = MirrorMaker(spec, region_state_dir(state, target), name=name, target_region=target)
        was = mm.running()
        rec = mm.start()
        verb = "already running" if was else "mirroring"
        typer.echo(f"{name}: {verb} (pid {rec.pid}) a -> {target}: {', '.join(spec.topics)}")
        typer.echo(f"  groups {', '.join(spec.groups)}; log {mm.log_file}")

    @mirror.command("stop")
    def stop_cmd(to: ToRegion = "b", name: Name = "mirror") -> None:
        """Stop the MirrorMaker 2 process by its recorded PID."""
        import os

        from cdcrouter.config.connections import DEFAULT_STATE_DIR, KafkaSettings
        from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec
        from cdcrouter.stack.regions import check_region, region_state_dir

        state = Path(os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR))
        home = region_state_dir(state, check_region(to))
        mm = MirrorMaker(MirrorSpec(KafkaSettings(), KafkaSettings(), ()), home, name=name)
        typer.echo(f"{name}: {'stopped' if mm.stop() else 'was not running'}")


def _status_command(group: typer.Typer) -> None:
    @group.command("status")
    def status(
        to: ToRegion = "b",
        name: Name = "mirror",
        max_lag_records: Annotated[
            int | None,
            typer.Option(
                "--max-lag-records", min=0, help=f"Exit {LAGGING_EXIT} when more records are behind."
            ),
        ] = None,
        max_lag_seconds: Annotated[
            float | None,
            typer.Option("--max-lag-seconds", min=0, help=f"Exit {LAGGING_EXIT} when the oldest is older."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        config: Config = None,
    ) -> None:
        """Replication lag per mirrored partition (records, seconds) and per consumer group.

        Exits 3 when a threshold is exceeded, a topic is missing in the target or a group has no
        translated offset yet (for alerts); 1 on errors.
        """
        from cdcrouter.dr.mirror import load_mirror
        from cdcrouter.dr.status import dr_status

        mm = load_mirror(name, target_region=to, config_file=config)
        result = dr_status(mm.spec, running=mm.running())
        breaches = result.breaches(max_lag_records, max_lag_seconds)
        if as_json:
            typer.echo(json.dumps({**result.to_dict(), "alerts": breaches}, indent=2))
        else:
            _print_status(result, breaches)
        if breaches:
            raise typer.Exit(LAGGING_EXIT)


def _print_status(result, breaches: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 132)
    console.print(f"mirror {result.source_alias} -> {result.target_alias}: {result.mirror_state}")
    table = Table(title="topics")
    for col in ("topic", "partition", "end a", "end b", "mirrored through", "behind", "seconds", "last in b"):
        table.add_column(col)
    for p in result.partitions:
        behind = str(p.behind_records) if p.exact else f">={p.behind_records}"
        last = "-" if p.last_mirrored_ms is None else _ts(p.last_mirrored_ms)
        table.add_row(
            p.topic,
            str(p.partition),
            str(p.source_end),
            str(p.target_end),
            str(p.mirrored_through),
            behind,
            f"{p.behind_seconds:.1f}",
            last,
        )
    console.print(table)
    if result.groups:
        groups = Table(title="consumer groups")
        for col in ("group", "topic", "partition", "committed a", "checkpoint a -> b", "synced b", "behind"):
            groups.add_column(col)
        for g in result.groups:
            point = (
                "-"
                if g.checkpoint_upstream is None
                else f"{g.checkpoint_upstream} -> {g.checkpoint_downstream}"
            )
            groups.add_row(
                g.group,
                g.topic,
                str(g.partition),
                str(g.source_committed),
                point,
                "-" if g.target_committed is None else str(g.target_committed),
                "no checkpoint yet" if g.behind_offsets is None else str(g.behind_offsets),
            )
        console.print(groups)
    for topic in result.missing_in_source:
        console.print(f"[yellow]not in {result.source_alias}: {topic}[/]")
    for line in breaches:
        console.print(f"[red]ALERT: {line}[/]")


def _ts(ms: int) -> str:
    import time

    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
