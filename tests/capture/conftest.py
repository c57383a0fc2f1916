"""Fixtures for capture tests (helpers live in capture_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_helpers import CaptureRun, drop_capture_objects, make_pipeline

from cdcrouter.capture import apply_domain


@pytest.fixture
def capture_run(pg_stack: Any, unique_name: Callable[[str], str]) -> Iterator[CaptureRun]:
    """A fresh sample-domain schema with its own pipeline (topic, slot, publication), on the
    PostgreSQL of the test's ``pg_versions`` run (else the shared stack's)."""
    stack = pg_stack
    name = unique_name("cap")
    schema = name.replace("-", "_")
    conns = stack.connections
    apply_domain(conns.postgres.conninfo(), schema)
    run = CaptureRun(conns, make_pipeline(schema, name), schema, stack.state_dir)
    try:
        yield run
    finally:
        try:
            run.stop()
        finally:
            drop_capture_objects(conns, run.pipeline, schema)
