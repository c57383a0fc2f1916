"""Diff desired topics against the cluster, show the plan, then apply it.

Create, increase partitions and alter config are applied; deletion only with ``allow_delete`` and
only for topics under a managed prefix; decreasing partitions (Kafka cannot) is refused with the
whole plan, before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from cdcrouter.errors import RouteError
from cdcrouter.topics.spec import TopicSpec

__all__ = ["TopicAction", "TopicPlan", "TopicsError", "apply_topics", "plan_topics"]


class TopicsError(RouteError):
    """A topic plan that cannot be applied, or a Kafka admin request that failed."""


@dataclass(frozen=True)
class TopicAction:
    kind: str  # create | partitions | config | delete | refuse | warn
    topic: str
    detail: str
    spec: TopicSpec | None = None
    config: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None

    def render(self) -> str:
        sign = {"create": "+", "partitions": "~", "config": "~", "delete": "-", "refuse": "!", "warn": "?"}
        return f"{sign[self.kind]} {self.topic}: {self.detail}"


@dataclass
class TopicPlan:
    actions: list[TopicAction] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[TopicAction]:
        return [a for a in self.actions if a.kind == "refuse"]

    @property
    def changes(self) -> list[TopicAction]:
        return [a for a in self.actions if a.kind in ("create", "partitions", "config", "delete")]

    def render(self) -> str:
        lines = [a.render() for a in self.actions]
        lines += [f"  {t}: up to date" for t in self.unchanged]
        deletes = sum(a.kind == "delete" for a in self.actions)
        lines.append(
            f"{len(self.changes)} change(s) ({deletes} delete(s)), {len(self.refused)} refused, "
            f"{len(self.unchanged)} up to date"
        )
        return "\n".join(lines)


def admin_client(kafka_conf: dict[str, Any]) -> AdminClient:
    return AdminClient(kafka_conf)


def _result(future: Any, what: str) -> Any:
    try:
        return future.result()
    except KafkaException as exc:
        raise TopicsError(
            f"{what}: {exc.args[0].str()}", hint="check the broker (cdcrouter stack status)"
        ) from exc


def _await_metadata(admin: AdminClient, partitions: dict[str, int], timeout_s: float = 15.0) -> None:
    """Return once the cluster metadata shows every topic with its partition count."""
    import time

    deadline = time.monotonic() + timeout_s
    while partitions and time.monotonic() < deadline:
        md = admin.list_topics(timeout=10).topics
        if all(t in md and md[t].error is None and len(md[t].partitions) >= n for t, n in partitions.items()):
            return
        time.sleep(0.2)


def _await_configs(admin: AdminClient, wanted: dict[str, dict[str, str]], timeout_s: float = 15.0) -> None:
    """Return once describe_configs shows every altered value (the broker applies them async)."""
    import time

    deadline = time.monotonic() + timeout_s
    while wanted and time.monotonic() < deadline:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in wanted])
        try:
            current = {
                res.name: {k: e.value for k, e in fut.result().items()} for res, fut in futures.items()
            }
        except KafkaException:
            current = {}
        if all(current.get(t, {}).get(k) == v for t, cfg in wanted.items() for k, v in cfg.items()):
            return
        time.sleep(0.2)


def plan_topics(
    admin: AdminClient,
    desired: list[TopicSpec],
    allow_delete: bool = False,
    managed_prefixes: tuple[str, ...] = (),
) -> TopicPlan:
    """Compare ``desired`` with the cluster; reads only.

    Existing topics that start with one of ``managed_prefixes`` and are not desired become
    ``delete`` actions when ``allow_delete`` is set, and a ``warn`` line otherwise.
    """
    try:
        md = admin.list_topics(timeout=15)
    except KafkaException as exc:
        raise TopicsError(
            f"cannot reach Kafka: {exc.args[0].str()}", hint="is the broker up? (cdcrouter stack status)"
        ) from exc
    plan = TopicPlan()
    existing = {name: t for name, t in md.topics.items() if t.error is None}
    present = [s for s in desired if s.name in existing]
    configs: dict[str, dict[str, str]] = {}
    if present:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, s.name) for s in present])
        for res, fut in futures.items():
            entries = _result(fut, f"describing {res.name}")
            configs[res.name] = {k: e.value for k, e in entries.items()}
    for spec in desired:
        meta = existing.get(spec.name)
        if meta is None:
            cfg = ", ".join(f"{k}={v}" for k, v in sorted(spec.config.items()))
            plan.actions.append(
                TopicAction(
                    "create",
                    spec.name,
                    f"create ({spec.role}) partitions={spec.partitions} replication={spec.replication_factor}"
                    + (f" {cfg}" if cfg else ""),
                    spec,
                )
            )
            continue
        changed = False
        current_parts = len(meta.partitions)
        if spec.partitions > current_parts:
            plan.actions.append(
                TopicAction(
                    "partitions",
                    spec.name,
                    f"increase partitions {current_parts} -> {spec.partitions} (keys move to new partitions)",
                    spec,
                    partitions=spec.partitions,
                )
            )
            changed = True
        elif spec.partitions < current_parts:
            plan.actions.append(
                TopicAction(
                    "refuse",
                    spec.name,
                    f"cannot decrease partitions {current_parts} -> {spec.partitions}: Kafka cannot remove "
                    f"partitions; keep {current_parts} or create a new topic and migrate",
                    spec,
                )
            )
            changed = True
        replication = len(next(iter(meta.partitions.values())).replicas) if meta.partitions else 0
        if replication and replication != spec.replication_factor:
            plan.actions.append(
                TopicAction(
                    "warn",
                    spec.name,
                    f"replication factor is {replication}, desired {spec.replication_factor}: not changed "
                    "(use kafka-reassign-partitions)",
                    spec,
                )
            )
        current_cfg = configs.get(spec.name, {})
        diff = {k: v for k, v in spec.config.items() if current_cfg.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {current_cfg.get(k)} -> {v}" for k, v in sorted(diff.items()))
            plan.actions.append(TopicAction("config", spec.name, f"alter config {detail}", spec, config=diff))
            changed = True
        if not changed:
            plan.unchanged.append(spec.name)
    wanted = {s.name for s in desired}
    for name in sorted(existing):
        if name in wanted or name.startswith("_") or not any(name.startswith(p) for p in managed_prefixes):
            continue
        if allow_delete:
            plan.actions.append(TopicAction("delete", name, "delete (no longer in filters.yaml)"))
        else:
            plan.actions.append(
                TopicAction("warn", name, "not in filters.yaml any more; pass --allow-delete to delete it")
            )
    return plan


def apply_topics(admin: AdminClient, plan: TopicPlan) -> list[str]:
    """Carry out ``plan``; refuses everything if the plan has a refused action. Returns what was done."""
    if plan.refused:
        raise TopicsError(
            "refusing to apply the topic plan:\n" + "\n".join(a.render() for a in plan.refused),
            hint="nothing was changed; fix the partition counts and plan again",
        )
    done: list[str] = []
    creates = [a for a in plan.actions if a.kind == "create" and a.spec is not None]
    if creates:
        new = [
            NewTopic(
                a.topic,
                num_partitions=a.spec.partitions,
                replication_factor=a.spec.replication_factor,
                config=a.spec.config,
            )
            for a in creates
            if a.spec is not None
        ]
        for topic, fut in admin.create_topics(new, request_timeout=30).items():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: someone else was faster, fine
                    raise TopicsError(f"creating {topic}: {exc.args[0].str()}") from exc
            done.append(f"created {topic}")
    grows = [a for a in plan.actions if a.kind == "partitions" and a.partitions]
    if grows:
        futures = admin.create_partitions([NewPartitions(a.topic, a.partitions) for a in grows])
        for topic, fut in futures.items():
            _result(fut, f"adding partitions to {topic}")
            done.append(f"grew {topic}")
    alters = [a for a in plan.actions if a.kind == "config"]
    if alters:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                a.topic,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in a.config.items()
                ],
            )
            for a in alters
        ]
        for res, fut in admin.incremental_alter_configs(resources).items():
            _result(fut, f"altering {res.name}")
            done.append(f"altered {res.name}")
        _await_configs(admin, {a.topic: a.config for a in alters})
    _await_metadata(admin, {a.topic: a.spec.partitions for a in creates if a.spec is not None})
    _await_metadata(admin, {a.topic: a.partitions for a in grows if a.partitions})
    deletes = [a.topic for a in plan.actions if a.kind == "delete"]
    if deletes:
        for topic, fut in admin.delete_topics(deletes, operation_timeout=30).items():
            _result(fut, f"deleting {topic}")
            done.append(f"deleted {topic}")
    return done
