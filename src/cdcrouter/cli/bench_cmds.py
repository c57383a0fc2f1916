"""``cdcrouter bench <subject>``: every benchmark behind one group, the code in :mod:`cdcrouter.bench`.

Subjects: ``capture``, ``route``, ``flink``, ``match``, ``generate``, ``snapshot``, ``stack``, and
``report`` (a markdown table of saved JSON results). Other command modules add theirs with
:func:`bench_group`. ``--repeat N`` runs a measurement N times and reports each figure as its median
and range, with the load average and peak RSS of every run (:mod:`cdcrouter.bench.stats`). The old
spellings (``capture bench``, ``route bench``, ``stack bench``) stay as hidden aliases that print a
deprecation on stderr.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cdcrouter.cli.capture_cmds import ConfigFile, Format
from cdcrouter.cli.stack_cmds import Only, _only, _reporter, _stack

_GROUP: typer.Typer | None = None

StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="CDCROUTER_STATE_DIR", help="default .cdcrouter", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
RepeatOpt = Annotated[
    int, typer.Option("--repeat", min=1, help="runs; each figure is reported as its median, min and max")
]


def bench_group() -> typer.Typer:
    """The shared ``bench`` typer group (other command modules add their benchmarks to it)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = typer.Typer(help="Benchmarks (results go to BENCHMARKS.md).", no_args_is_help=True)
    return _GROUP


def deprecated_alias(command: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """``command`` under its old spelling: same options, plus a one-line deprecation on stderr."""

    @functools.wraps(command)
    def alias(*args: Any, **kwargs: Any) -> Any:
        typer.echo(f"warning: `cdcrouter {old}` is deprecated; use `cdcrouter {new}`", err=True)
        return command(*args, **kwargs)

    return alias


def _conns(config: Path | None, state_dir: Path | None = None) -> Any:
    from cdcrouter.config import load_connections

    return load_connections(config, state_dir)


def _say(message: str) -> None:
    typer.echo(f"bench: {message}", err=True)


def _repeated(run: Callable[[], dict[str, Any]], runs: int) -> dict[str, Any]:
    from cdcrouter.bench.stats import repeat

    return repeat(run, runs, report=_say if runs > 1 else None)


def _echo(result: Any, as_json: bool) -> None:
    from cdcrouter.bench.report import human

    typer.echo(json.dumps(result, indent=2) if as_json else human(result))


def _counts(option: str, value: str, example: str, most: int) -> list[int]:
    """``'1,2'`` -> ``[1, 2]``: a benchmark option that runs each value in turn."""
    try:
        counts = [int(n) for n in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r}: expected numbers like {example}") from None
    if any(not 1 <= n <= most for n in counts):
        raise typer.BadParameter(f"{option} {value!r}: each must be between 1 and {most}")
    return counts


def bench_capture(
    config: ConfigFile = None,
    changes: Annotated[int, typer.Option(help="Backlog size for the throughput phase.")] = 500_000,
    rate: Annotated[int, typer.Option(help="Changes/s for the latency phase.")] = 2000,
    seconds: Annotated[float, typer.Option(help="Length of the latency phase.")] = 15.0,
    debezium: Annotated[
        bool,
        typer.Option(
            "--debezium/--no-debezium", help="Compare with Debezium (at-least-once and exactly-once)."
        ),
    ] = True,
    warmup: Annotated[
        int,
        typer.Option(
            help="Changes per warm-up round (not counted); rounds repeat until CPU per change settles."
        ),
    ] = 300_000,
    engines: Annotated[
        str, typer.Option(help="Comma-separated: cdcrouter, debezium-alo, debezium-eos (default: all).")
    ] = "",
    debezium_format: Annotated[
        str,
        typer.Option(
            help="Debezium's record format: avro (registry), json (no schemas), or both (a connector "
            "of each per worker, rows debezium-*-json for JSON)."
        ),
    ] = "avro",
    fmt: Format = "human",
    repeat: RepeatOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Ours (exactly-once) vs Debezium as its users run it, same table, data and machine.

    Each round measures every engine in turn (interleaved: they share the machine's load), so
    --repeat N gives N runs per engine; figures are the median (min-max)."""
    from cdcrouter.bench.capture import ENGINES, format_table, run_bench

    conns = _conns(config)
    res = run_bench(
        conns,
        changes=changes,
        rate=rate,
        latency_seconds=seconds,
        runs=repeat,
        warmup_changes=warmup,
        engines=tuple(e.strip() for e in engines.split(",") if e.strip())
        or (ENGINES if debezium else ("cdcrouter",)),
        debezium_format=debezium_format,
        report=_say,
    )
    if fmt == "json" or as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(format_table(res))


def bench_route(
    events: int = typer.Option(200_000, help="events for the throughput run"),
    filters_count: str = typer.Option(
        "20",
        "--filters-count",
        "-n",
        help="filters, a topic each; up to 20: the benchmark filters; more (up to 5,000): the realistic "
        "set of `bench match`, throughput only, a router process end to end; '4,20' runs each in turn",
    ),
    warmup: int = typer.Option(
        200_000, "--warmup", min=0, help="above 20 filters: events routed before the measured --events"
    ),
    rate: int = typer.Option(5_000, help="events/s for the latency run"),
    seconds: float = typer.Option(20.0, help="length of the latency run"),
    skip_latency: bool = typer.Option(False, "--skip-latency"),
    skip_throughput: bool = typer.Option(False, "--skip-throughput"),
    instances: int = typer.Option(1, help="also measure N router processes in one group (6 partitions)"),
    lanes: str = typer.Option("2", help="router lanes; '1,2' runs each measurement with each in turn"),
    partitions: int = typer.Option(3, min=1, help="partitions per topic in the latency run"),
    schema: str = typer.Option(
        "base",
        help="throughput: raw events written with the contract's schema (base), an evolved one with "
        "added fields (evolved), or each in turn (base,evolved)",
    ),
    config: ConfigFile = None,
    repeat: RepeatOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """Embedded engine throughput (events/s, one process) and p50/p99 append-to-visible latency."""
    from cdcrouter.bench import route as bench
    from cdcrouter.bench.report import human
    from cdcrouter.observe import logs
    from cdcrouter.route.events import BENCH_FILTERS

    logs.configure(level=logging.INFO)  # the format: --log-format
    logging.getLogger("cdcrouter.route").setLevel(logging.WARNING)
    lane_counts = _counts("--lanes", lanes, "2 or 1,2", 8)
    filter_counts = _counts("--filters-count", filters_count, "20 or 4,20", 5_000)
    schemas = [x.strip() for x in schema.split(",") if x.strip()]
    if not schemas or set(schemas) - {"base", "evolved"}:
        raise typer.BadParameter(f"--schema {schema!r}: expected base, evolved or base,evolved")
    conns = _conns(config)
    results: list[dict[str, Any]] = []

    def measure(run: Callable[[], dict[str, Any]]) -> None:
        results.append(_repeated(run, repeat))
        if not as_json:
            typer.echo(human(results[-1]) + "\n")

    for f in filter_counts:
        if f > len(BENCH_FILTERS):  # the realistic set at scale: throughput of the router process
            from cdcrouter.bench.route_scale import run_scale

            if not skip_throughput:
                for n in lane_counts:
                    measure(lambda f=f, n=n: run_scale(conns, f, events, warmup, lanes=n, report=_say))
            if not skip_latency:
                _say(f"latency at {f} filters is not measured: the latency run has the 20 benchmark filters")
            continue
        if not skip_throughput:
            for n in lane_counts:
                for kind in schemas:
                    measure(lambda f=f, n=n, e=kind == "evolved": bench.throughput(conns, events, f, n, e))
            if instances > 1:
                measure(lambda f=f: bench.throughput_processes(conns, events, f, instances))
        if not skip_latency:
            for n in lane_counts:
                measure(lambda f=f, n=n: bench.latency(conns, rate, seconds, f, n, partitions))
    if as_json:
        typer.echo(json.dumps(results, indent=2))


def bench_flink(
    events: int = typer.Option(1_000_000, "--events", min=1, help="measured events (after the warm-up)"),
    warmup: int = typer.Option(200_000, "--warmup", min=0, help="warm-up events before the measured ones"),
    filters_count: int = typer.Option(
        20, "--filters-count", min=1, help="20: the benchmark filters; 21-100: the realistic-selectivity set"
    ),
    checkpoint_interval: str = typer.Option(
        "5s", "--checkpoint-interval", help="Flink checkpoint interval (cdcrouter deploy's default)"
    ),
    sink_shape: list[str] = typer.Option(
        ["per-topic"], "--sink-shape", help="per-topic and/or one-sink (repeat the option for both)"
    ),
    latency: bool = typer.Option(False, "--latency", help="also p50/p99 at --rate (both guarantees)"),
    latency_only: bool = typer.Option(False, "--latency-only", help="only the latency rows (no throughput)"),
    rate: int = typer.Option(5_000, "--rate", help="append rate for the latency run (events/s)"),
    seconds: float = typer.Option(20.0, "--seconds", help="latency run length"),
    config: ConfigFile = None,
    state_dir: StateDirOpt = None,
    repeat: RepeatOpt = 3,
) -> None:
    """Ours vs Flink set up fairly (parallelism = cores, sized memory), counted from the output topics."""
    from cdcrouter.backends.flink_sql import SINK_SHAPES
    from cdcrouter.bench import flink
    from cdcrouter.errors import UsageError
    from cdcrouter.route.events import bench_filters_yaml

    bad = [s for s in sink_shape if s not in SINK_SHAPES]
    if bad or filters_count > 100:
        raise UsageError(
            f"unknown sink shape {bad[0]!r}" if bad else "--filters-count is at most 100",
            hint=f"--sink-shape takes {' or '.join(SINK_SHAPES)}; --filters-count 1-20 or 21-100",
        )
    import signal
    import sys

    # SIGTERM ends the run through its finally blocks: the private Flink and the topics go too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    conns = _conns(config, state_dir)

    def _report(row: dict[str, Any]) -> None:
        _say(json.dumps(row))

    if filters_count <= 20:
        filters_yaml = functools.partial(bench_filters_yaml, count=filters_count)
    else:
        filters_yaml = functools.partial(flink.realistic_filters_yaml, count=filters_count)
    if latency_only:
        rows = flink.latency_side_by_side(
            conns, min(filters_count, 20), rate, seconds, checkpoint_interval, repeat=repeat, report=_report
        )
        out = {"filters": min(filters_count, 20), "checkpoint_interval": checkpoint_interval, "latency": rows}
        typer.echo(json.dumps({**out, "latency_summary": flink.summarize_latency(rows)}, indent=2))
        return
    result = flink.anchor(
        conns,
        filters_yaml,
        events=events,
        warmup=warmup,
        repeat=repeat,
        interval=checkpoint_interval,
        sink_shapes=tuple(dict.fromkeys(sink_shape)),
        report=_report,
    )
    result["filters"] = filters_count
    if latency:
        result["latency"] = flink.latency_side_by_side(
            conns, min(filters_count, 20), rate, seconds, checkpoint_interval, repeat=repeat, report=_report
        )
        result["latency_summary"] = flink.summarize_latency(result["latency"])
    typer.echo(json.dumps(result, indent=2))


def bench_generate(
    filters_count: int = typer.Option(1000, "--filters-count", "-n", help="synthetic filters"),
    repeat: int = typer.Option(5, "--repeat", min=1, help="runs; each figure as its median, min and max"),
    as_json: JsonOpt = False,
) -> None:
    """Time compiling N synthetic filters (YAML -> IR -> Flink SQL)."""
    from cdcrouter.bench.match import bench_generate as run

    _echo(run(filters_count, repeat), as_json)


def bench_match(
    filters_count: int = typer.Option(20, "--filters-count", "-n", help="filters of the synthetic set"),
    events: str = typer.Option(
        "200000",
        "--events",
        help="events to match in all, or a file of your events (JSON lines, as `cdcrouter explain` reads)",
    ),
    count: int = typer.Option(200_000, "--count", min=1, help="events to match in all with --events FILE"),
    filters: Path | None = typer.Option(
        None, "--filters", help="your filters.yaml instead of the synthetic set"
    ),
    synthetic: str = typer.Option(
        "realistic", "--set", help="synthetic set: realistic (most events match 1-3 filters) or operators"
    ),
    index: bool = typer.Option(
        True, "--index/--no-index", help="--no-index: test every filter inline, as before the index"
    ),
    repeat: RepeatOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """Embedded engine throughput: events/s on one core, for N synthetic filters or your own files."""
    from cdcrouter.bench.match import SETS
    from cdcrouter.bench.match import bench_match as run

    if synthetic not in SETS:
        raise typer.BadParameter(f"{synthetic!r}: expected one of {', '.join(SETS)}", param_hint="--set")
    events_path = None if events.isdigit() else Path(events)
    total = count if events_path else int(events)
    options = {"synthetic": synthetic, "filters_path": filters, "events_path": events_path, "index": index}
    _echo(_repeated(lambda: run(filters_count, total, **options), repeat), as_json)


def bench_snapshot(
    rows: int = typer.Option(5_000_000, "--rows", help="rows of the snapshotted table"),
    rate: int = typer.Option(1000, "--rate", help="changes/s streamed into another table meanwhile"),
    chunk: int = typer.Option(10_000, "--chunk", help="replication.snapshot_chunk_size"),
    kill_at: float = typer.Option(
        0.5, "--kill-at", min=0.0, max=1.0, help="SIGKILL the capture at this share of rows (0: never)"
    ),
    config: ConfigFile = None,
    repeat: RepeatOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """Chunked snapshot of a large table while changes stream: rows/s, latency, exactly once."""
    from cdcrouter.bench.snapshot import run_snapshot_bench

    conns = _conns(config)
    result = _repeated(
        lambda: run_snapshot_bench(
            conns, rows=rows, rate=rate, chunk=chunk, kill_at=kill_at or None, report=_say
        ),
        repeat,
    )
    _echo(result, as_json)


def bench_stack(
    only: Only = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="A scratch state dir (default: a temp dir).")
    ] = None,
    settle: Annotated[float, typer.Option(help="Seconds to keep sampling memory after each up.")] = 20.0,
    running: Annotated[
        bool, typer.Option("--running", help="Only sample the memory of the stack running in --state-dir.")
    ] = False,
) -> None:
    """Measure cold, no-op and warm `stack up` and peak memory (PSS) on free ports in a scratch dir."""
    from cdcrouter.bench.stack import run_bench, sample_running

    if running:
        typer.echo(json.dumps(sample_running(_stack(state_dir), settle), indent=2))
        return
    result = run_bench(_only(only), state_dir=state_dir, settle_seconds=settle, report=_reporter())
    typer.echo(json.dumps(result, indent=2))


def bench_report(
    directory: Annotated[
        Path, typer.Argument(help="a directory of JSON results (make bench: bench-results)")
    ],
) -> None:
    """A markdown table of the JSON results saved in DIRECTORY (one row per measured figure)."""
    from cdcrouter.bench.report import load_dir, markdown
    from cdcrouter.errors import UsageError

    results = load_dir(directory) if directory.is_dir() else {}
    if not results:
        raise UsageError(f"{directory}: no *.json benchmark results", hint="run `make bench` first")
    typer.echo(markdown(results))


SUBJECTS: dict[str, Callable[..., Any]] = {
    "capture": bench_capture,
    "route": bench_route,
    "flink": bench_flink,
    "match": bench_match,
    "generate": bench_generate,
    "snapshot": bench_snapshot,
    "stack": bench_stack,
    "report": bench_report,
}


def register(app: typer.Typer) -> None:
    """Add ``cdcrouter bench <subject>`` to ``app``."""
    group = bench_group()
    app.add_typer(group, name="bench")
    for name, command in SUBJECTS.items():
        group.command(name)(command)


def register_alias(group: typer.Typer, group_name: str, subject: str) -> None:
    """The old ``cdcrouter <group_name> bench`` spelling of ``cdcrouter bench <subject>``, hidden."""
    alias = deprecated_alias(SUBJECTS[subject], f"{group_name} bench", f"bench {subject}")
    group.command("bench", hidden=True)(alias)
