"""``cdcrouter dashboard``'s server, as a real process on the shared stack: its JSON is the status
document ``cdcrouter status --format json`` prints (same keys, same problems), the page and its
script come from package data with no link off the machine, and a port in use is a user error."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cdcrouter.cli.main import main
from cdcrouter.observe.collect import ORDER

from .dashboardkit import dashboard, status_until

pytestmark = [pytest.mark.integration, pytest.mark.stack_services("kafka", "registry")]


def test_serves_the_status_document_and_a_self_contained_page(
    stack: Any, unique_name: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    raw = unique_name("dash-missing")  # a raw topic nobody created: one known problem, no pipeline
    with dashboard(stack.state_dir, "--raw-topic", raw, "--interval", "0.5", "--refresh", "1") as url:
        assert url.startswith("http://127.0.0.1:")  # local only unless --host says otherwise
        doc = status_until(url, lambda d: "problems" in d)
        page = httpx.get(url, timeout=30)
        script = httpx.get(url + "dashboard.js", timeout=30)
        css = httpx.get(url + "dashboard.css", timeout=30)
        topology = httpx.get(url + "api/topology", timeout=30).json()
        missing = httpx.get(url + "nothing-here", timeout=30)

    # the oracle: `cdcrouter status --format json` on the same target, run here in-process
    code = main(["status", "--raw-topic", raw, "--state-dir", str(stack.state_dir), "--format", "json",
                 "--interval", "0.5"])  # fmt: skip
    expected = __import__("json").loads(capsys.readouterr().out)
    assert code == 0
    assert list(doc) == list(ORDER) == list(expected)
    assert doc["raw_topic"]["name"] == raw and doc["raw_topic"]["exists"] is False
    assert doc["healthy"] is False
    assert (
        [(p["code"], p["where"]) for p in doc["problems"]]
        == [(p["code"], p["where"]) for p in expected["problems"]]
        == [("raw_topic_missing", raw)]
    )
    assert topology == {"tables": [], "poll_seconds": 1.0}

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and "/api/status" in script.text
    assert css.status_code == 200 and missing.status_code == 404
    for body in (page.text, script.text, css.text):  # nothing fetched from elsewhere at view time
        links = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", body, re.I)
        assert set(links) <= {"http://www.w3.org/2000/svg"}, links  # the SVG namespace is a name


def test_a_port_in_use_is_a_user_error_with_a_hint(stack: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cdcrouter.cli.main", "dashboard", "--raw-topic", "x",
             "--state-dir", str(stack.state_dir), "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in done.stderr
    assert "hint: choose another --port" in done.stderr and "Traceback" not in done.stderr
