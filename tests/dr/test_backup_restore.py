"""``cdcrouter dr backup`` / ``dr restore`` on the real stack.

The lean end-to-end test: capture runs; rows A are captured and a group has consumed them; backup;
rows B are captured into the old topics (the slot moves past the backup); the pipeline's Kafka
topics, consumer groups and registry subjects are destroyed (the lost cluster); rows C are
committed during the outage; restore; capture restarts. The oracles are PostgreSQL's rows, the
registry's own REST answers, AdminClient's committed offsets and pg_replication_slots: the new raw
topic must hold every row of B and C exactly once and none of A (no history replayed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient
from psycopg import sql

from cdcrouter.config import Connections
from cdcrouter.dr.backup import backup_slot_name
from cdcrouter.dr.pipeline import DrillPipeline
from cdcrouter.dr.verify import read_events

SECRET = "drbk-Secr3t-never-in-a-backup"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcrouter.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def insert(conns: Connections, run: DrillPipeline, ids: list[str]) -> None:
    with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
        for n, i in enumerate(ids):
            conn.execute(
                sql.SQL("INSERT INTO {}.{} (id, val, n) VALUES (%s, %s, %s)").format(
                    sql.Identifier(run.schema), sql.Identifier(run.table)
                ),
                (i, f"v{n}", n),
            )


def wait_raw(conns: Connections, run: DrillPipeline, ids: set[str], timeout: float = 120) -> list[Any]:
    """The raw topic's events of this run, once every id of ``ids`` is among them."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(conns, [run.raw_topic], run.id_prefix)
        if ids <= {e.entity_id for e in events} or time.monotonic() > deadline:
            return events
        time.sleep(1.0)


def start_capture(run: DrillPipeline, log: Path) -> subprocess.Popen[bytes]:
    """``capture run``, once it streams from its slot (rows written before that would be missed)."""
    start = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdcrouter.cli.main", "capture", "run", "--pipeline", str(run.pipeline_file)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_bytes()[start:].decode(errors="replace")
        if "created slot" in text or "resuming slot" in text:
            return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"capture did not start streaming: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(30)


def destroy(conns: Connections, run: DrillPipeline, topics: list[str], groups: list[str]) -> None:
    """What the lost cluster took with it: the pipeline's topics, groups and subjects."""
    admin = AdminClient(conns.kafka.to_librdkafka())
    for fut in admin.delete_topics(topics, operation_timeout=30).values():
        fut.result(timeout=60)
    for fut in admin.delete_consumer_groups(groups, request_timeout=30).values():
        fut.result(timeout=60)
    url = conns.registry.url
    for topic in (run.raw_topic, *run.filtered_topics):
        httpx.delete(f"{url}/subjects/{topic}-value", timeout=30)
        httpx.delete(f"{url}/subjects/{topic}-value?permanent=true", timeout=30)
    deadline = time.monotonic() + 60
    while set(topics) & set(admin.list_topics(timeout=15).topics) and time.monotonic() < deadline:
        time.sleep(0.5)


def committed(conns: Connections, group: str) -> dict[tuple[str, int], int]:
    admin = AdminClient(conns.kafka.to_librdkafka())
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=60)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or []}


def consume_and_commit(conns: Connections, topic: str, group: str, count: int) -> None:
    """An application group that has read ``count`` records of ``topic`` and committed."""
    c = Consumer({**conns.kafka.to_librdkafka(), "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    try:
        c.subscribe([topic])
        seen, deadline = 0, time.monotonic() + 90
        while seen < count and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is not None and not msg.error():
                seen += 1
        c.commit(asynchronous=False)
    finally:
        c.close()
    assert seen >= count


@pytest.fixture
def run(stack: Any, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[DrillPipeline]:
    conns = stack.connections
    run = DrillPipeline(unique_name("drbk"), tmp_path / "pipeline")
    run.write_files()
    run.create_table(conns)
    try:
        yield run
    finally:
        run.drop_database_objects(conns.postgres.conninfo())
        with psycopg.connect(conns.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (backup_slot_name(run.slot),),
            )


def test_restore_into_an_empty_cluster_resumes_without_replaying(
    stack: Any, run: DrillPipeline, tmp_path: Path
) -> None:
    conns: Connections = stack.connections
    log = tmp_path / "capture.log"
    run.create_topics_and_schemas(conns)
    app_group = f"{run.name}-app"
    capture = start_capture(run, log)
    try:
        a_ids = [f"{run.name}-a{i:03d}" for i in range(30)]
        insert(conns, run, a_ids)
        assert {e.entity_id for e in wait_raw(conns, run, set(a_ids))} >= set(a_ids), log.read_text()[-3000:]
        consume_and_commit(conns, run.raw_topic, app_group, len(a_ids))
        before = committed(conns, app_group)

        # a secret in effect must not land in the backup
        out = tmp_path / "backup.tar.gz"
        env = {"CDCROUTER_REGISTRY__BASIC_AUTH_USER_INFO": f"drbk:{SECRET}"}
        res = cli("dr", "backup", "--out", str(out), "--pipeline", str(run.pipeline_file),
                  "--filters", str(run.filters_file), "--group", app_group, env=env)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "capture position" in res.stdout and "manifest" in res.stdout
        with tarfile.open(out) as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member)
                assert f is None or SECRET.encode() not in f.read(), member.name
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            offsets = json.loads(tar.extractfile("offsets.json").read())  # type: ignore[union-attr]
        assert offsets["groups"][app_group][run.raw_topic] == {str(p): o for (_, p), o in before.items()}
        assert manifest["format"] == 1 and "files/pipeline.yaml" in manifest["sha256"]

        # after the backup: B reaches the old cluster, and the slot moves past the backup's position
        b_ids = [f"{run.name}-b{i:03d}" for i in range(20)]
        insert(conns, run, b_ids)
        assert {e.entity_id for e in wait_raw(conns, run, set(b_ids))} >= set(b_ids)
    finally:
        stop(capture)

    # the disaster: the cluster's topics, groups and subjects are gone; C is committed meanwhile
    topics = manifest["pipeline"]["topics"]
    destroy(conns, run, topics, [app_group])
    c_ids = [f"{run.name}-c{i:03d}" for i in range(10)]
    insert(conns, run, c_ids)

    dry = cli("dr", "restore", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would create the pipeline's topics" in dry.stdout and "nothing was changed" in dry.stdout
    assert not set(topics) & set(AdminClient(conns.kafka.to_librdkafka()).list_topics(timeout=15).topics)

    res = cli("dr", "restore", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout)

    # the registry's own answers: every subject back, same schemas in the same order, its level
    url = conns.registry.url
    with tarfile.open(out) as tar:
        registry = json.loads(tar.extractfile("registry.json").read())  # type: ignore[union-attr]
    assert registry["subjects"], "the backup holds no subject: nothing was tested"
    for subject, doc in registry["subjects"].items():
        versions = httpx.get(f"{url}/subjects/{subject}/versions", timeout=30).json()
        assert versions == [v["version"] for v in doc["versions"]]
        for v in doc["versions"]:
            got = httpx.get(f"{url}/subjects/{subject}/versions/{v['version']}", timeout=30).json()
            assert json.loads(got["schema"]) == json.loads(v["schema"])
        level = httpx.get(f"{url}/config/{subject}", timeout=30).json()["compatibilityLevel"]
        assert level == doc["compatibility"]
    # AdminClient: the application group starts at the beginning of the new raw topic
    assert committed(conns, app_group) == {k: 0 for k in before}
    # PostgreSQL: the slot is the backup copy, from before B
    with psycopg.connect(conns.postgres.conninfo()) as pg:
        slot_lsn, bk_lsn = (
            pg.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (s,)
            ).fetchone()[0]
            for s in (run.slot, backup_slot_name(run.slot))
        )
    assert slot_lsn == bk_lsn

    capture = start_capture(run, log)
    try:
        events = wait_raw(conns, run, set(b_ids) | set(c_ids))
    finally:
        stop(capture)
    seen = [e.entity_id for e in events]
    assert set(b_ids) | set(c_ids) <= set(seen), (
        f"lost after the backup: {sorted(set(b_ids + c_ids) - set(seen))}"
    )
    assert not set(a_ids) & set(seen), "history before the backup's position was replayed"
    assert len(seen) == len(set(seen)), "a change arrived twice in the new cluster"

    # a second restore: the target is not empty any more
    again = cli("dr", "restore", str(out))
    assert (
        again.returncode == 1
        and "not empty" in again.stderr + again.stdout
        and "hint:" in again.stderr + again.stdout
    )


def test_restore_refuses_a_damaged_or_newer_backup(stack: Any, run: DrillPipeline, tmp_path: Path) -> None:
    conns: Connections = stack.connections
    run.create_topics_and_schemas(conns)
    out = tmp_path / "bk"
    res = cli("dr", "backup", "--out", str(out), "--pipeline", str(run.pipeline_file), "--no-backup-slot")
    assert res.returncode == 0, res.stdout + res.stderr

    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "files" / "pipeline.yaml").write_text((out / "files" / "pipeline.yaml").read_text() + "# x\n")
    res = cli("dr", "restore", str(damaged), "--dry-run")
    assert res.returncode == 1 and "sha256" in res.stdout + res.stderr and "hint:" in res.stdout + res.stderr

    newer = tmp_path / "newer"
    shutil.copytree(out, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    res = cli("dr", "restore", str(newer), "--dry-run")
    assert res.returncode == 1 and "format 99" in res.stdout + res.stderr

    # the source cluster still has the topics: not an empty target
    res = cli("dr", "restore", str(out), "--dry-run")
    assert res.returncode == 1 and f"topic {run.raw_topic}" in res.stdout + res.stderr


def test_backup_refuses_to_write_a_secret(stack: Any, run: DrillPipeline, tmp_path: Path) -> None:
    """A secret of the connection settings pasted into pipeline.yaml: no backup is written."""
    run.pipeline_file.write_text(run.pipeline_file.read_text() + f"# password {SECRET}\n")
    out = tmp_path / "bk.tar.gz"
    env = {"CDCROUTER_REGISTRY__BASIC_AUTH_USER_INFO": f"drbk:{SECRET}"}
    res = cli(
        "dr", "backup", "--out", str(out), "--pipeline", str(run.pipeline_file), "--no-backup-slot", env=env
    )
    assert res.returncode == 1 and "secret" in res.stdout + res.stderr, res.stdout + res.stderr
    assert not out.exists()
    assert SECRET not in res.stdout + res.stderr


def _rewrite(backup: Path, name: str, doc: dict[str, Any]) -> None:
    """Change one part and its sha256 in the manifest (a backup as an older run could have left it)."""
    import hashlib

    (backup / name).write_text(json.dumps(doc))
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256((backup / name).read_bytes()).hexdigest()
    (backup / "manifest.json").write_text(json.dumps(manifest))


def test_restore_refuses_a_slot_that_cannot_resend_the_changes(
    stack: Any, run: DrillPipeline, tmp_path: Path
) -> None:
    """The slot moved past the backup's position and there is no backup copy: exit 1 unless
    --accept-gap; a backup copy replaced by a newer backup: exit 1; no slot at all: exit 1.
    The LSNs come from pg_replication_slots (the oracle), the target is empty (no topics created)."""
    conns: Connections = stack.connections
    conninfo = conns.postgres.conninfo()
    with psycopg.connect(conninfo, autocommit=True) as pg:
        pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (run.slot,))
        pg.execute("SELECT pg_logical_emit_message(false, 'drbk', 'move on')")
        confirmed = pg.execute(
            "SELECT confirmed_flush_lsn::text, pg_lsn(confirmed_flush_lsn) - '0/0'::pg_lsn"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (run.slot,),
        ).fetchone()
    out = tmp_path / "bk"
    res = cli("dr", "backup", "--out", str(out), "--pipeline", str(run.pipeline_file), "--no-backup-slot")
    assert res.returncode == 0, res.stdout + res.stderr
    capture = json.loads((out / "capture.json").read_text())
    assert capture["slot_state"]["confirmed_flush_lsn"] == confirmed[0]
    # a position 4 kB before the slot, and a slot that has moved since the backup
    end = int(confirmed[1]) - 4096
    capture["position"] = {"commit_lsn": end - 100, "end_lsn": end, "snapshot_done": True}
    capture["slot_state"]["confirmed_flush_lsn"] = "0/1"
    _rewrite(out, "capture.json", capture)

    res = cli("dr", "restore", str(out), "--dry-run")
    text = res.stdout + res.stderr
    assert res.returncode == 1 and "past the backup's position" in text and "--accept-gap" in text, text
    res = cli("dr", "restore", str(out), "--dry-run", "--accept-gap")
    assert res.returncode == 0 and "are NOT restored" in res.stdout, res.stdout + res.stderr

    # a backup copy that another backup replaced
    bk = backup_slot_name(run.slot)
    with psycopg.connect(conninfo, autocommit=True) as pg:
        pg.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (run.slot, bk))
    capture["backup_slot"] = {"slot_name": bk, "confirmed_flush_lsn": "0/2"}
    _rewrite(out, "capture.json", capture)
    res = cli("dr", "restore", str(out), "--dry-run")
    assert res.returncode == 1 and "newer backup" in res.stdout + res.stderr, res.stdout + res.stderr

    # neither the slot nor its copy (a database restored from its own backup)
    with psycopg.connect(conninfo, autocommit=True) as pg:
        for slot in (run.slot, bk):
            pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    res = cli("dr", "restore", str(out), "--dry-run")
    text = res.stdout + res.stderr
    assert res.returncode == 1 and "--resnapshot" in text and "hint:" in text, text
