"""``cdcrouter dr drill --scenario kafka-region`` on real processes: region A's broker (the drill's
own) is killed with kill -9 while 50 changes/s are written, and ``dr failover --to b --force`` moves
capture, two routers and the SDK consumer to region B (the stack's Kafka), which MirrorMaker 2 kept
in sync. The oracle is the drill table as PostgreSQL has it: every committed row must be in B's
filtered topics and, exactly once, in the consumer's view (its PostgresStore drops the events the
routers route again from the translated offsets)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cdcrouter.dr.report import DrillReport
from cdcrouter.dr.scenarios.kafka_region import KafkaRegionLoss


def test_kafka_region_failover_loses_nothing(drill: Callable[..., DrillReport]) -> None:
    from cdcrouter.capture.pipeline import Pipeline

    if "dr" not in Pipeline.model_fields:
        pytest.fail(
            "capture has no dr.confirm_after_mirror: region A's loss would lose what MM2 had not copied"
        )
    scenario = KafkaRegionLoss()
    report = drill(scenario, min_acked=150, before_s=3, settle_s=90)
    v, view, rec = report.verdict, report.view, report.recovery
    assert v is not None and view is not None and rec is not None
    assert v.committed == report.acked + v.in_doubt_committed
    assert v.lost == 0 and not view.missing and not view.wrong, report.render()
    assert v.unexpected == 0 and v.duplicate_changes == 0  # duplicates only as repeated uuids
    assert view.extra_deliveries == 0  # the idempotency store dropped every repeat
    # the failover ran every step: capture's position checked against the slot, groups translated
    steps = "\n".join(scenario.result.steps)
    assert "capture (slot" in steps and "GAP" not in steps, steps
    # the routers and the SDK consumer resumed in B from MM2's translated offsets, not from the start
    translated = scenario.result.translated
    run_name = report.run
    assert {f"{run_name}-router", f"{run_name}-view"} <= set(translated), steps
    assert all(off > 0 for group in translated.values() for off in group.values()), translated
    assert report.failover_s is not None and rec.rto_s is not None
