"""The status view's public API is what ``cdcrouter.observe.__all__`` says (the demo and scripts
build on it), and importing the package for the engines' endpoint does not load the view."""

from __future__ import annotations

import subprocess
import sys

import cdcrouter.observe as observe


def test_public_api_is_pinned() -> None:
    assert sorted(observe.__all__) == sorted(
        [
            "EXIT_UNHEALTHY",
            "SCHEMA_VERSION",
            "Route",
            "StatusOptions",
            "Targets",
            "collect_status",
            "resolve_targets",
        ]
    )
    for name in observe.__all__:
        assert getattr(observe, name) is not None
    assert observe.EXIT_UNHEALTHY == 3 and observe.SCHEMA_VERSION == 1


def test_the_endpoint_loads_without_the_status_view() -> None:
    code = "import sys, cdcrouter.observe.endpoint; print('cdcrouter.observe.collect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
