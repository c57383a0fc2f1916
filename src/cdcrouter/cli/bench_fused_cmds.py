"""``cdcrouter bench fused``: COMMIT -> readable in a filtered topic, fused mode vs two hops.

Added to the shared ``bench`` group (:func:`cdcrouter.cli.bench_cmds.bench_group`); the work is in
:mod:`cdcrouter.bench.fused`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cdcrouter.cli.bench_cmds import ConfigFile, JsonOpt, _conns, _say, bench_group


def bench_fused(
    config: ConfigFile = None,
    rate: Annotated[int, typer.Option(help="Changes/s written to PostgreSQL.")] = 2000,
    seconds: Annotated[float, typer.Option(help="Length of the measured phase.")] = 15.0,
    runs: Annotated[int, typer.Option(min=1, help="Rounds (each runs every mode).")] = 3,
    backlog: Annotated[int, typer.Option(min=0, help="Backlog changes for the throughput phase.")] = 20_000,
    modes: Annotated[str, typer.Option(help="fused, two-hop or both (comma-separated).")] = "fused,two-hop",
    cold: Annotated[
        bool,
        typer.Option(
            "--cold",
            help="Instead: the demo on a just-started private stack (own ports), --runs times per mode.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fused mode vs capture + router: latency p50/p99/max at a fixed rate, throughput, peak RSS."""
    from cdcrouter.bench.fused import run_cold_demo, run_fused_bench

    wanted = tuple(m.strip() for m in modes.split(",") if m.strip())
    if cold:
        result = run_cold_demo(runs, modes=wanted, report=_say)
        typer.echo(
            json.dumps(result if as_json else {k: v for k, v in result.items() if k != "each_run"}, indent=2)
        )
        return
    result = run_fused_bench(
        _conns(config),
        rate=rate,
        seconds=seconds,
        runs=runs,
        backlog=backlog,
        modes=wanted,
        report=_say,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(json.dumps({k: v for k, v in result.items() if k not in ("rows", "each_run")}, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``cdcrouter bench fused`` to the shared bench group (registered by bench_cmds)."""
    bench_group().command("fused")(bench_fused)
