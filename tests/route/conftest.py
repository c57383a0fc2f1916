"""Fixtures for routing tests (helpers live in routekit.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .routekit import RouteEnv, setup_env


@pytest.fixture
def route_env(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> RouteEnv:
    return setup_env(stack.connections, unique_name, tmp_path)
