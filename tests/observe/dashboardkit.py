"""``cdcrouter dashboard`` as a real process for the dashboard tests: started on a free port (it
prints its URL), stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


@contextlib.contextmanager
def dashboard(state_dir: Path, *args: str) -> Iterator[str]:
    """The running dashboard's base URL; its output is shown if it dies or does not start."""
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "dashboard", "--port", "0"]
    cmd += ["--state-dir", str(state_dir)]
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first line names the URL (or is the error)
        match = re.search(r"on (http://\S+/)", line)
        assert match, f"dashboard did not start: {line}{_rest(proc)}"
        yield match.group(1)
        assert proc.poll() is None, f"dashboard exited with {proc.returncode}: {proc.stdout.read()}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def status_until(url: str, ok: Any, timeout: float = 90.0) -> dict[str, Any]:
    """Poll ``/api/status`` until ``ok(doc)``; the last document is in the failure message."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while True:
        resp = httpx.get(url + "api/status", timeout=90)
        if resp.status_code == 200:
            doc = resp.json()
            if ok(doc):
                return doc
        assert time.monotonic() < deadline, f"/api/status never matched in {timeout} s; last: {doc}"
        time.sleep(0.5)


def _rest(proc: subprocess.Popen[str]) -> str:
    """What a process that exited still had to say."""
    return proc.stdout.read() if proc.stdout is not None and proc.poll() is not None else ""
