"""``cdcrouter dr backup``: what a pipeline needs besides Kafka's data and PostgreSQL's rows.

A backup is a directory (or the same as a ``.tar.gz``) of JSON parts and the pipeline's files,
with ``manifest.json`` naming each part and its sha256:

- ``files/pipeline.yaml``, ``files/filters.yaml``: the files themselves;
- ``capture.json``: the capture position (the record capture commits to ``<raw>.capture-offsets``
  with its events) and the slot as ``pg_replication_slots`` shows it;
- ``offsets.json``: every consumer group's committed offsets on the pipeline's topics;
- ``registry.json``: the pipeline's subjects, every version (id, schema), compatibility levels;
- ``flink.json``: the deployed Flink statements cdcrouter keeps in ``<state>/deploy``, with the
  savepoint of a stopped job or one triggered now from a running one (``--flink-rest``).

The backup slot: the slot can only hand out changes after its ``confirmed_flush_lsn``, and capture
moves that forward as soon as Kafka has committed. After the backup, the changes Kafka takes in
exist only in Kafka; if that cluster is lost, the slot cannot send them again. So the backup copies
the slot (``pg_copy_logical_replication_slot``) to ``<slot>_bk`` *before* it reads the position: the
copy keeps every change after the position, and ``dr restore`` resumes capture from it. The cost:
the copy holds WAL back from the last backup on (``--no-backup-slot`` leaves it out).

Secrets never enter a backup: connection settings are not backed up at all, and every part is
checked against the secret values in effect before it is kept (:func:`check_no_secrets`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.errors import CdcrouterError

FORMAT = 1  # manifest.json "format": a restore refuses a newer one
MANIFEST = "manifest.json"
BACKUP_SLOT_SUFFIX = "_bk"


class BackupError(CdcrouterError):
    """A backup or restore that cannot go on (exit 1 with a hint)."""


def backup_slot_name(slot: str) -> str:
    return f"{slot[: 63 - len(BACKUP_SLOT_SUFFIX)]}{BACKUP_SLOT_SUFFIX}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class PipelineNames:
    """The names a backup covers, from pipeline.yaml and filters.yaml."""

    raw_topic: str
    offsets_topic: str
    dlq_topic: str
    slot: str
    filtered_topics: list[str]

    @classmethod
    def load(cls, pipeline_file: Path, filters_file: Path | None) -> PipelineNames:
        from cdcrouter.capture.pipeline import load_pipeline
        from cdcrouter.filters import load_filters

        p = load_pipeline(pipeline_file)
        filtered = (
            sorted({f.output_topic for f in load_filters(filters_file).filters}) if filters_file else []
        )
        rt = p.raw_topic
        return cls(rt.name, rt.offsets_topic, rt.dlq_topic, p.replication.slot, filtered)

    @property
    def topics(self) -> list[str]:
        """Every topic whose contents or offsets belong to the pipeline."""
        return [self.raw_topic, self.offsets_topic, self.dlq_topic, *self.filtered_topics]

    @property
    def subjects(self) -> list[str]:
        from cdcrouter.schemas.registry import subject_for

        return [subject_for(t) for t in (self.raw_topic, *self.filtered_topics)]


# ---------------------------------------------------------------------------- the parts


def slot_state(conninfo: str, slot: str) -> dict[str, Any] | None:
    """The slot's row in ``pg_replication_slots`` (LSNs as text), or None if there is no such slot."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT slot_name, plugin, database, active, confirmed_flush_lsn::text, restart_lsn::text"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    if row is None:
        return None
    keys = ("slot_name", "plugin", "database", "active", "confirmed_flush_lsn", "restart_lsn")
    return dict(zip(keys, row, strict=True))


def copy_slot(conninfo: str, source: str, target: str) -> dict[str, Any]:
    """Replace ``target`` with a copy of logical slot ``source`` (same position and plugin)."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (target,)
        ).fetchone()
        if row is not None and row[0]:
            raise BackupError(
                f"replication slot {target} is in use", hint="stop what reads it (capture) and try again"
            )
        if row is not None:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (target,))
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (source, target))
    state = slot_state(conninfo, target)
    assert state is not None
    return state


def capture_part(conns: Connections, names: PipelineNames, with_backup_slot: bool) -> dict[str, Any]:
    from cdcrouter.capture.sink import read_offsets

    conninfo = conns.postgres.conninfo()
    slot = slot_state(conninfo, names.slot)
    backup_slot = None
    if slot is not None and with_backup_slot:
        # first the copy, then the position: the copy can hand out every change after it
        backup_slot = copy_slot(conninfo, names.slot, backup_slot_name(names.slot))
    admin = AdminClient(conns.kafka.to_librdkafka())
    position = None
    if names.offsets_topic in admin.list_topics(timeout=15).topics:  # else capture never ran
        position = read_offsets(conns, names.offsets_topic, names.slot, timeout_s=60)
    return {
        "offsets_topic": names.offsets_topic,
        "slot": names.slot,
        "position": json.loads(position.to_json()) if position is not None else None,
        "slot_state": slot,
        "backup_slot": backup_slot,
    }


def _groups(admin: AdminClient) -> list[str]:
    listed = admin.list_consumer_groups(request_timeout=30).result(timeout=60)
    return sorted(g.group_id for g in listed.valid)


def group_offsets(
    admin: AdminClient, topics: Iterable[str], groups: list[str] | None = None
) -> dict[str, dict[str, dict[str, int]]]:
    """``group -> topic -> partition -> committed offset`` for every group with offsets on ``topics``."""
    wanted = set(topics)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for group in groups if groups is not None else _groups(admin):
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=30)
        try:
            res = fut[group].result(timeout=60)
        except Exception:  # a group that went away meanwhile
            continue
        for tp in res.topic_partitions or []:
            if tp.topic in wanted and tp.offset >= 0 and not tp.error:
                out.setdefault(group, {}).setdefault(tp.topic, {})[str(tp.partition)] = tp.offset
    return out


def watermarks(conns: Connections, topics: Iterable[str]) -> dict[str, dict[str, list[int]]]:
    """``topic -> partition -> [low, high]`` (what the offsets point into), for the record."""
    from confluent_kafka import Consumer

    consumer = Consumer({**conns.kafka.to_librdkafka(), "group.id": "cdcrouter-dr-backup", "log_level": 3})
    out: dict[str, dict[str, list[int]]] = {}
    try:
        md = consumer.list_topics(timeout=15)
        for topic in topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for p in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                out.setdefault(topic, {})[str(p)] = [low, high]
    finally:
        consumer.close()
    return out


def registry_part(conns: Connections, subjects: Iterable[str]) -> dict[str, Any]:
    from cdcrouter.schemas.registry import RegistryClient

    with RegistryClient(conns.registry.to_client_conf()) as client:
        status, data = client._call("GET", "/config", "reading the global config")
        global_level = (data or {}).get("compatibilityLevel") if status < 400 else None
        out: dict[str, Any] = {}
        for subject in subjects:
            versions = client.versions(subject)
            if not versions:
                continue
            status, own = client._call("GET", f"/config/{subject}", f"reading {subject} config")
            own_level = (own or {}).get("compatibilityLevel") if status < 400 else None
            out[subject] = {
                "compatibility": client.compatibility(subject),
                "own_compatibility": own_level,
                "versions": [
                    {"version": int(v["version"]), "id": int(v["id"]), "schema": v["schema"]}
                    for v in versions
                ],
            }
    return {"global_compatibility": global_level, "subjects": out}


def flink_part(state_dir: Path, rest_url: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """The deploy state files of Flink deployments; with ``rest_url``, a savepoint of each running job."""
    deployments = []
    names = set()
    for path in sorted((state_dir / "deploy").glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            deployments.append({"file": path.name, "state": json.loads(path.read_text())})
            if path.name.startswith("flink-"):
                names.add(path.name[len("flink-") : -len(".json")])
    triggered: list[dict[str, Any]] = []
    if rest_url:
        from cdcrouter.dr.flink_savepoint import trigger_savepoints

        triggered = trigger_savepoints(rest_url, names, say)
    return {"deployments": deployments, "savepoints": triggered}


# ---------------------------------------------------------------------------- secrets


def secret_values(conns: Connections) -> list[str]:
    """Every secret in effect: ``SecretStr`` settings and secret-looking ``CDCROUTER_*`` variables."""
    found: list[str] = []
    for section in Connections.model_fields:
        settings = getattr(conns, section, None)
        if settings is None or not hasattr(settings, "model_dump"):
            continue
        for value in settings.model_dump().values():
            if hasattr(value, "get_secret_value") and value.get_secret_value():
                found.append(value.get_secret_value())
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.startswith("CDCROUTER_") and any(
            w in upper for w in ("PASSWORD", "SECRET", "USER_INFO", "TOKEN")
        ):
            found.append(value)
    for value in list(found):  # "user:secret" also as its secret half
        if ":" in value:
            found.append(value.partition(":")[2])
    return sorted({v for v in found if len(v) >= 4})


def check_no_secrets(directory: Path, secrets: list[str]) -> None:
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for secret in secrets:
            if secret.encode() in data:
                raise BackupError(
                    f"{path.relative_to(directory)} would hold a secret of the connection settings; "
                    "the backup was not written",
                    hint="move the secret out of the pipeline/filters files into the environment "
                    "(CDCROUTER_* variables or ${VAR} placeholders)",
                )


# ---------------------------------------------------------------------------- writing


@dataclass
class BackupResult:
    out: Path
    manifest: dict[str, Any]
    lines: list[str] = field(default_factory=list)


def take_backup(
    conns: Connections,
    pipeline_file: Path,
    filters_file: Path | None,
    out: Path,
    *,
    state_dir: Path,
    groups: list[str] | None = None,
    backup_slot: bool = True,
    flink_rest: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> BackupResult:
    """Write a backup to ``out`` (a directory, or a ``.tar.gz`` file); each step says what it did."""
    from cdcrouter.topics import admin_client
    from cdcrouter.versions import package_version

    names = PipelineNames.load(pipeline_file, filters_file)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not empty", hint="give a new directory or .tar.gz name")
    work = Path(tempfile.mkdtemp(prefix="cdcrouter-backup-"))
    try:
        parts: dict[str, Any] = {}
        (work / "files").mkdir()
        shutil.copyfile(pipeline_file, work / "files" / "pipeline.yaml")
        if filters_file is not None:
            shutil.copyfile(filters_file, work / "files" / "filters.yaml")
        say(f"files: {pipeline_file}" + (f", {filters_file}" if filters_file else ""))

        capture = capture_part(conns, names, backup_slot)
        parts["capture.json"] = capture
        pos = capture["position"]
        from cdcrouter.capture.pgoutput import lsn_to_str

        where = lsn_to_str(pos["end_lsn"]) if pos else "none (capture never committed)"
        bk = capture["backup_slot"]
        say(
            f"capture position of slot {names.slot}: {where}; slot confirmed_flush_lsn "
            f"{(capture['slot_state'] or {}).get('confirmed_flush_lsn', '(no slot)')}"
            + (f"; copied to {bk['slot_name']} at {bk['confirmed_flush_lsn']}" if bk else "")
        )

        admin = admin_client(conns.kafka.to_librdkafka())
        offsets = group_offsets(admin, names.topics, groups)
        parts["offsets.json"] = {"groups": offsets, "watermarks": watermarks(conns, names.topics)}
        say(f"consumer group offsets: {len(offsets)} group(s): {', '.join(offsets) or 'none'}")

        registry = registry_part(conns, names.subjects)
        parts["registry.json"] = registry
        counts = ", ".join(f"{s} ({len(v['versions'])})" for s, v in registry["subjects"].items())
        say(f"registry: {len(registry['subjects'])} subject(s): {counts or 'none'}")

        flink = flink_part(state_dir, flink_rest, say)
        parts["flink.json"] = flink
        say(
            f"flink: {len(flink['deployments'])} deployment state file(s), "
            f"{len(flink['savepoints'])} savepoint(s) taken now"
        )

        for name, doc in parts.items():
            (work / name).write_text(json.dumps(doc, indent=2, sort_keys=True))
        hashes = {str(p.relative_to(work)): sha256_of(p) for p in sorted(work.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "cdcrouter_version": package_version(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "pipeline": {
                "raw_topic": names.raw_topic,
                "slot": names.slot,
                "topics": names.topics,
                "subjects": names.subjects,
            },
            "files": {"pipeline": pipeline_file.name, "filters": filters_file.name if filters_file else None},
            "sha256": hashes,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        check_no_secrets(work, secret_values(conns))
        _store(work, out)
        say(f"manifest: {len(hashes)} part(s) with their sha256 -> {out}")
        return BackupResult(out, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _store(work: Path, out: Path) -> None:
    if out.name.endswith(".tar.gz"):
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            for p in sorted(work.rglob("*")):
                tar.add(p, arcname=str(p.relative_to(work)), recursive=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(work.rglob("*")):
        target = out / p.relative_to(work)
        if p.is_dir():
            target.mkdir(exist_ok=True)
        else:
            shutil.copyfile(p, target)


def open_backup(source: Path, into: Path) -> Path:
    """The backup's directory: ``source`` itself, or ``source`` (.tar.gz) unpacked into ``into``."""
    if source.is_dir():
        return source
    if not source.is_file():
        raise BackupError(
            f"backup {source} does not exist", hint="give the directory or .tar.gz dr backup wrote"
        )
    try:
        with tarfile.open(source, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(
            f"{source} is not a readable .tar.gz: {exc}", hint="give what dr backup wrote"
        ) from exc
    return into
