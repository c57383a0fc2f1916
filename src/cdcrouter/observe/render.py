"""The human view of a status document: rich tables, problems first."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for c in columns:
        table.add_column(c)
    return table


def render_status(doc: dict[str, Any]) -> Group:
    """Every section of ``doc`` as a table; marked rows in red."""
    bad = {p["where"] for p in doc["problems"]}
    parts: list[Any] = [_summary(doc)]
    cap = doc.get("capture")
    if cap is not None:
        t = _table(
            "Capture", "slot", "active", "wal_status", "retained WAL", "grew", "confirmed / current LSN",
            "Kafka position", "last event", "events/s", "snapshot",
        )  # fmt: skip
        kafka = cap.get("kafka") or {}
        snap = cap.get("snapshot")
        snapshot = "running (below)" if snap else ("done" if kafka.get("snapshot_done") else "-")
        t.add_row(
            cap["slot"],
            _fmt(cap.get("active")),
            _fmt(cap.get("wal_status")),
            _fmt(cap.get("retained_wal_bytes")),
            _fmt(cap.get("retained_wal_growth_bytes")),
            f"{_fmt(cap.get('confirmed_flush_lsn'))} / {_fmt(cap.get('current_wal_lsn'))}",
            _fmt(kafka.get("committed_lsn")),
            _fmt(kafka.get("last_event_time")),
            _fmt(kafka.get("events_per_s")),
            snapshot,
            style="red" if cap["slot"] in bad else None,
        )
        parts.append(t)
        if snap:
            t = _table("Snapshot in progress", "table", "rows", "of about", "%", "rows/s", "ETA s", "queued")
            t.add_row(
                str(snap.get("table")),
                _fmt(snap.get("rows")),
                _fmt(snap.get("estimated_rows")),
                _fmt(snap.get("percent")),
                _fmt(snap.get("rows_per_s")),
                _fmt(snap.get("eta_s")),
                ", ".join(snap.get("queued") or []) or "-",
            )
            parts.append(t)
    raw = doc["raw_topic"]
    router = raw["router_group"]
    t = _table(f"Raw topic {raw['name']}: router group {router['group']} ({router['state']})",
               "partition", "committed", "end (stable)", "lag", "lag before", "member")  # fmt: skip
    owner = {p: f"{m['client_id']} {m['host']}" for m in router["members"] for p in m["assignment"]}
    marked = any(w.startswith(f"{router['group']} on {raw['name']}") for w in bad)
    for r in router["partitions"]:
        t.add_row(
            str(r["partition"]), _fmt(r["committed"]), _fmt(r["end"]), _fmt(r["lag"]), _fmt(r["lag_before"]),
            owner.get(r["partition"], "-"), style="red" if marked and r["lag"] else None,
        )  # fmt: skip
    parts.append(t)
    t = _table(
        "Filters",
        "filter",
        "consumer",
        "topic",
        "events/s",
        "in window",
        "routed total",
        "latency p50 / p99 ms",
        "routing p50",
    )
    lat = {(x["filter_id"], x["topic"]): x for x in doc["latency"]}
    for f in doc["filters"]:
        la = lat.get((f["id"], f["topic"]), {})
        t.add_row(
            f["id"], f["consumer_id"], f["topic"], _fmt(f["events_per_s"]), _fmt(f["events_in_window"]),
            _fmt(f["routed_total"]),
            f"{_fmt(la.get('p50_ms'))} / {_fmt(la.get('p99_ms'))}", _fmt(la.get("routing_p50_ms")),
        )  # fmt: skip
    parts.append(t)
    t = _table(
        "Consumer groups on filtered topics", "topic", "group", "state", "members", "lag", "lag before"
    )
    for topic in doc["filtered_topics"]:
        for g in topic["groups"]:
            where = f"{g['group']} on {topic['name']}"
            t.add_row(
                topic["name"], g["group"], g["state"], str(len(g["members"])), _fmt(g["lag"]),
                _fmt(g["lag_before"]), style="red" if where in bad else None,
            )  # fmt: skip
    parts.append(t)
    t = _table("Dead-letter topics", "topic", "kind", "depth")
    for d in doc["dead_letter_topics"]:
        t.add_row(
            d["name"],
            d["kind"],
            _fmt(d["depth"]) if d["exists"] else "(none)",
            style="red" if d["depth"] else None,
        )
    parts.append(t)
    if doc["jobs"]:
        t = _table("Routing jobs", "target", "name", "state")
        for j in doc["jobs"]:
            t.add_row(j["target"], j["name"], j["state"], style=None if j["ok"] else "red")
        parts.append(t)
    return Group(*parts)


def _summary(doc: dict[str, Any]) -> Any:
    head = Text(f"cdcrouter status at {doc['generated_at']} (sampled over {doc['sample_seconds']} s): ")
    if doc["healthy"]:
        head.append("healthy", style="bold green")
        return head
    head.append(f"{len(doc['problems'])} problem(s)", style="bold red")
    t = _table("", "problem", "where", "what", "do")
    for p in doc["problems"]:
        t.add_row(p["code"], p["where"], p["message"], p["hint"], style="red")
    return Group(head, t)
