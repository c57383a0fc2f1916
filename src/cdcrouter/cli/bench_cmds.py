"""``cdcrouter bench``: measured numbers for BENCHMARKS.md. Other modules add subcommands with
:func:`bench_group` (the group is created once, here)."""

from __future__ import annotations

import json

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


def _human(result: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in result.items())
