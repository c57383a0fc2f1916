"""The demo's readable summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cdcrouter.demo.runner import DemoResult


def print_summary(console: Console, r: DemoResult) -> None:
    changes = Table(title="Changes written to PostgreSQL", title_justify="left")
    changes.add_column("kind")
    changes.add_column("rows", justify="right")
    for kind, n in sorted(r.changes_written.items()):
        changes.add_row(kind, str(n))
    changes.add_row("[bold]total", f"[bold]{sum(r.changes_written.values())}", end_section=True)
    changes.add_row("transactions", str(r.transactions))
    console.print(changes)

    flow = Table(title="Pipeline", title_justify="left")
    flow.add_column("stage")
    flow.add_column("events", justify="right")
    flow.add_row("captured to raw-business-events", str(r.captured))
    flow.add_row("routed by capture (fused mode)" if r.fused else "read by the router", str(r.routed_in))
    for topic in sorted(r.routed_out):
        flow.add_row(f"routed to {topic}", str(r.routed_out[topic]))
    for topic in sorted(r.consumed):
        ok = "" if r.consumed[topic] == r.routed_out.get(topic, 0) else " [red](short)"
        flow.add_row(f"consumed from {topic}", f"{r.consumed[topic]}{ok}")
    console.print(flow)

    p50, p99 = r.percentile(0.50), r.percentile(0.99)
    routed = sum(r.routed_out.values())
    missing = sum(max(0, n - r.consumed.get(t, 0)) for t, n in r.routed_out.items())
    if missing or not r.complete:  # percentiles over the events that did arrive would hide the slowest
        console.print(
            f"[red]latency not reported: {missing} of {routed} routed events never became readable "
            "in time; a latency run accounts for every event[/]"
        )
    elif p50 is not None and p99 is not None:
        console.print(
            f"latency PostgreSQL commit → readable in the filtered topic: "
            f"p50 [bold]{p50:.0f} ms[/], p99 [bold]{p99:.0f} ms[/] over {len(r.latencies_ms)} events"
        )
        s50, s99 = r.split(0.50), r.split(0.99)
        if s50 is not None and s99 is not None:
            first = "capture" if r.fused else "capture, raw topic, router's read"
            console.print(
                f"  of which commit → routed ({first}) "
                f"p50 {s50[0]:.0f} / "
                f"p99 {s99[0]:.0f} ms, routed → readable (transaction, commit, fetch) p50 {s50[1]:.0f} / "
                f"p99 {s99[1]:.0f} ms"
            )
    for name, rows in r.views.items():
        if not rows:
            continue
        view = Table(title=f"{name} consumer's view (first 5 of {len(rows)} rows)", title_justify="left")
        for col in rows[0]:
            view.add_column(str(col))
        for row in rows[:5]:
            view.add_row(*(str(v) for v in row.values()))
        console.print(view)
    if r.status is not None:
        from cdcrouter.observe.render import render_status

        console.print(render_status(r.status))
    status = (
        "[green]complete[/]" if r.complete else "[red]incomplete: timed out before every event arrived[/]"
    )
    console.print(f"run {r.run_id}: {status} in {r.seconds:.1f}s")
