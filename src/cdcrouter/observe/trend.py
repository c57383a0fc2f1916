"""What only ``--watch`` can see: a group that keeps committing but falls further behind.

One view's two samples mark a group that commits nothing while its lag grows; a router or consumer
that is alive but slower than its input commits all the time, so that rule never fires. Across
refreshes it shows: its lag grew at every one of the last ``RISES`` refreshes.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from typing import Any

from cdcrouter.observe.health import problem

RISES = 3  # consecutive refreshes with a larger lag (about 10 s at the default interval)


class LagTrend:
    def __init__(self, rises: int = RISES) -> None:
        self.rises = rises
        self.history: dict[tuple[str, str, str], deque[int]] = defaultdict(lambda: deque(maxlen=rises + 1))

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Record this refresh's lags and add a ``*_falling_behind`` problem where the lag rose
        at each of the last refreshes (``healthy`` follows)."""
        if "error" in doc:
            return doc
        found = []
        router = doc["raw_topic"]["router_group"]
        groups = [("router", doc["raw_topic"]["name"], router)]
        groups += [("consumer", t["name"], g) for t in doc["filtered_topics"] for g in t["groups"]]
        marked = {p["where"] for p in doc["problems"]}
        for kind, topic, group in groups:
            lags = self.history[(kind, topic, group["group"])]
            lags.append(group["lag"])
            where = f"{group['group']} on {topic}"
            rising = len(lags) > self.rises and all(b > a for a, b in itertools.pairwise(lags))
            if rising and where not in marked:
                found.append(
                    problem(
                        f"{kind}_falling_behind",
                        where,
                        f"lag rose at each of the last {self.rises} refreshes, to {group['lag']}",
                        "add instances (partitions allowing) or find what slows it (its log, metrics)",
                    )
                )
        if found:
            doc["problems"] = doc["problems"] + found
            doc["healthy"] = False
        return doc
