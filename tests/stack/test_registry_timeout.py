"""The registry's start-up health wait is configurable (Quarkus starts slowly on a loaded machine)."""

from __future__ import annotations

import pytest

from cdcrouter.errors import StackError
from cdcrouter.stack.services.registry import START_TIMEOUT_ENV, Registry


def test_registry_start_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(START_TIMEOUT_ENV, raising=False)
    assert Registry().start_timeout == 120.0
    monkeypatch.setenv(START_TIMEOUT_ENV, "300")
    assert Registry().start_timeout == 300.0
    monkeypatch.setenv(START_TIMEOUT_ENV, "later")
    with pytest.raises(StackError) as err:
        _ = Registry().start_timeout
    assert START_TIMEOUT_ENV in err.value.message
