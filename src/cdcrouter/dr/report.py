"""The drill's report: RPO (lost and duplicated changes), RTO and the failover's duration, as text
for a person and as JSON for a script or BENCHMARKS.md."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from cdcrouter.dr.rto import Recovery
from cdcrouter.dr.verify import Verdict


@dataclass
class ViewVerdict:
    """The consumer application's view compared with the committed rows."""

    rows: int = 0
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # a row whose value is not the committed one
    extra_deliveries: int = 0  # deliveries the idempotency store let through twice

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "missing": len(self.missing),
            "missing_sample": self.missing[:10],
            "wrong": len(self.wrong),
            "extra_deliveries": self.extra_deliveries,
        }


def check_view(committed: dict[str, str], view: dict[str, tuple[str, int]]) -> ViewVerdict:
    v = ViewVerdict(rows=len(view))
    v.missing = sorted(i for i in committed if i not in view)
    v.wrong = sorted(i for i, val in committed.items() if i in view and view[i][0] != val)
    v.extra_deliveries = sum(n - 1 for _, n in view.values() if n > 1)
    return v


@dataclass
class DrillReport:
    scenario: str
    run: str
    description: str = ""
    rate: float = 0.0
    seconds: float = 0.0
    acked: int = 0
    in_doubt: int = 0
    failed_writes: int = 0
    reconnects: int = 0
    verdict: Verdict | None = None
    view: ViewVerdict | None = None
    recovery: Recovery | None = None
    failover_s: float | None = None
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_average: tuple[float, float, float] = field(default_factory=lambda: os.getloadavg())  # at the start
    load_average_end: tuple[float, float, float] | None = None
    error: str | None = None

    @property
    def lost(self) -> int:
        return (self.verdict.lost if self.verdict else 0) + (len(self.view.missing) if self.view else 0)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing unexpected, and every duplicate one a uuid dedup removes."""
        if self.error or self.verdict is None:
            return False
        v = self.verdict
        view_ok = self.view is None or (not self.view.missing and not self.view.wrong)
        return v.lost == 0 and v.unexpected == 0 and v.duplicate_changes == 0 and view_ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run": self.run,
            "description": self.description,
            "ok": self.ok,
            "error": self.error,
            "rate": self.rate,
            "seconds": round(self.seconds, 1),
            "workload": {
                "achieved_rate": round(self.acked / self.seconds, 1) if self.seconds else None,
                "acked": self.acked,
                "in_doubt": self.in_doubt,
                "failed_writes": self.failed_writes,
                "reconnects": self.reconnects,
            },
            "rpo": self.verdict.to_dict() if self.verdict else None,
            "consumer_view": self.view.to_dict() if self.view else None,
            "rto": self.recovery.to_dict() if self.recovery else None,
            "failover_s": None if self.failover_s is None else round(self.failover_s, 2),
            "load_average": [round(x, 2) for x in self.load_average],
            "load_average_end": [round(x, 2) for x in self.load_average_end]
            if self.load_average_end
            else None,
            "steps": self.steps,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        out = [f"drill {self.scenario} ({self.run}): {'PASSED' if self.ok else 'FAILED'}"]
        if self.description:
            out.append(f"  {self.description}")
        if self.error:
            out.append(f"  error: {self.error}")
        out.append(
            f"  workload: {self.acked} commits acknowledged over {self.seconds:.0f} s "
            f"({self.acked / self.seconds if self.seconds else 0:.0f}/s of {self.rate:g}/s asked), "
            f"{self.in_doubt} in doubt, {self.failed_writes} refused, {self.reconnects} reconnects"
        )
        if self.verdict:
            v = self.verdict
            out.append(
                f"  RPO: {v.lost} committed change(s) lost of {v.committed}; duplicates: {v.duplicate_uuids} "
                f"repeated uuid(s), {v.duplicate_changes} change(s) under a second uuid; "
                f"{v.unexpected} unexpected event(s)"
            )
            if v.db_lost:
                out.append(f"  database: {len(v.db_lost)} acknowledged commit(s) missing after the failover")
            for t in v.topics:
                out.append(
                    f"    {t.topic}: {t.events} events for {t.expected} changes, lost {len(t.lost)}, "
                    f"dup uuids {t.duplicate_uuids}, dup changes {t.duplicate_changes}, "
                    f"unexpected {len(t.unexpected)}"
                )
        if self.view:
            w = self.view
            out.append(
                f"  consumer view: {w.rows} rows, {len(w.missing)} missing, {len(w.wrong)} wrong, "
                f"{w.extra_deliveries} duplicate(s) past the idempotency store"
            )
        if self.recovery:
            r = self.recovery
            out.append(
                f"  RTO: {_s(r.rto_s)} until every partition delivered a change committed after the failure "
                f"(first one after {_s(r.first_s)})"
            )
        if self.failover_s is not None:
            out.append(f"  failover command: {self.failover_s:.1f} s")
        la = ", ".join(f"{x:.2f}" for x in self.load_average)
        end = ", ".join(f"{x:.2f}" for x in self.load_average_end or ())
        out.append(f"  load average (1, 5, 15 min) at the start: {la}; at the end: {end or 'n/a'}")
        if self.steps:
            out.append("  timeline:")
            out.extend(f"    {s}" for s in self.steps)
        out.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(out)


def _s(v: float | None) -> str:
    return "n/a (no change arrived)" if v is None else f"{v:.1f} s"
