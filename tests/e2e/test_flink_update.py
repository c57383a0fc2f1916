"""Updating a deployed routing job on real Flink resumes from the old job's offsets.

Events produced before an update must not be emitted again (not by a changed filter, not by a new
one), events after it must be emitted once; the same across ``deploy stop`` and ``resume``.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cdcrouter.deploy.flink_target import FlinkDeployment, FlinkOptions

from . import support as s

pytestmark = [pytest.mark.integration, pytest.mark.flink]

A_V1 = "eventHeader.eventName = 'LoanCreated'"
A_V2 = "eventHeader.eventName IN ('LoanCreated', 'LoanUpdated')"
B = "eventBody.entities[1].entityType = 'Car'"
SECRET = "sasl-password-must-not-leak"  # a connection option that must never be planned or stored


def _uuids(bootstrap: str, topic: str, decode: s.Decoder, expect: int) -> Counter[str]:
    # A re-emitted earlier event comes before the new ones it precedes in the raw topic (same or an
    # earlier checkpoint's transaction), so it is read by the time `expect` records are; the
    # comparison is of multisets, so a duplicate fails it even when it makes up the count early.
    # The short idle wait is for a stray record after that.
    recs = s.consume_all(bootstrap, topic, expect=expect, idle_s=1.5, timeout_s=180)
    return Counter(decode(v)["eventHeader"]["uuid"] for _, v in recs)


def _ids(events: list[dict], pred) -> Counter[str]:
    return Counter(e["eventHeader"]["uuid"] for e in events if pred(e))


def test_update_and_resume_carry_offsets_over(flink_stack, unique_name, tmp_path) -> None:
    bootstrap, registry = flink_stack.kafka_bootstrap, flink_stack.registry_url
    raw, out_a, out_b = unique_name("raw"), unique_name("fa"), unique_name("fb")
    s.create_topics(bootstrap, [raw, out_a, out_b])
    events = s.make_events(900, seed=11)
    batch1, batch2, batch3 = events[:300], events[300:600], events[600:]
    name = unique_name("dep")
    render = s.render({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry})
    dep = FlinkDeployment(
        name, flink_stack.sql_gateway_url, flink_stack.flink_rest_url, tmp_path, render,
        FlinkOptions(checkpoint_interval="1s", connection_options={"properties.cdcrouter.probe": SECRET}),
    )  # fmt: skip
    decode = s.Decoder(registry)
    name_is = lambda *n: lambda e: e["eventHeader"]["eventName"] in n  # noqa: E731
    is_car = lambda e: e["eventBody"]["entities"][0]["entityType"] == "Car"  # noqa: E731
    try:
        s.produce(bootstrap, raw, registry, batch1)
        v1 = s.handwritten_flink_script(raw, [("a", "ca", out_a, A_V1)])
        plan, script = dep.plan(v1)
        assert [a.verb for a in plan.actions] == ["create"]
        dep.apply(plan, script)
        want_a = _ids(batch1, name_is("LoanCreated"))
        assert _uuids(bootstrap, out_a, decode, sum(want_a.values())) == want_a

        plan, _ = dep.plan(v1)
        assert [a.verb for a in plan.actions] == ["unchanged"] and not plan.changes

        # Update: filter a widened, filter b added. Neither may see batch1 again.
        v2 = s.handwritten_flink_script(raw, [("a", "ca", out_a, A_V2), ("b", "cb", out_b, B)])
        plan, script = dep.plan(v2)
        assert [a.verb for a in plan.actions] == ["replace"]
        assert SECRET not in plan.render() + json.dumps(plan.to_dict())
        result = dep.apply(plan, script)
        assert result["restored_from"], "the update must start from the old job's savepoint"
        s.produce(bootstrap, raw, registry, batch2)
        want_a += _ids(batch2, name_is("LoanCreated", "LoanUpdated"))
        want_b = _ids(batch2, is_car)
        assert _uuids(bootstrap, out_a, decode, sum(want_a.values())) == want_a
        assert _uuids(bootstrap, out_b, decode, sum(want_b.values())) == want_b

        # Stop with a savepoint, produce while stopped, resume: batch3 once, nothing earlier again.
        assert dep.stop().startswith("file:")
        assert dep.status()["state"] == "STOPPED"
        s.produce(bootstrap, raw, registry, batch3)
        dep.resume()
        want_a += _ids(batch3, name_is("LoanCreated", "LoanUpdated"))
        want_b += _ids(batch3, is_car)
        assert _uuids(bootstrap, out_a, decode, sum(want_a.values())) == want_a
        assert _uuids(bootstrap, out_b, decode, sum(want_b.values())) == want_b
        assert SECRET not in "".join(p.read_text() for p in tmp_path.rglob("*.json"))
        assert list(tmp_path.rglob("*.json")), "the deployment state file exists"
    finally:
        dep.delete()
        dep.close()
        s.delete_topics(bootstrap, [raw, out_a, out_b])
