"""Fixtures for the disaster-recovery tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cdcrouter.dr.drill import DrillOptions, run_drill
from cdcrouter.dr.report import DrillReport


@pytest.fixture
def drill(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Callable[..., DrillReport]:
    """``drill(scenario, min_acked=N)``: one drill on the shared stack at 50 changes/s under a name of
    the test's own, its report printed (pytest shows it on failure). Fails unless the drill ran to
    its verdict and the workload got at least ``min_acked`` commits acknowledged (else nothing was
    tested); the scenario-specific checks stay in the test. Its files and the processes' logs go to
    the test's ``tmp_path`` (pytest keeps the last runs'), never to /tmp."""

    def run(scenario: Any, *, min_acked: int, before_s: float = 2, settle_s: float = 120) -> DrillReport:
        opts = DrillOptions(
            rate=50,
            before_s=before_s,
            after_s=4,
            settle_s=settle_s,
            name=unique_name("dr"),
            workdir=tmp_path,
            # a consumer app restarted after a kill -9 joins its group once the dead member's session
            # expires: librdkafka's 45 s was most of a drill's settle time (measured: 43 of 64 s)
            view_session_timeout_ms=10_000,
        )
        report = run_drill(scenario, stack.connections, opts, say=print)
        print(report.render())
        assert report.error is None, report.error
        assert report.verdict is not None and report.view is not None and report.recovery is not None
        assert report.acked >= min_acked, "the workload did not run: nothing was tested"
        return report

    return run
