"""pipeline.yaml: defaults, event names and file:line:column errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcrouter.capture.pipeline import load_pipeline
from cdcrouter.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


def test_example_pipeline_loads_with_defaults() -> None:
    p = load_pipeline(EXAMPLE)
    assert p.raw_topic.name == "raw-business-events"
    assert p.raw_topic.offsets_topic == "raw-business-events.capture-offsets"
    assert p.event_name("car_entities", "INSERT") == "CarCreated"
    assert p.event_name("loan_entities", "UPDATE") == "LoanUpdated"
    assert p.event_name("loan_payments", "INSERT") == "LoanPaymentSubmitted"
    assert p.event_name("loan_payments", "DELETE") == "LoanPaymentDeleted"
    assert p.event_name("service_records", "SNAPSHOT") == "ServiceRecordCreated"
    assert p.outbox is not None and p.outbox.table == "business_events"
    assert p.captured_tables()[-1] == "business_events"


def test_default_entity_type_is_singular_camel_case(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("tables:\n  loan_payments: {}\n  car_entities: {}\n")
    p = load_pipeline(f)
    assert p.entity_type("loan_payments") == "LoanPayment"
    assert p.entity_type("car_entities") == "Car"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("tables:\n  cars:\n    entity_tipe: Car\n", ":3:5", "unknown key"),
        ("raw_topic:\n  partitions: 0\ntables: {cars: {}}\n", ":2:3", "greater than or equal to 1"),
        ("replication:\n  slot: Bad-Slot\ntables: {cars: {}}\n", ":2:3", "lower-case PostgreSQL identifier"),
        ("schema: public\n", "", "nothing to capture"),
        ("tables:\n  cars: [1\n", ":3:1", "not valid YAML"),
        (
            "replication: {replica_identity: default}\ntables:\n  cars: {row_filter: active}\n",
            "",
            "row_filter needs replication.replica_identity: full",
        ),
    ],
)
def test_errors_point_at_the_yaml(tmp_path: Path, text: str, where: str, words: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(f)
    assert f"{f}{where}" in info.value.message
    assert words in info.value.message
    assert info.value.hint


def test_missing_file_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
