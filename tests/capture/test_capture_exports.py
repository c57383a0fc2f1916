"""The public capture API is what ``cdcrouter.capture.__all__`` says: others build on it."""

from __future__ import annotations

import cdcrouter.capture as capture


def test_public_api_is_pinned() -> None:
    assert sorted(capture.__all__) == sorted(
        [
            "DEFAULT_RAW_TOPIC",
            "CaptureEngine",
            "CaptureStats",
            "Pipeline",
            "RowChange",
            "TableShape",
            "apply_domain",
            "domain_ddl",
            "load_pipeline",
            "normalize_outbox",
            "normalize_row",
            "pipeline_from_dict",
        ]
    )
    for name in capture.__all__:
        assert getattr(capture, name) is not None


def test_domain_ddl_ships_the_sample_tables() -> None:
    ddl = capture.domain_ddl()
    for table in ("car_entities", "loan_entities", "loan_payments", "service_records", "business_events"):
        assert f"CREATE TABLE IF NOT EXISTS {table}" in ddl
    assert "jsonb" in ddl
