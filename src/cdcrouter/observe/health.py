"""The problems the status view marks. Each has a stable ``code`` (docs/operations.md says what to
do about each); any problem makes the pipeline unhealthy (``status --exit-code`` exits 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdcrouter.consumer._dlq import CAPTURE_DLQ_HINT

WAL_DANGER = ("lost", "unreserved", "extended")


def problem(code: str, where: str, message: str, hint: str) -> dict[str, str]:
    return {"code": code, "where": where, "message": message, "hint": hint}


def problems_of(doc: dict[str, Any], unreachable_metrics: Sequence[str] = ()) -> list[dict[str, str]]:
    """Every problem found in a status document, capture first, in pipeline order."""
    out: list[dict[str, str]] = []
    out += _capture(doc.get("capture"))
    raw = doc.get("raw_topic") or {}
    if raw and not raw.get("exists"):
        out.append(
            problem(
                "raw_topic_missing", raw["name"], "the raw topic does not exist", "cdcrouter topics apply"
            )
        )
    router = raw.get("router_group")
    if router and _router_in_use(router, doc.get("jobs", [])):
        out += _lag("router", router, raw["name"], "start the router: cdcrouter run")
    for url in unreachable_metrics:
        out.append(
            problem(
                "router_metrics_unreachable",
                url,
                "a router's metrics endpoint does not answer",
                "is that `cdcrouter run --metrics-port` process up? check --router-metrics",
            )
        )
    for topic in doc.get("filtered_topics", []):
        if not topic["exists"]:
            out.append(
                problem(
                    "topic_missing", topic["name"], "filtered topic does not exist", "cdcrouter topics apply"
                )
            )
        for group in topic["groups"]:
            out += _lag("consumer", group, topic["name"], "start or scale the consumer application")
    for dlq in doc.get("dead_letter_topics", []):
        if dlq["depth"]:
            out.append(
                problem(
                    "dlq_not_empty",
                    dlq["name"],
                    f"{dlq['depth']} dead-lettered record(s) ({dlq['kind']})",
                    f"cdcrouter dlq list {dlq['name']}; {CAPTURE_DLQ_HINT}"
                    if dlq["kind"] == "capture"
                    else f"cdcrouter dlq list; fix the cause, then cdcrouter dlq replay {dlq['name']}",
                )
            )
    for job in doc.get("jobs", []):
        if not job["ok"]:
            out.append(
                problem(
                    "job_not_running",
                    f"{job['target']}:{job['name']}",
                    f"routing job is {job['state']}",
                    f"cdcrouter deploy status --target {job['target']} --name {job['name']}; "
                    "cdcrouter deploy resume",
                )
            )
    return out


def _router_in_use(router: dict[str, Any], jobs: list[dict[str, Any]]) -> bool:
    """The embedded router's group is judged unless routing runs on Flink / Confluent Cloud and the
    group never was used (no commit, no member): then the job's state speaks for routing."""
    used = router["members"] or any(r["committed"] is not None for r in router["partitions"])
    return bool(used or not jobs)


def _capture(cap: dict[str, Any] | None) -> list[dict[str, str]]:
    if cap is None:
        return []
    slot = cap["slot"]
    if not cap.get("slot_exists"):
        return [problem("slot_missing", slot, "the replication slot does not exist", "cdcrouter capture run")]
    out = []
    if not cap.get("active"):
        growth = cap.get("retained_wal_growth_bytes")
        grew = f"; retained WAL grew {growth} bytes while sampled" if growth else ""
        out.append(
            problem(
                "slot_inactive",
                slot,
                f"no capture streams from the slot ({cap.get('retained_wal_bytes')} bytes retained{grew})",
                "start cdcrouter capture run; an idle slot pins WAL until the disk fills",
            )
        )
    wal = cap.get("wal_status")
    if wal in WAL_DANGER:
        hints = {
            "lost": "the slot lost WAL it needs: cdcrouter capture run --resnapshot",
            "unreserved": "WAL will be removed at the next checkpoint: let capture catch up now",
            "extended": "retained WAL is past max_wal_size: let capture catch up "
            "(and check max_slot_wal_keep_size)",
        }
        out.append(problem(f"slot_wal_{wal}", slot, f"wal_status is {wal}", hints[wal]))
    return out


def _lag(kind: str, group: dict[str, Any], topic: str, hint: str) -> list[dict[str, str]]:
    where = f"{group['group']} on {topic}"
    if group["lag_growing"]:
        return [
            problem(
                f"{kind}_lag_growing",
                where,
                f"lag grew from {group['lag_before']} to {group['lag']} with no commit in the window",
                hint,
            )
        ]
    if group["stalled"]:
        return [problem(f"{kind}_stalled", where, f"lag {group['lag']} and no commit in the window", hint)]
    return []
