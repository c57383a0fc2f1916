"""Capture: PostgreSQL row changes to ``raw-business-events`` (Avro, Schema Registry), exactly once.

Public API (pinned by tests/capture/test_exports.py)::

    pipeline = load_pipeline("pipeline.yaml")          # or pipeline_from_dict({...})
    apply_domain(conns.postgres.conninfo(), "demo")     # the sample tables, in a schema
    engine = CaptureEngine(pipeline, load_connections())
    engine.run(stop_event)                              # or engine.run(duration_s=30)
    pipeline.raw_topic.name                             # where the events go
"""

from cdcrouter.capture.domain import apply_domain, domain_ddl
from cdcrouter.capture.engine import CaptureEngine, CaptureStats
from cdcrouter.capture.normalize import RowChange, TableShape, normalize_outbox, normalize_row
from cdcrouter.capture.pipeline import DEFAULT_RAW_TOPIC, Pipeline, load_pipeline, pipeline_from_dict

__all__ = [
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
