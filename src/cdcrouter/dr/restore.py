"""``cdcrouter dr restore FROM``: a backup into an empty Kafka and registry, without replaying history.

What a restore promises (docs/disaster-recovery.md, "Backups and restore"):

- capture continues from the backup's capture position P: every transaction committed after P is
  written once to the new raw topic; nothing committed at or before P is sent again (no snapshot);
- the slot is the backup slot's copy (``<slot>_bk``, see :mod:`cdcrouter.dr.backup`), which can
  still hand out every change after P. Without it, the pipeline's own slot is used if it has not
  moved past P; if it has, the changes between P and the slot's position were only in the lost
  cluster, and the restore stops unless ``--accept-gap`` says to go on without them;
- the topics are new and empty, so every consumer group (router or application) starts at the
  beginning of each new partition it had offsets for: an old offset means nothing in a new topic
  (it would point past the end, and ``auto.offset.reset=latest`` would skip what capture writes).
  Events between P and the failure that consumers had already read arrive again, with the same
  ``eventHeader.uuid`` (derived from the change's LSN), so an idempotent consumer drops them;
- subjects get every version again, in order, under the backed-up compatibility level. The
  registry assigns ids itself: Apicurio's are content ids, so the same schema text has the same id
  in one registry but not necessarily across registries. Nothing old is read with an old id after
  a restore into an empty Kafka, so only a Kafka restored by other means needs equal ids.

Each step is a :class:`Step`: ``--dry-run`` prints them, a real run prints what each one did.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition

from cdcrouter.config import Connections
from cdcrouter.dr.backup import FORMAT, MANIFEST, BackupError, backup_slot_name, open_backup, sha256_of


@dataclass
class Step:
    title: str
    run: Callable[[], str]
    position: bool = True  # a slot step: whether the capture position is written after it


@dataclass
class Backup:
    """A backup read back and checked (hashes, format)."""

    root: Path
    manifest: dict[str, Any]

    def part(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.root / name).read_text()))

    @property
    def pipeline_file(self) -> Path:
        return self.root / "files" / "pipeline.yaml"

    @property
    def filters_file(self) -> Path | None:
        p = self.root / "files" / "filters.yaml"
        return p if p.is_file() else None


def read_backup(root: Path) -> Backup:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{root} has no {MANIFEST}", hint="give the directory or .tar.gz dr backup wrote")
    manifest = json.loads(manifest_path.read_text())
    fmt = int(manifest.get("format", 0))
    if fmt > FORMAT:
        raise BackupError(
            f"the backup is format {fmt}, written by cdcrouter {manifest.get('cdcrouter_version')}; "
            f"this cdcrouter reads format {FORMAT} and older",
            hint="restore with the cdcrouter version that wrote the backup (or newer)",
        )
    for name, digest in sorted(manifest.get("sha256", {}).items()):
        path = root / name
        if not path.is_file():
            raise BackupError(f"the backup lacks {name}, which its manifest lists", hint="take a new backup")
        if sha256_of(path) != digest:
            raise BackupError(
                f"{name} does not match its sha256 in the manifest (changed or damaged since the backup)",
                hint="restore from an intact copy of the backup",
            )
    return Backup(root, manifest)


# ---------------------------------------------------------------------------- the target


def non_empty(conns: Connections, backup: Backup) -> list[str]:
    """What the target already holds of the pipeline: topics, subjects, group offsets."""
    from cdcrouter.schemas.registry import RegistryClient
    from cdcrouter.topics import admin_client

    pipeline = backup.manifest["pipeline"]
    admin = admin_client(conns.kafka.to_librdkafka())
    existing = set(admin.list_topics(timeout=15).topics)
    found = [f"topic {t}" for t in pipeline["topics"] if t in existing]
    with RegistryClient(conns.registry.to_client_conf()) as client:
        found += [f"subject {s}" for s in pipeline["subjects"] if client.versions(s)]
    groups = backup.part("offsets.json")["groups"]
    for group in groups:
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=30)
        try:
            tps = res[group].result(timeout=60).topic_partitions or []
        except Exception:
            continue
        if any(tp.offset >= 0 and tp.topic in pipeline["topics"] for tp in tps):
            found.append(f"offsets of group {group}")
    return found


def plan_restore(
    conns: Connections,
    backup: Backup,
    *,
    accept_gap: bool = False,
    files_dir: Path | None = None,
    state_dir: Path | None = None,
) -> list[Step]:
    """Check the target and the slot, and return the steps (nothing is changed yet)."""
    found = non_empty(conns, backup)
    if found:
        raise BackupError(
            "the target is not empty: it already holds " + ", ".join(found),
            hint="restore into a fresh Kafka and registry (or delete these first); a restore over "
            "live topics would mix two histories",
        )
    capture = backup.part("capture.json")
    steps = [
        Step(
            "create the pipeline's topics (as `cdcrouter topics apply` and capture would)",
            lambda: _topics(conns, backup),
        ),
        Step(
            "register every subject version in order and set its compatibility",
            lambda: _subjects(conns, backup),
        ),
    ]
    slot_step = _slot_step(conns, capture, accept_gap)
    if slot_step is not None:
        steps.append(slot_step)
    if slot_step is not None and slot_step.position:
        steps.append(
            Step(
                "write the capture position to " + capture["offsets_topic"], lambda: _position(conns, capture)
            )
        )
    steps.append(
        Step("set each consumer group to the start of the new topics", lambda: _groups(conns, backup))
    )
    if files_dir is not None:
        steps.append(
            Step(f"write pipeline.yaml and filters.yaml to {files_dir}", lambda: _files(backup, files_dir))
        )
    if state_dir is not None and backup.part("flink.json")["deployments"]:
        steps.append(
            Step(
                f"restore the Flink deployment state into {state_dir}/deploy",
                lambda: _flink(backup, state_dir),
            )
        )
    return steps


def _slot_step(conns: Connections, capture: dict[str, Any], accept_gap: bool) -> Step | None:
    from cdcrouter.capture.pgoutput import lsn_to_str, str_to_lsn
    from cdcrouter.dr.backup import copy_slot, slot_state

    position = capture["position"]
    slot = capture["slot"]
    if position is None:
        return None  # capture never committed: it starts as new (its own snapshot setting)
    end = int(position["end_lsn"])
    conninfo = conns.postgres.conninfo()
    current = slot_state(conninfo, slot)
    if current is not None and current["active"]:
        raise BackupError(f"replication slot {slot} is in use", hint="stop capture before the restore")
    bk = slot_state(conninfo, backup_slot_name(slot))
    taken = capture.get("backup_slot") or {}
    if bk is not None and taken:
        # nothing advances the copy: another position means another backup replaced it
        if bk["confirmed_flush_lsn"] != taken.get("confirmed_flush_lsn"):
            raise BackupError(
                f"backup slot {bk['slot_name']} is at {bk['confirmed_flush_lsn']}, not at "
                f"{taken.get('confirmed_flush_lsn')} where this backup copied it: a newer backup replaced it",
                hint="restore the newest backup (or this one with --accept-gap, using the slot as it is)",
            )
        return Step(
            f"slot {slot}: a copy of {bk['slot_name']} (at {bk['confirmed_flush_lsn']}; the backup's "
            f"position is {lsn_to_str(end)})",
            lambda: _copy(conninfo, bk["slot_name"], slot, copy_slot),
        )
    if current is None:
        if accept_gap:
            return Step(
                f"slot {slot}: none (nor {backup_slot_name(slot)}); capture position not written: "
                "start capture with `cdcrouter capture run --resnapshot`",
                lambda: "no slot: capture starts over with --resnapshot",
                position=False,
            )
        raise BackupError(
            f"neither slot {slot} nor its backup copy {backup_slot_name(slot)} exists in this database: "
            "the changes after the backup cannot be read from PostgreSQL any more",
            hint="restore the rest with --accept-gap, then start capture with `cdcrouter capture run "
            "--resnapshot` (rows are sent again as SNAPSHOT events)",
        )
    confirmed = str_to_lsn(current["confirmed_flush_lsn"])
    unmoved = current["confirmed_flush_lsn"] == (capture.get("slot_state") or {}).get("confirmed_flush_lsn")
    if confirmed > end and not unmoved and not accept_gap:
        raise BackupError(
            f"slot {slot} is at {current['confirmed_flush_lsn']}, past the backup's position "
            f"{lsn_to_str(end)}, and there is no backup slot: changes committed in between may have been "
            "only in the lost Kafka cluster, and the slot cannot send them again",
            hint="go on without them with --accept-gap, or bridge them with `cdcrouter capture run "
            "--resnapshot` after the restore",
        )
    gap = ""
    if confirmed > end and not unmoved:
        gap = f"; changes {lsn_to_str(end)}..{current['confirmed_flush_lsn']} are NOT restored"
    return Step(f"slot {slot}: kept as it is (at {current['confirmed_flush_lsn']}){gap}", lambda: "kept")


def _copy(conninfo: str, source: str, target: str, copy_slot: Callable[..., dict[str, Any]]) -> str:
    state = copy_slot(conninfo, source, target)
    return f"slot {target} copied from {source}: confirmed_flush_lsn {state['confirmed_flush_lsn']}"


def _topics(conns: Connections, backup: Backup) -> str:
    from cdcrouter.capture.pipeline import load_pipeline
    from cdcrouter.capture.sink import ensure_topics
    from cdcrouter.topics import admin_client, apply_topics, plan_topics, topics_for

    admin = admin_client(conns.kafka.to_librdkafka())
    created = apply_topics(admin, plan_topics(admin, topics_for(backup.filters_file, backup.pipeline_file)))
    ensure_topics(conns, load_pipeline(backup.pipeline_file).raw_topic)
    names = backup.manifest["pipeline"]["topics"]
    return f"topics: {', '.join(names)} ({len(created)} created by the topic plan; capture's own ensured)"


def _subjects(conns: Connections, backup: Backup) -> str:
    from cdcrouter.schemas.registry import RegistryClient

    registry = backup.part("registry.json")
    lines = []
    with RegistryClient(conns.registry.to_client_conf()) as client:
        for subject, doc in registry["subjects"].items():
            client.set_compatibility(subject, "NONE")  # the old versions were accepted under older rules
            ids = []
            for v in doc["versions"]:
                new_id = client.register(subject, v["schema"])
                ids.append(f"v{v['version']} id {v['id']}->{new_id}")
            level = doc.get("compatibility") or "FULL_TRANSITIVE"
            client.set_compatibility(subject, level)
            got = [int(v["version"]) for v in client.versions(subject)]
            want = [int(v["version"]) for v in doc["versions"]]
            same = "same version numbers" if got == want else f"versions now {got} (were {want})"
            lines.append(f"{subject}: {', '.join(ids)}; {same}; compatibility {level}")
    return "subjects:\n      " + "\n      ".join(lines) if lines else "no subjects in the backup"


def _position(conns: Connections, capture: dict[str, Any]) -> str:
    from cdcrouter.capture.pgoutput import lsn_to_str
    from cdcrouter.capture.sink import Offsets

    offsets = Offsets.from_json(json.dumps(capture["position"]).encode())
    producer = Producer(conns.kafka.producer_conf(log_level=3))
    producer.produce(capture["offsets_topic"], offsets.to_json(), capture["slot"].encode())
    if producer.flush(30) != 0:
        raise BackupError(
            f"could not write the capture position to {capture['offsets_topic']}", hint="is Kafka up?"
        )
    return f"capture position: resume slot {capture['slot']} after {lsn_to_str(offsets.end_lsn)}"


def _groups(conns: Connections, backup: Backup) -> str:
    from cdcrouter.topics import admin_client

    groups = backup.part("offsets.json")["groups"]
    admin = admin_client(conns.kafka.to_librdkafka())
    lines = []
    for group, topics in groups.items():
        tps = [TopicPartition(t, int(p), 0) for t, parts in topics.items() for p in parts]
        res = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)], request_timeout=30
        )
        res[group].result(timeout=60)
        old = sum(int(o) for parts in topics.values() for o in parts.values())
        lines.append(f"{group}: {len(tps)} partition(s) at offset 0 (the backup had {old} records consumed)")
    return "groups:\n      " + "\n      ".join(lines) if lines else "no consumer group offsets in the backup"


def _files(backup: Backup, files_dir: Path) -> str:
    files_dir.mkdir(parents=True, exist_ok=True)
    names = backup.manifest["files"]
    written = []
    for kind, src in (("pipeline", backup.pipeline_file), ("filters", backup.filters_file)):
        if src is None:
            continue
        target = files_dir / (names.get(kind) or src.name)
        if target.exists() and target.read_bytes() != src.read_bytes():
            raise BackupError(
                f"{target} exists and differs from the backup's", hint="give an empty --files-dir"
            )
        shutil.copyfile(src, target)
        written.append(str(target))
    return "files: " + ", ".join(written)


def _flink(backup: Backup, state_dir: Path) -> str:
    out = []
    for dep in backup.part("flink.json")["deployments"]:
        target = state_dir / "deploy" / dep["file"]
        state = dict(dep["state"])
        # its savepoint holds offsets of the old raw topic: meaningless in the new, empty one
        state["backed_up_savepoint"], state["savepoint"] = state.get("savepoint"), None
        if target.exists():
            out.append(f"{dep['file']} kept (exists)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(state, indent=2, sort_keys=True))
        out.append(f"{dep['file']} written without its savepoint (deploy it again: `cdcrouter deploy apply`)")
    return "flink: " + "; ".join(out)


def restore(
    conns: Connections,
    source: Path,
    *,
    dry_run: bool = False,
    accept_gap: bool = False,
    files_dir: Path | None = None,
    state_dir: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[str]:
    """Restore ``source`` into the (empty) target; returns what each step did (or would do)."""
    work = Path(tempfile.mkdtemp(prefix="cdcrouter-restore-"))
    try:
        backup = read_backup(open_backup(source, work))
        say(
            f"backup of {backup.manifest['created_at']} "
            f"(cdcrouter {backup.manifest['cdcrouter_version']}): hashes match"
        )
        steps = plan_restore(conns, backup, accept_gap=accept_gap, files_dir=files_dir, state_dir=state_dir)
        say("target is empty: no topic, subject or group offsets of the pipeline")
        done = []
        for i, step in enumerate(steps, 1):
            line = f"[{i}/{len(steps)}] " + (f"would {step.title}" if dry_run else step.run())
            say(line)
            done.append(line)
        return done
    finally:
        shutil.rmtree(work, ignore_errors=True)
