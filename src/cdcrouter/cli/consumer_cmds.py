"""``cdcrouter consume`` and ``cdcrouter dlq list|replay``: thin commands over ``cdcrouter.consumer``."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from cdcrouter.errors import UsageError

Config = Annotated[
    Path | None,
    typer.Option("--config", envvar="CDCROUTER_CONFIG", help="cdcrouter.yaml with a connections: section."),
]
Fmt = Annotated[str, typer.Option("--format", help="table or json (one JSON object per line).")]


def _conns(config: Path | None) -> Any:
    from cdcrouter.config import load_connections

    return load_connections(config)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise UsageError(
            f"--format {fmt!r} is not one of table, json", hint="use --format table or --format json"
        )


def consume(
    topic: Annotated[str, typer.Argument(help="The topic to read, e.g. filtered-loan-events.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    max_messages: Annotated[int | None, typer.Option("--max", help="Stop after N records.")] = None,
    fmt: Fmt = "table",
    group: Annotated[
        str | None, typer.Option("--group", help="Read as this consumer group (from its committed offsets).")
    ] = None,
    commit: Annotated[bool, typer.Option("--commit", help="With --group: commit what was shown.")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop after this many idle seconds.")
    ] = None,
    config: Config = None,
) -> None:
    """Tail a topic, decoded (Avro via the registry) and readable; read_committed, commits nothing."""
    from rich.console import Console
    from rich.markup import escape

    from cdcrouter.consumer._tail import attributes_text, extras_text, iso, tail

    _check_format(fmt)
    if commit and group is None:
        raise UsageError("--commit needs --group", hint="pass --group NAME to commit offsets for that group")
    console = Console(highlight=False, soft_wrap=True)
    rows = tail(
        _conns(config),
        topic,
        from_beginning=from_beginning,
        max_messages=max_messages,
        group=group,
        commit=commit,
        idle_timeout=timeout,
    )
    if fmt == "table":
        console.print(
            f"[bold]{'partition@offset':<18} {'event':<24} {'entity':<28} {'created (UTC)':<25} attributes"
        )
    try:
        for row in rows:
            if fmt == "json":
                typer.echo(orjson.dumps(row.to_dict()).decode())
                continue
            pos = f"{row.origin.partition}@{row.origin.offset}"
            if row.event is None:
                console.print(f"{pos:<18} [red]undecodable: {escape(row.error or '')}[/]")
                continue
            ev = row.event
            ent = ev.entities[0] if ev.entities else None
            entity = f"{ent.entity_type} {ent.entity_id}" if ent else "-"
            console.print(
                f"[dim]{pos:<18}[/] [bold cyan]{escape(ev.name):<24}[/] {escape(entity):<28} "
                f"{iso(ev.header.created_date):<25} {escape(attributes_text(ev))} {escape(extras_text(row))}"
            )
    except KeyboardInterrupt:
        pass


def dlq_list(
    topic: Annotated[str | None, typer.Argument(help="A dead-letter topic: show its records.")] = None,
    max_messages: Annotated[int, typer.Option("--max", help="At most N records.")] = 50,
    fmt: Fmt = "table",
    config: Config = None,
) -> None:
    """List dead-letter topics with their record counts, or one DLQ's records with their errors."""
    from rich.console import Console
    from rich.table import Table

    from cdcrouter.consumer._replay import list_dlqs, read_dlq

    _check_format(fmt)
    conns = _conns(config)
    console = Console(highlight=False)
    console.width = max(console.width, 140)
    if topic is None:
        infos = list_dlqs(conns)
        if fmt == "json":
            typer.echo(orjson.dumps([i.__dict__ for i in infos]).decode())
            return
        table = Table(title="dead-letter topics")
        for col in ("topic", "origin topic", "consumer", "records"):
            table.add_column(col, justify="right" if col == "records" else "left")
        for i in infos:
            table.add_row(i.topic, i.origin, i.consumer, str(i.records))
        console.print(table if infos else "no dead-letter topics")
        return
    records = read_dlq(conns, topic, limit=max_messages)
    if fmt == "json":
        for r in records:
            typer.echo(orjson.dumps(_record_json(r)).decode())
        return
    table = Table(title=f"{topic}: {len(records)} record(s)")
    for col in ("p@offset", "origin", "key", "stage", "attempts", "error", "uuid"):
        table.add_column(col)
    for r in records:
        f = r.failure
        table.add_row(
            f"{r.partition}@{r.offset}",
            _origin(f),
            r.key.decode("utf-8", "replace") if r.key else "-",
            f.get("stage", "-"),
            f.get("attempts", "-"),
            f.get("error", "-"),
            f.get("event_uuid") or "-",
        )
    console.print(table)


def _origin(failure: dict[str, str]) -> str:
    """Where the failed record came from: a topic position, or for capture's letters the table and
    WAL position of the change (it never was a Kafka record)."""
    if failure.get("stage") == "capture":
        return f"table {failure.get('table', '?')} at LSN {failure.get('lsn') or '?'}"
    return f"{failure.get('topic')}[{failure.get('partition')}]@{failure.get('offset')}"


_SOURCE_FIELDS = ("topic", "partition", "offset", "timestamp")


def _record_json(r: Any) -> dict[str, Any]:
    """A DLQ record for ``--format json``: its own topic, partition and offset; where it came from
    as ``source_topic``, ``source_partition``, ``source_offset`` (and ``source_timestamp``)."""
    failure = dict(r.failure)
    source: dict[str, Any] = {f"source_{k}": failure.pop(k) for k in _SOURCE_FIELDS if k in failure}
    for k in ("source_partition", "source_offset", "source_timestamp"):
        if str(source.get(k, "")).isdigit():
            source[k] = int(source[k])
    key = r.key.decode("utf-8", "replace") if r.key else None
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset, "key": key, **source, **failure}


def _load_app(spec: str) -> Any:
    from cdcrouter.consumer import ConsumerApp

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UsageError(f"--app {spec!r} is not MODULE:ATTRIBUTE", hint="e.g. --app myconsumer:app")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--app {spec}: {exc}", hint="the module must be importable (PYTHONPATH)") from exc
    if inspect.isfunction(obj):
        obj = obj()  # a factory such as cdcrouter.consumer.examples.loan:build
    if not isinstance(obj, ConsumerApp):
        raise UsageError(
            f"--app {spec} is not a ConsumerApp", hint="point at the app or a function returning it"
        )
    return obj


def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The dead-letter topic, e.g. filtered-loan-events.loan.dlq.")],
    to_topic: Annotated[
        str | None, typer.Option("--to-topic", help="Produce here instead of each record's origin topic.")
    ] = None,
    app: Annotated[
        str | None,
        typer.Option("--app", help="MODULE:ATTR of a ConsumerApp: call its handlers directly instead."),
    ] = None,
    partition: Annotated[int | None, typer.Option("--partition", help="Only this DLQ partition.")] = None,
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", help="First DLQ offset to replay.")
    ] = None,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="Last DLQ offset to replay.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replay records an earlier replay already moved.")
    ] = False,
    config: Config = None,
) -> None:
    """Replay dead-lettered records to their topic (exactly-once) or into a consumer's handlers.

    Safe to re-run: records an earlier replay moved are skipped (unless --force).
    """
    from cdcrouter.consumer._replay import replay

    if app and to_topic:
        raise UsageError("--app and --to-topic exclude each other", hint="choose one target")
    target_app = _load_app(app) if app else None
    result = replay(
        _conns(config),
        topic,
        to_topic=to_topic,
        app=target_app,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        force=force,
    )
    where = ", ".join(f"{t}: {n}" for t, n in sorted(result.targets.items())) or "-"
    typer.echo(f"replayed {result.replayed} record(s) ({where}); skipped {result.skipped} already replayed")


def register(app: typer.Typer) -> None:
    """Add ``consume`` and the ``dlq`` group to ``app``."""
    app.command("consume")(consume)
    dlq = typer.Typer(help="Dead-letter topics: list and replay.", no_args_is_help=True)
    dlq.command("list")(dlq_list)
    dlq.command("replay")(dlq_replay)
    app.add_typer(dlq, name="dlq")
