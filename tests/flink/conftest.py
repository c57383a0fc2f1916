"""Fixtures for the Flink tests: one PyFlink checker (one JVM) per test session.

Every test here is marked ``flink``. Without PyFlink or the connector jars the tests skip with
the reason, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdcrouter.errors import CdcrouterError

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.flink)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def flink_checker() -> Iterator[object]:
    """A :class:`~cdcrouter.backends.flink_check.FlinkChecker` shared by the whole session."""
    if importlib.util.find_spec("pyflink") is None:
        _unavailable("PyFlink is not installed: pip install 'cdcrouter[flink]'")
    from cdcrouter.backends.flink_check import FlinkChecker

    # The checker's JVM lives for one session and spends it planning and compiling large, one-off
    # queries: with C2 on, its compiler threads took most of the two CI cores (the bulk
    # differential ran 107 s; C1 only: 32 s). Read when PyFlink launches its JVM, i.e. here.
    os.environ.setdefault("JVM_ARGS", "-XX:TieredStopAtLevel=1")
    try:
        checker = FlinkChecker()
    except CdcrouterError as exc:
        _unavailable(f"Flink checker unavailable: {exc.render()}")
    yield checker
