"""``cdcrouter bench``: measured numbers for BENCHMARKS.md. Other modules add subcommands with
:func:`bench_group` (the group is created once, here)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_GROUP: typer.Typer | None = None


def bench_group() -> typer.Typer:
    """The shared ``bench`` typer group (other command modules add their benchmarks to it)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = typer.Typer(help="Benchmarks (results go to BENCHMARKS.md).", no_args_is_help=True)
    return _GROUP


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    group = bench_group()
    app.add_typer(group, name="bench")

    _snapshot_command(group)

    @group.command("generate")
    def generate(
        filters_count: int = typer.Option(1000, "--filters-count", "-n", help="synthetic filters"),
        repeat: int = typer.Option(5, "--repeat", help="timed runs (the best and median are shown)"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Time compiling N synthetic filters (YAML -> IR -> Flink SQL, both dialects)."""
        from cdcrouter.backends.bench import bench_generate

        result = bench_generate(filters_count, repeat)
        typer.echo(json.dumps(result, indent=2) if as_json else _human(result))

    @group.command("match")
    def match(
        filters_count: int = typer.Option(20, "--filters-count", "-n", help="synthetic filters"),
        events: int = typer.Option(200_000, "--events", help="events to match"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Embedded engine throughput: events/s for N filters on one core."""
        from cdcrouter.backends.bench import bench_match

        result = bench_match(filters_count, events)
        typer.echo(json.dumps(result, indent=2) if as_json else _human(result))


def _snapshot_command(group: typer.Typer) -> None:
    @group.command("snapshot")
    def snapshot(
        rows: int = typer.Option(5_000_000, "--rows", help="rows of the snapshotted table"),
        rate: int = typer.Option(1000, "--rate", help="changes/s streamed into another table meanwhile"),
        chunk: int = typer.Option(10_000, "--chunk", help="replication.snapshot_chunk_size"),
        kill_at: float = typer.Option(
            0.5, "--kill-at", min=0.0, max=1.0, help="SIGKILL the capture at this share of rows (0: never)"
        ),
        config: Path | None = typer.Option(None, "--config", envvar="CDCROUTER_CONFIG", show_default=False),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Chunked snapshot of a large table while changes stream: rows/s, latency, exactly once."""
        from cdcrouter.capture.snapshot_bench import run_snapshot_bench
        from cdcrouter.config import load_connections

        result = run_snapshot_bench(
            load_connections(config_file=config),
            rows=rows,
            rate=rate,
            chunk=chunk,
            kill_at=kill_at or None,
            report=lambda m: typer.echo(f"bench: {m}", err=True),
        )
        typer.echo(json.dumps(result, indent=2) if as_json else _human(result))


def _human(result: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items())
