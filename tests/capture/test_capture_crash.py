"""kill -9 the embedded capture in the middle of 50,000 changes, restart it: every change exactly
once on the raw topic (read_committed), in commit order per entity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from capture_helpers import CaptureRun, make_pipeline, read_topic
from ruamel.yaml import YAML

from cdcrouter.capture.sink import read_offsets
from cdcrouter_testing.slots import wait_slot_active
from cdcrouter_testing.workloads import write_car_rounds

pytestmark = [pytest.mark.integration, pytest.mark.pg_versions()]  # on 15 and 18

CARS, ROUNDS, PER_TXN = 1000, 49, 100  # 1,000 inserts + 49,000 updates = 50,000 changes
TOTAL = CARS * (ROUNDS + 1)


def _write_pipeline(run: CaptureRun, path: Path) -> None:
    doc = run.pipeline.model_dump(by_alias=True, exclude={"source_file", "connections"}, exclude_none=True)
    YAML().dump(doc, path)


def _capture(run: CaptureRun, path: Path, log: Path) -> subprocess.Popen[bytes]:
    pg = run.conns.postgres  # the run's server (a private one on another major), over the stack's
    env = {
        **os.environ,
        "CDCROUTER_STATE_DIR": str(run.state_dir),
        "CDCROUTER_POSTGRES__PORT": str(pg.port),
        "CDCROUTER_POSTGRES__PASSWORD": pg.password.get_secret_value() if pg.password else "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cdcrouter.cli.main", "capture", "run", "--pipeline", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _wait_active(run: CaptureRun, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    wait_slot_active(
        run.conns.postgres.conninfo(), run.pipeline.replication.slot, proc=proc, timeout_s=timeout_s
    )


def _generate(run: CaptureRun) -> None:
    with psycopg.connect(run.conns.postgres.conninfo(), options=f"-c search_path={run.schema}") as conn:
        write_car_rounds(conn, cars=CARS, rounds=ROUNDS, per_txn=PER_TXN, pause_s=0.003)


def test_kill_9_mid_stream_then_restart_is_exactly_once(capture_run: CaptureRun, tmp_path: Path) -> None:
    run = capture_run
    run.pipeline = make_pipeline(
        run.schema,
        run.topic.removeprefix("raw-"),
        raw_topic={"name": run.topic, "partitions": 3},
        batching={"max_events": 2000, "max_ms": 50},
        tables={"car_entities": {"entity_type": "Car"}},
        outbox=None,
    )
    pfile, log = tmp_path / "pipeline.yaml", tmp_path / "capture.log"
    _write_pipeline(run, pfile)
    offsets_topic, slot = run.pipeline.raw_topic.offsets_topic, run.pipeline.replication.slot

    first = _capture(run, pfile, log)
    try:
        _wait_active(run, first)
        gen = threading.Thread(target=_generate, args=(run,))
        gen.start()
        time.sleep(1.5)
        first.send_signal(signal.SIGKILL)  # no chance to finish its batch
        first.wait(30)
        gen.join(300)
    finally:
        if first.poll() is None:
            first.kill()
    before = read_offsets(run.conns, offsets_topic, slot)
    assert before is not None and 0 < before.events_total < TOTAL, (
        f"the kill did not land mid-stream ({before}); see {log}"
    )

    second = _capture(run, pfile, log)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = read_offsets(run.conns, offsets_topic, slot)
            if done is not None and done.events_total >= TOTAL:
                break
            assert second.poll() is None, f"capture died: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()

    records = read_topic(run.conns, run.topic, expect=TOTAL, timeout_s=120)
    assert len(records) == TOTAL, f"{len(records)} records for {TOTAL} changes"
    assert len({e["eventHeader"]["uuid"] for _, e in records}) == TOTAL, "a change was delivered twice"
    years: dict[str, list[int]] = defaultdict(list)
    for key, event in records:
        years[key.decode()].append(int(event["eventBody"]["entities"][0]["updatedAttributes"]["model_year"]))
    assert len(years) == CARS
    wrong = {k: v for k, v in years.items() if v != list(range(ROUNDS + 1))}
    assert not wrong, f"out of order or missing for {len(wrong)} entities, e.g. {next(iter(wrong.items()))}"
