"""Where capture resumes in the region it fails over to.

Capture resumes from the position in ``<raw>.capture-offsets`` (the last PostgreSQL transaction
fully in Kafka) and skips every transaction at or before it. In the target region that topic is a
mirror copy, and MirrorMaker 2 copies each partition on its own: the position can arrive before
the raw records it was committed with (one transaction in the old region, two partitions in the
mirror). Trusting it would skip changes the target never got. So the failover lowers the target's
position to what the replication slot still holds (its ``confirmed_flush_lsn``): capture reads
again every change after it, the ones the mirror did copy come again under the same uuid
(deduplicated by consumers), and none is skipped. A slot confirmed *past* the mirrored position
is a gap no rewind can close (the slot no longer has those changes): it is reported with its LSNs
so the affected tables can be snapshotted again (``cdcrouter capture snapshot``). No position at
all in the target (the offsets topic not mirrored yet) gets one at the slot's confirmed LSN, so
capture resumes from the slot instead of finding a slot without a position (which it refuses to
drop: capture/slot_position.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.capture.pipeline import Pipeline, load_pipeline
from cdcrouter.capture.sink import ensure_topics, read_offsets
from cdcrouter.capture.slot_position import confirmed_lsn, position_at_slot
from cdcrouter.config import Connections
from cdcrouter.dr.processes import Managed
from cdcrouter.errors import DrError


@dataclass(frozen=True)
class Rewind:
    slot: str
    mirrored: int | None  # the position the target region had (commit LSN), None: none
    confirmed: int | None  # the slot's confirmed_flush_lsn, None: no such slot
    rewound_to: int | None  # the position written into the target (None: left as it was)

    def describe(self) -> str:
        m = lsn_to_str(self.mirrored) if self.mirrored is not None else "none"
        c = lsn_to_str(self.confirmed) if self.confirmed is not None else "no slot"
        if self.rewound_to is not None and self.mirrored is None:
            return (
                f"capture (slot {self.slot}): no position in the target (its offsets topic is not mirrored "
                f"yet): written at the slot's {c}: capture reads every change the slot holds; those before "
                "it are in the target as far as the mirror copied them (dr.confirm_after_mirror: all)"
            )
        if self.rewound_to is not None:
            return (
                f"capture (slot {self.slot}): position in the target lowered from {m} to the slot's {c}: "
                "what the mirror may have missed is captured again (same uuids)"
            )
        if self.confirmed is not None and self.mirrored is not None and self.mirrored < self.confirmed:
            return (
                f"capture (slot {self.slot}): GAP: the slot was confirmed up to {c}, the target's "
                f"position is {m}; changes committed in between may exist only in the old region: "
                "snapshot the affected tables again (cdcrouter capture snapshot --table ...)"
            )
        return f"capture (slot {self.slot}): position {m}, slot at {c}: resumes from the slot"


def pipeline_of(m: Managed) -> Pipeline:
    """The pipeline file a recorded capture process runs (``--pipeline``/``-p``, else pipeline.yaml)."""
    argv = m.argv
    path = "pipeline.yaml"
    for i, arg in enumerate(argv):
        if arg in ("--pipeline", "-p") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--pipeline="):
            path = arg.split("=", 1)[1]
    full = Path(path) if Path(path).is_absolute() else Path(m.cwd) / path
    return load_pipeline(full)


def slot_confirmed(conns: Connections, slot: str) -> int | None:
    with psycopg.connect(conns.postgres.conninfo(), connect_timeout=10) as conn:
        return confirmed_lsn(conn, slot)


def rewind_to_slot(pipeline: Pipeline, target: Connections) -> Rewind:
    """Lower the target region's capture position to the slot's confirmed LSN (see the module doc)."""
    slot = pipeline.replication.slot
    topic = pipeline.raw_topic.offsets_topic
    confirmed = slot_confirmed(target, slot)
    current = read_offsets(target, topic, slot, timeout_s=30.0)
    mirrored = current.commit_lsn if current is not None else None
    if confirmed is None or (current is not None and current.commit_lsn < confirmed):
        return Rewind(slot, mirrored, confirmed, None)
    if current is None:  # not mirrored yet: capture would otherwise find a slot it must not drop
        ensure_topics(target, pipeline.raw_topic)  # the offsets topic may not be in the target yet
        lowered = position_at_slot(pipeline, confirmed)
    else:
        lowered = dataclasses.replace(current, commit_lsn=confirmed - 1, end_lsn=confirmed)
    producer = Producer(target.kafka.producer_conf())
    failures: list[str] = []
    producer.produce(
        topic,
        key=slot.encode(),
        value=lowered.to_json(),
        partition=0,
        on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
    )
    if producer.flush(30) or failures:
        raise DrError(
            f"cannot write capture's position into {topic} in the target region: "
            f"{failures[0] if failures else 'timed out'}",
            hint="check the target region's Kafka and the ACLs on the topic",
        )
    return Rewind(slot, mirrored, confirmed, lowered.commit_lsn)
