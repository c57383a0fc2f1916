"""Fixtures for end-to-end tests on the real local stack (Kafka, registry, Flink)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def flink_stack(stack_with: Callable[..., Any]) -> Any:
    """Kafka, the registry, the Flink session cluster and its SQL Gateway."""
    return stack_with("kafka", "registry", "flink")
