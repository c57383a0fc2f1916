"""Taking over a dead replica's partitions: abort its open transactions at once.

A router killed with a transaction open leaves records in the filtered topics that read_committed
readers cannot pass until the transaction ends: until the broker times it out
(``transaction.timeout.ms``), or a producer with the same ``transactional.id`` registers. A restart
of the same instance does the latter; a replica that takes the partitions over does it here.

Each commit tags the raw offsets it sends with the committing instance (the offset metadata, in the
same transaction), and every instance remembers the peers it saw in its group. When partitions are
assigned, the instance compares the previous owners (the tags of the committed offsets) and the
peers it saw before with the group's current members: an instance gone from the group is dead or
has left, so its lanes' transactional ids are taken for a moment (``init_transactions``: the
coordinator aborts the open transaction and bumps the epoch, fencing that producer) and released.

A departed instance that comes back with its id (a restart) fences whatever holds its ids in turn;
if it registered between leaving the group and the takeover, its first transaction is fenced once
and redone (one recovery, see :meth:`cdcrouter.route.setup._Setup._replace`). Exactly once holds
either way: fencing only ever aborts.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.route.lanes import StuckCall, bounded

__all__ = ["CLIENT_PREFIX", "Owner", "client_id", "fence", "live_instances", "owner_of", "previous_owners"]

log = logging.getLogger("cdcrouter.route")

CLIENT_PREFIX = "cdcrouter-router."  # the consumer's client.id: this prefix and the instance id


@dataclass(frozen=True)
class Owner:
    """An instance of the group and how many lanes (transactional ids) it runs."""

    instance_id: str
    lanes: int

    def tag(self) -> str:
        """The offset metadata its commits carry."""
        return json.dumps({"router": self.instance_id, "lanes": self.lanes}, separators=(",", ":"))

    def transactional_ids(self, group: str) -> list[str]:
        base = f"cdcrouter-router.{group}.{self.instance_id}"
        return [base] + [f"{base}.lane{i}" for i in range(1, self.lanes)]


def owner_of(metadata: str | None) -> Owner | None:
    """The instance a committed offset's metadata names (None: not a router's tag)."""
    if not metadata or not metadata.startswith("{"):
        return None
    try:
        doc = json.loads(metadata)
        return Owner(str(doc["router"]), max(1, min(int(doc["lanes"]), 8)))
    except (ValueError, KeyError, TypeError):
        return None


def client_id(instance_id: str) -> str:
    return CLIENT_PREFIX + instance_id


def live_instances(admin: AdminClient, group: str, timeout_s: float) -> set[str] | None:
    """The instance ids of the group's current members (None when the group cannot be described:
    then nobody is fenced)."""
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout_s)
    except Exception as exc:  # KafkaException, a timeout: the broker's transaction timeout still applies
        log.warning("takeover: cannot describe group %s (%s); not fencing departed instances", group, exc)
        return None
    return {
        m.client_id.removeprefix(CLIENT_PREFIX) for m in desc.members if m.client_id.startswith(CLIENT_PREFIX)
    }


def previous_owners(
    admin: AdminClient, group: str, partitions: list[TopicPartition], timeout_s: float
) -> set[Owner]:
    """The instances that committed ``partitions`` last (their offsets' tags), read without
    ``require_stable``: a dead instance's pending transactional offsets would hold that read (and
    the consumer's own ``committed()``) until its transaction ends, which is what fencing it ends."""
    request = [
        ConsumerGroupTopicPartitions(group, [TopicPartition(tp.topic, tp.partition) for tp in partitions])
    ]
    try:
        result = admin.list_consumer_group_offsets(request, require_stable=False, request_timeout=timeout_s)
        listed = result[group].result(timeout_s)
    except Exception as exc:  # KafkaException, a timeout: the broker's transaction timeout still applies
        log.warning("takeover: cannot read the committed offsets of group %s (%s)", group, exc)
        return set()
    return {o for tp in listed.topic_partitions if (o := owner_of(tp.metadata)) is not None}


def fence(producer_conf: dict[str, Any], transactional_ids: list[str], limit_s: float) -> float:
    """Register each id once (aborting its open transaction) and let it go; the seconds it took.
    The ids are fenced in parallel; one that fails is logged (its transaction still times out)."""
    began = time.monotonic()

    def one(tid: str) -> None:
        # quiet: its "concurrent transactions" retries while the coordinator aborts are expected
        producer = Producer({**producer_conf, "transactional.id": tid, "log_level": 3})
        try:
            bounded(lambda t: producer.init_transactions(t), limit_s, f"fencing {tid}")
        except (KafkaException, StuckCall) as exc:
            why = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            log.warning("takeover: could not fence %s: %s", tid, why)
        else:
            producer.flush(0)

    with ThreadPoolExecutor(max(1, len(transactional_ids)), thread_name_prefix="cdcrouter-fence") as pool:
        list(pool.map(one, transactional_ids))
    return time.monotonic() - began
