"""Log lines: ``--log-format json`` / ``CDCROUTER_LOG_FORMAT`` give one JSON object per stderr line,
librdkafka's own lines arrive through Python logging (never raw ``%N|...``), secrets never show.

Real processes on the real broker: a subprocess's stderr is where librdkafka writes raw lines, so
only a real process shows whether any escapes. The librdkafka line is provoked deterministically:
``sasl.mechanism`` set while ``security.protocol`` is PLAINTEXT makes every client warn (CONFWARN)
on creation, and the SASL password set with it must never appear.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from .statuskit import StatusEnv

SECRET = "s3cr3t-h11-Pa55word"
RAW_LIBRDKAFKA = re.compile(r"^%\d\|")  # librdkafka's own stderr format: %<level>|<time>|<fac>|...


def _sasl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CDCROUTER_LOG_FORMAT"}
    env.update(
        CDCROUTER_KAFKA__SASL_MECHANISM="PLAIN",
        CDCROUTER_KAFKA__SASL_USERNAME="h11-user",
        CDCROUTER_KAFKA__SASL_PASSWORD=SECRET,
        **extra,
    )
    return env


def _cdcrouter(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line parsed as one JSON object with the documented fields (fails on any other)."""
    records = []
    for line in stderr.splitlines():
        doc = json.loads(line)  # a non-JSON line fails the test here, with the line in the error
        assert isinstance(doc, dict), line
        assert {"time", "level", "logger", "message"} <= doc.keys(), line
        assert datetime.fromisoformat(doc["time"]).utcoffset().total_seconds() == 0, line
        records.append(doc)
    return records


@pytest.fixture
def topic(kafka_admin: Any, unique_name: Callable[[str], str]) -> str:
    name = unique_name("logs")
    for future in kafka_admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=30).values():
        future.result(timeout=60)
    return name


def test_json_flag_gives_only_json_lines_with_librdkafka_inside(topic: str) -> None:
    proc = _cdcrouter("--log-format", "json", "consume", topic, "--timeout", "2", env=_sasl_env())
    assert proc.returncode == 0, proc.stderr
    records = _json_lines(proc.stderr)
    kafka = [r for r in records if r["logger"] == "cdcrouter.kafka"]
    assert any("CONFWARN" in r["message"] and r["level"] == "WARNING" for r in kafka), proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_env_var_selects_json_and_a_user_error_is_a_json_record(unique_name: Callable[[str], str]) -> None:
    missing = unique_name("nope")  # never created: the documented user error, exit 1 with a hint
    proc = _cdcrouter("consume", missing, "--timeout", "1", env=_sasl_env(CDCROUTER_LOG_FORMAT="json"))
    assert proc.returncode == 1, proc.stderr
    records = _json_lines(proc.stderr)
    errors = [r for r in records if r["level"] == "ERROR" and r["logger"] == "cdcrouter"]
    assert len(errors) == 1 and missing in errors[0]["message"] and errors[0]["hint"], proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr


def test_text_default_has_no_raw_librdkafka_line(topic: str) -> None:
    proc = _cdcrouter("consume", topic, "--timeout", "2", env=_sasl_env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if RAW_LIBRDKAFKA.match(line)], proc.stderr
    # the same warning, as a log line of the cdcrouter.kafka logger
    assert any(" WARNING cdcrouter.kafka: CONFWARN " in line for line in lines), proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_consumer_app_script_follows_the_env_var(topic: str, tmp_path: Path) -> None:
    """A consumer app run as a plain script (not through the CLI) logs JSON when the container says so."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from cdcrouter.consumer import ConsumerApp

            app = ConsumerApp("logs-{topic[-8:]}")

            @app.on("{topic}")
            def handle(event):
                pass

            app.run(timeout=2)
            """
        )
    )
    env = _sasl_env(CDCROUTER_LOG_FORMAT="json")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode == 0, proc.stderr
    records = _json_lines(proc.stderr)
    assert any(r["logger"] == "cdcrouter.kafka" and "CONFWARN" in r["message"] for r in records), proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_secrets_are_masked_in_messages_extras_and_exceptions() -> None:
    """The mask itself: a secret that does reach a log call (message, extra, exception) is replaced."""
    code = textwrap.dedent(
        """
        import logging
        from cdcrouter.observe import logs

        logs.configure("json", level=logging.INFO)
        log = logging.getLogger("cdcrouter.test")
        log.warning("connecting with %s", "host=db password=pg-Pa55 user=x")
        log.info("registry", extra={"url": "https://bob:reg-Pa55@registry.example"})
        try:
            raise RuntimeError("auth failed for env secret {secret}")
        except RuntimeError:
            log.exception("boom")
        """
    ).replace("{secret}", SECRET)
    env = _sasl_env()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    records = _json_lines(proc.stderr)
    assert [r["level"] for r in records] == ["WARNING", "INFO", "ERROR"], proc.stderr
    for secret in (SECRET, "pg-Pa55", "reg-Pa55"):
        assert secret not in proc.stderr
    assert records[0]["message"] == "connecting with host=db password=*** user=x"
    assert records[1]["url"] == "https://bob:***@registry.example"
    assert "RuntimeError: auth failed for env secret ***" in records[2]["exception"]


def test_capture_and_router_log_only_json_through_a_real_pipeline(
    status_env: StatusEnv, tmp_path: Path
) -> None:
    """`capture run` and `run` (the router) with --log-format json while rows flow end to end."""
    env = status_env
    proc_env = _sasl_env(
        CDCROUTER_KAFKA__BOOTSTRAP_SERVERS=env.conns.kafka.bootstrap_servers,
        CDCROUTER_REGISTRY__URL=env.conns.registry.url,
    )
    base = [sys.executable, "-m", "cdcrouter.cli.main", "--log-format", "json"]
    commands = {
        "capture": [*base, "capture", "run", "--pipeline", str(env.pipeline_file)],
        "router": [
            *[*base, "run", "--filters", str(env.filters_file), "--raw-topic", env.raw],
            *["--group", env.group, "--instance-id", env.name, "--no-reload"],
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in commands.items():
            with (tmp_path / f"{name}.err").open("wb") as err:
                procs[name] = subprocess.Popen(cmd, env=proc_env, stdout=subprocess.DEVNULL, stderr=err)
        env.insert_cars(3)
        env.wait_count(f"{env.name}-cars", 3, timeout=120)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=60) for name, proc in procs.items()}
    stderr = {name: (tmp_path / f"{name}.err").read_text() for name in commands}
    assert codes == {"capture": 0, "router": 0}, stderr
    for name, text in stderr.items():
        assert SECRET not in text, name
        records = _json_lines(text)
        assert any(r["logger"].endswith(".kafka") and "CONFWARN" in r["message"] for r in records), text
    capture = _json_lines(stderr["capture"])
    assert any(r["logger"] == "cdcrouter.capture" and r["message"].startswith("stopped:") for r in capture)
    router = _json_lines(stderr["router"])
    stopped = [r for r in router if r["logger"] == "cdcrouter.route" and r["message"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["matched"]["cars"] == 3, stderr["router"]  # the closing numbers


def test_main_in_process_leaves_logging_as_it_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests call main() in-process: its handler and levels must not leak into the next test."""
    import logging

    from cdcrouter.cli.main import main

    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("cdcrouter.kafka").level)
    assert main(["--log-format", "json", "version"]) == 0
    assert (list(root.handlers), root.level, logging.getLogger("cdcrouter.kafka").level) == before
    assert capsys.readouterr().out.strip()  # the version was printed
