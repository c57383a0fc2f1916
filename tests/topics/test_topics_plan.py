"""Topics as code on the real broker: plan, apply, grow, refuse to shrink, delete only when asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cdcrouter.topics import TopicDefaults, TopicsError, apply_topics, plan_topics, topics_for

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka")]


def _filters(prefix: str, topics: list[str]) -> str:
    lines = ["filters:"]
    for i, t in enumerate(topics):
        lines.append(
            f"  - {{id: f{i}, consumerId: c{i}, outputTopic: {prefix}{t}, "
            "conditions: [{field: eventHeader.eventName, operator: equals, value: X}]}"
        )
    return "\n".join(lines) + "\n"


def _kinds(plan: Any) -> list[tuple[str, str]]:
    return sorted((a.kind, a.topic) for a in plan.actions)


def test_plan_apply_grow_refuse_delete(kafka_admin: Any, unique_name: Callable[[str], str]) -> None:
    p = unique_name("tp") + "-"
    raw = f"{p}raw"
    specs = topics_for(None, filters_text=_filters(p, ["a", "b"]), raw_topic=raw)
    names = {s.name for s in specs}
    assert names == {raw, f"{raw}.router.dlq", f"{p}a", f"{p}b", f"{p}a.c0.dlq", f"{p}b.c1.dlq"}

    plan = plan_topics(kafka_admin, specs)
    assert {a.kind for a in plan.actions} == {"create"} and len(plan.actions) == 6
    apply_topics(kafka_admin, plan)
    try:
        _evolve(kafka_admin, p, raw, specs, names)
    finally:
        kafka_admin.delete_topics([*names, f"{p}c", f"{p}c.c2.dlq"], operation_timeout=30)


def _evolve(kafka_admin: Any, p: str, raw: str, specs: Any, names: set[str]) -> None:
    again = plan_topics(kafka_admin, specs)
    assert again.changes == [] and sorted(again.unchanged) == sorted(names)
    md = kafka_admin.list_topics(timeout=10).topics
    assert len(md[f"{p}a"].partitions) == 3 and len(md[f"{raw}.router.dlq"].partitions) == 1

    # more partitions and a new retention: increase + alter config
    bigger = topics_for(None, defaults=TopicDefaults(partitions=4, retention_ms=3_600_000), raw_topic=raw,
                        filters_text=_filters(p, ["a", "b"]))  # fmt: skip
    plan = plan_topics(kafka_admin, bigger)
    assert ("partitions", f"{p}a") in _kinds(plan) and ("config", f"{p}a") in _kinds(plan)
    apply_topics(kafka_admin, plan)
    assert len(kafka_admin.list_topics(timeout=10).topics[f"{p}a"].partitions) == 4
    assert plan_topics(kafka_admin, bigger).changes == []

    # fewer partitions: refused, and nothing at all is applied
    smaller = topics_for(
        None, defaults=TopicDefaults(partitions=2), raw_topic=raw, filters_text=_filters(p, ["a", "b", "c"])
    )
    plan = plan_topics(kafka_admin, smaller)
    assert any(a.kind == "refuse" and a.topic == f"{p}a" for a in plan.actions)
    assert "cannot decrease partitions 4 -> 2" in plan.render()
    with pytest.raises(TopicsError, match="refusing"):
        apply_topics(kafka_admin, plan)
    assert f"{p}c" not in kafka_admin.list_topics(timeout=10).topics

    # a filter removed: only a warning without --allow-delete, a delete with it
    fewer = topics_for(None, defaults=TopicDefaults(partitions=4, retention_ms=3_600_000), raw_topic=raw,
                       filters_text=_filters(p, ["a"]))  # fmt: skip
    plan = plan_topics(kafka_admin, fewer, managed_prefixes=(p,))
    assert ("warn", f"{p}b") in _kinds(plan) and not any(a.kind == "delete" for a in plan.actions)
    apply_topics(kafka_admin, plan)
    assert f"{p}b" in kafka_admin.list_topics(timeout=10).topics
    plan = plan_topics(kafka_admin, fewer, allow_delete=True, managed_prefixes=(p,))
    assert ("delete", f"{p}b") in _kinds(plan) and ("delete", f"{p}b.c1.dlq") in _kinds(plan)
    apply_topics(kafka_admin, plan)
