"""Fixtures for routing tests (helpers live in routekit.py)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_kafka() -> Iterator[Any]:
    """A broker of this test's own (state dir outside tmp_path, free ports), which it may restart;
    stopped by its recorded PID and purged at the end. The shared stack's broker is not touched."""
    from cdcrouter.stack.manager import Stack
    from cdcrouter.testing.stack_fixtures import _unavailable

    scratch = Path(tempfile.mkdtemp(prefix="cdcrouter-route-kafka-"))
    kafka = Stack(scratch / "state", ports={"kafka": _free_port(), "kafka-controller": _free_port()})
    try:
        kafka.up(["kafka"])
    except Exception as exc:
        with contextlib.suppress(Exception):  # whatever did start is stopped by its PID
            kafka.down(["kafka"], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
        _unavailable(f"private Kafka did not start: {exc}")
    try:
        yield kafka
    finally:
        kafka.down(["kafka"], purge=True)
        shutil.rmtree(scratch, ignore_errors=True)
