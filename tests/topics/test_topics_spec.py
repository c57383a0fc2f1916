"""Desired topics from filters.yaml and pipeline.yaml (no broker needed)."""

from __future__ import annotations

from pathlib import Path

from cdcrouter.topics import TopicDefaults, topics_for

ROOT = Path(__file__).resolve().parents[2]
FILTERS = """\
filters:
  - {id: a, consumerId: loans, outputTopic: filtered-loans, conditions: [{field: eventHeader.eventName, operator: equals, value: X}]}
  - {id: b, consumerId: audit, outputTopic: filtered-loans, enabled: false, conditions: [{field: eventHeader.eventName, operator: equals, value: Y}]}
"""  # noqa: E501


def test_raw_settings_come_from_the_pipeline(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    text = (ROOT / "examples" / "pipeline.yaml").read_text()
    pipeline.write_text(text.replace("partitions: 3", "partitions: 5").replace("604800000", "86400000"))
    filters = tmp_path / "filters.yaml"
    filters.write_text(FILTERS)
    specs = {
        s.name: s for s in topics_for(filters, pipeline, TopicDefaults(partitions=2, replication_factor=1))
    }
    raw = specs["raw-business-events"]
    assert (raw.role, raw.partitions, raw.config["retention.ms"]) == ("raw", 5, "86400000")
    assert specs["filtered-loans"].partitions == 2  # filtered topics use the defaults
    # one topic, two consumers (a disabled filter still declares its topic): one DLQ per consumer
    assert {"filtered-loans.loans.dlq", "filtered-loans.audit.dlq", "raw-business-events.router.dlq"} <= set(
        specs
    )
    assert all(s.partitions == 1 for n, s in specs.items() if n.endswith(".dlq"))
    # whatever the raw topic takes, its routed copies and dead letters take too
    routed = {s.config["max.message.bytes"] for s in specs.values() if s.role != "raw"}
    assert routed == {str(int(raw.config["max.message.bytes"]) + 64 * 1024)}


def test_raw_topic_option_wins_over_the_pipeline(tmp_path: Path) -> None:
    specs = topics_for(None, ROOT / "examples" / "pipeline.yaml", raw_topic="other-raw")
    assert [s.name for s in specs if s.role == "raw"] == ["other-raw"]
