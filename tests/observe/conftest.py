"""Fixtures for the status view's tests (helpers live in statuskit.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .statuskit import StatusEnv, setup_env, teardown_env


@pytest.fixture
def status_env(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[StatusEnv]:
    env = setup_env(stack.connections, unique_name("st"), tmp_path)
    try:
        yield env
    finally:
        teardown_env(env)
