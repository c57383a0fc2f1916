"""Routed totals per filter from the embedded routers' Prometheus endpoints (``cdcrouter run
--metrics-port``), when the status view is given them: exact counts, which the filtered topics'
offsets cannot give (transaction markers take offsets too, and several filters may share a topic).
The totals count since each router process started, summed over the processes given."""

from __future__ import annotations

from collections import Counter

import httpx

MATCHED = "cdcrouter_route_matched"


def routed_totals(urls: list[str], timeout: float = 5.0) -> tuple[Counter[str], list[str]]:
    """Per filter id, events routed (committed) by the routers at ``urls``; and the URLs that did
    not answer (their router is down, or the address is wrong)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Counter[str] = Counter()
    unreachable = []
    for url in urls:
        try:
            resp = httpx.get(url, timeout=timeout)
            resp.raise_for_status()
        except httpx.HTTPError:
            unreachable.append(url)
            continue
        for family in text_string_to_metric_families(resp.text):
            if family.name != MATCHED:
                continue
            for sample in family.samples:
                if sample.name == f"{MATCHED}_total":
                    totals[sample.labels["filter_id"]] += int(sample.value)
    return totals, unreachable
