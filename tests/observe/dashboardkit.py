"""``cdcrouter dashboard`` as a real process for the dashboard tests: started on a free port (it
prints its URL), stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


@contextlib.contextmanager
def dashboard(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The running dashboard's base URL; its output is shown if it dies or does not start.
    ``env``: variables to set for it (e.g. a connection that points nowhere)."""
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "dashboard", "--port", "0"]
    cmd += ["--state-dir", str(state_dir)]
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    output: list[str] = []  # read all along: a full pipe would block the server
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"dashboard on (http://\S+/)", "".join(output))):
            assert proc.poll() is None or reader.is_alive(), f"dashboard did not start: {''.join(output)}"
            assert time.monotonic() < deadline, f"no URL from the dashboard in 60 s: {''.join(output)}"
            time.sleep(0.05)
        yield match.group(1)
        assert proc.poll() is None, f"dashboard exited with {proc.returncode}: {''.join(output)}"
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
