"""Capture exports Prometheus metrics over HTTP (issue #12): counters that match what PostgreSQL
was given, the Kafka commit latency histogram and the WAL the slot retains."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from capture_helpers import CaptureRun
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels or (set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_engine_metrics_count_what_postgres_was_given(capture_run: CaptureRun) -> None:
    run = capture_run
    engine = run.start()
    engine.metrics.serve(0)
    assert engine.metrics.port
    for i in range(25):
        run.sql(f"INSERT INTO car_entities (id, vin, make, model) VALUES ('m{i}', 'V', 'M', 'X')")
    run.sql(*[f"UPDATE car_entities SET model = 'Y' WHERE id = 'm{i}'" for i in range(5)])  # one transaction
    assert len(run.events(expect=30)) == 30
    deadline = time.monotonic() + 30
    while True:
        m = _scrape(engine.metrics.port)
        if m.get("cdcrouter_capture_events_total", 0) >= 30 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        assert m["cdcrouter_capture_changes_total"] == 30
        assert m["cdcrouter_capture_events_total"] == 30
        assert m["cdcrouter_capture_transactions_total"] == 26
        assert m["cdcrouter_capture_dead_letters_total"] == 0
        assert m["cdcrouter_capture_reconnects_total"] == 0
        commits = m["cdcrouter_capture_kafka_commits_total"]
        assert 1 <= commits <= 26
        # every commit but possibly the one in flight when scraped is in the histogram
        assert commits <= m["cdcrouter_capture_kafka_commit_seconds_count"] + 1
        assert m["cdcrouter_capture_kafka_commit_seconds_sum"] > 0
        assert m["cdcrouter_capture_slot_retained_wal_bytes"] >= 0
        assert m["cdcrouter_capture_committed_lsn"] > 0
    finally:
        engine.metrics.close()


def test_cli_serves_metrics_on_the_given_address_and_port(capture_run: CaptureRun, tmp_path: Path) -> None:
    run = capture_run
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"schema: {run.schema}\n"
        f"raw_topic: {{name: {run.topic}, partitions: 1}}\n"
        f"replication: {{slot: {run.pipeline.replication.slot}, "
        f"publication: {run.pipeline.replication.publication}}}\n"
        "tables:\n  car_entities: {}\n"
    )
    port = _free_port()
    env = {**os.environ, "CDCROUTER_STATE_DIR": str(run.state_dir)}
    cmd = [sys.executable, "-m", "cdcrouter.cli.main", "capture", "run", "--pipeline", str(pipeline)]
    cmd += ["--metrics-address", "127.0.0.1", "--metrics-port", str(port), "--duration", "60"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        inserted = False
        deadline = time.monotonic() + 60
        m: dict[str, float] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                m = _scrape(port)
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if not inserted and m.get("cdcrouter_capture_committed_lsn", 0) > 0:  # snapshot done
                run.sql("INSERT INTO car_entities (id, vin, make, model) VALUES ('cli1', 'V', 'M', 'X')")
                inserted = True
            if m.get("cdcrouter_capture_events_total", 0) >= 1:
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert m.get("cdcrouter_capture_events_total") == 1, m
        assert m["cdcrouter_capture_changes_total"] == 1
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err


def test_cli_metrics_port_in_use_is_a_clear_error(
    capture_run: CaptureRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cdcrouter.cli.main import main

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"schema: {capture_run.schema}\ntables:\n  car_entities: {{}}\n")
    monkeypatch.setenv("CDCROUTER_STATE_DIR", str(capture_run.state_dir))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            ["capture", "run", "--pipeline", str(pipeline), "--metrics-port", str(port), "--duration", "5"]
        )
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in err
    assert "hint: pick a free port" in err
    assert "Traceback" not in err
