"""Fixtures for routing tests (helpers live in routekit.py; ``private_kafka`` comes from the
project's stack plugin, ``cdcrouter_testing.stack_fixtures``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .routekit import RouteEnv, delete_topics, setup_env


@pytest.fixture
def route_env(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[RouteEnv]:
    env = setup_env(stack.connections, unique_name, tmp_path)
    yield env
    delete_topics(env)


@pytest.fixture
def env(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[RouteEnv]:
    """A routing environment with four benchmark filters (a topic each): small and quick."""
    e = setup_env(stack.connections, unique_name, tmp_path, filters=4)
    yield e
    delete_topics(e)
