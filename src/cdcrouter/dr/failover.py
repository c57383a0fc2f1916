"""``cdcrouter dr failover --to REGION`` and ``dr failback``: move the pipeline to another Kafka region.

The steps, each printed as it is done:

1. **stop** the pipeline's processes in the region being left (consumers, routers, capture:
   SIGTERM, so each finishes its open transaction; SIGKILL after a grace period when its Kafka is
   gone), so nothing writes there any more and the last group offsets are committed;
2. **check the mirror**: with the old region reachable, wait (bounded) until MirrorMaker 2 has
   copied every committed record, and refuse with the gap per partition if it has not, unless
   ``--force``; with the old region unreachable the gap cannot be known: say what the target has,
   and refuse unless ``--force``. A change the mirror had not copied is not lost for capture: the
   replication slot is confirmed only for what the mirror has (``cdcrouter dr mirror``), so capture
   in the new region reads it again; routers and consumers re-read a little (conservative
   translation) and deduplicate by ``eventHeader.uuid``;
3. **stop the mirror** of the old region, so a region coming back with stale data writes nothing;
4. **translate offsets**: each consumer group's newest MM2 checkpoint becomes its committed offset
   in the new region (only forward, only for groups with no members there);
5. **start** capture, then routers, then consumers, pointed at the new region, and check they run;
6. **record** the active region (``<state-dir>/dr/active-region.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.dr import processes
from cdcrouter.dr.processes import ProcessRegistry
from cdcrouter.errors import DrError

HOME_REGION = "a"


def dr_dir(state_dir: Path | None = None) -> Path:
    from cdcrouter.config.connections import DEFAULT_STATE_DIR

    return Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR)) / "dr"


def default_registry(state_dir: Path | None = None) -> ProcessRegistry:
    """Where ``cdcrouter dr start`` records the pipeline's processes."""
    return ProcessRegistry(dr_dir(state_dir) / "processes")


def active_region(state_dir: Path | None = None) -> dict[str, Any]:
    """``{"region": ..., "since": ..., "previous": ...}``; region ``a`` when nothing was recorded."""
    path = dr_dir(state_dir) / "active-region.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"region": HOME_REGION, "since": None, "previous": None}


def record_active(region: str, previous: str, state_dir: Path | None = None) -> None:
    path = dr_dir(state_dir) / "active-region.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"region": region, "since": time.time(), "previous": previous}))
    tmp.replace(path)


@dataclass
class FailoverPlan:
    """Everything one failover needs; the CLI builds it from the configuration, a drill by hand."""

    source: str  # the region being left
    target: str
    source_conns: Connections
    target_conns: Connections
    procs: ProcessRegistry
    mirror: Any = None  # cdcrouter.dr.mirror.MirrorMaker of source -> target (None: no mirror known)
    force: bool = False
    catch_up_s: float = 30.0  # how long to wait for the mirror to copy the last records
    stop_grace_s: float = 15.0
    state_dir: Path | None = None
    record: bool = True  # write active-region.json (a drill keeps its own)
    extra_env: dict[str, str] = field(default_factory=dict)  # more variables for every restarted process


@dataclass
class FailoverResult:
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    gap: dict[str, int] | None = None  # records not mirrored, per partition (None: unknown)
    translated: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> "topic/p" -> offset


def failover(plan: FailoverPlan, say: Callable[[str], None] = lambda line: None) -> FailoverResult:
    """Run the steps of the module docstring; raises :class:`DrError` when one refuses or fails.

    A refusal comes before anything is stopped when it can (no mirror known, the old region
    unreachable without ``--force``); when the mirror has not caught up after the stop, the
    processes are started again where they were.
    """
    began = time.monotonic()
    result = FailoverResult()

    def step(line: str) -> None:
        result.steps.append(line)
        say(line)

    step(
        f"failover {plan.source} -> {plan.target}: Kafka {plan.source_conns.kafka.bootstrap_servers} -> "
        f"{plan.target_conns.kafka.bootstrap_servers}"
    )
    reachable = _reachable(plan.source_conns)
    if plan.mirror is None:
        msg = f"no mirror {plan.source}->{plan.target} is known: how far {plan.target} is behind is unknown"
        if not plan.force:
            raise DrError(msg, hint="start one (cdcrouter dr mirror start), or pass --force to move anyway")
        step(f"mirror: {msg}; going on (--force)")
        _stop_processes(plan, step)
    elif not reachable:
        result.gap = _unknown_gap(plan, step)  # refuses without --force, before stopping anything
        with ThreadPoolExecutor(1) as pool:  # the mirror and the processes wait out their grace at once
            stopping = pool.submit(plan.mirror.stop, 10.0)
            _stop_processes(plan, step)
            was = stopping.result()
            step(f"mirror {plan.source}->{plan.target}: {'stopped' if was else 'was not running'}")
    else:
        _stop_processes(plan, step)
        try:
            result.gap = _await_mirror(plan, step)
        except DrError:
            _restart_in_source(plan, step)
            raise
        was = plan.mirror.stop(10.0)  # SIGTERM first: it commits or aborts its open transaction
        step(f"mirror {plan.source}->{plan.target}: {'stopped' if was else 'was not running'}")
    _point_capture(plan, step)
    result.translated = _translate_offsets(plan, step)
    _start_processes(plan, step)
    if plan.record:
        record_active(plan.target, plan.source, plan.state_dir)
        step(f"active region is now {plan.target} ({dr_dir(plan.state_dir) / 'active-region.json'})")
    result.seconds = time.monotonic() - began
    step(f"failover done in {result.seconds:.1f} s")
    return result


# ---------------------------------------------------------------------- 1. stop


def _stop_processes(plan: FailoverPlan, step: Callable[[str], None]) -> None:
    running = [m for m in plan.procs.all() if m.region == plan.source]
    if not running:
        step(f"stop: no recorded process runs in region {plan.source} ({plan.procs.directory})")
    # all at once: each finishes its own open transaction (a consumer its last commit) on SIGTERM
    outcome = processes.stop_all(running, grace_s=plan.stop_grace_s)
    for m in reversed(running):
        step(f"stop {m.role} {m.name} (pid {m.pid}): {outcome[m.name]}")


# ---------------------------------------------------------------------- 2. mirror


def _reachable(conns: Connections, timeout_s: float = 3.0) -> bool:
    conf = {**conns.kafka.to_librdkafka(), "log_level": 0}
    conf.pop("logger", None)
    try:
        AdminClient(conf).list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


def _unknown_gap(plan: FailoverPlan, step: Callable[[str], None]) -> None:
    """The old region is unreachable: say what the target has; refuse unless ``--force``."""
    from cdcrouter.dr.status import mirrored_offsets

    mirrored = mirrored_offsets(plan.mirror.spec)
    through = ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(mirrored.items())) or "nothing yet"
    msg = (
        f"region {plan.source} is unreachable: how far {plan.target} is behind cannot be known "
        f"(the mirror copied up to offsets {through})"
    )
    if not plan.force:
        raise DrError(
            msg,
            hint="capture re-reads from its replication slot what the mirror had not copied; pass "
            "--force to fail over (routers and consumers may re-read a few events: deduplicate by uuid)",
        )
    step(f"mirror: {msg}; going on (--force)")


def _await_mirror(plan: FailoverPlan, step: Callable[[str], None]) -> dict[str, int]:
    """Wait (bounded) until the target has every committed record; the gap per partition."""
    from cdcrouter.dr.status import topic_lag

    deadline = time.monotonic() + plan.catch_up_s
    while True:
        parts, _, missing = topic_lag(plan.mirror.spec)
        gap = {f"{p.topic}/{p.partition}": p.behind_records for p in parts if p.behind_records}
        if not gap and not missing:
            step(f"mirror: {plan.target} has every committed record of {len(parts)} partition(s)")
            return {}
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    where = ", ".join(f"{k}: {n} record(s) behind" for k, n in sorted(gap.items()))
    if missing:
        where += f"; not in {plan.target} at all: {', '.join(missing)}"
    msg = f"the mirror {plan.source}->{plan.target} has not caught up after {plan.catch_up_s:.0f} s: {where}"
    if not plan.force:
        raise DrError(msg, hint="wait (cdcrouter dr status), or pass --force to fail over with this gap")
    step(f"mirror: {msg}; going on (--force)")
    return gap


def _restart_in_source(plan: FailoverPlan, step: Callable[[str], None]) -> None:
    from cdcrouter.dr.processes import region_env

    env = {**plan.extra_env, **region_env(plan.source_conns)}
    for m in plan.procs.all():
        if m.region == plan.source and not m.alive():
            new = plan.procs.relaunch(m, plan.source, env)
            step(f"refused: {m.role} {m.name} started again in {plan.source} (pid {new.pid})")


# ---------------------------------------------------------------------- 4. capture and offsets


def _point_capture(plan: FailoverPlan, step: Callable[[str], None]) -> None:
    from cdcrouter.dr.capture_position import pipeline_of, rewind_to_slot

    for m in plan.procs.all():
        if m.role != "capture" or m.region != plan.source:
            continue
        pipeline = pipeline_of(m)
        step(rewind_to_slot(pipeline, plan.target_conns).describe())
        gate = getattr(pipeline, "dr", None)
        if gate is not None and gate.confirm_after_mirror and gate.region == plan.target:
            step(
                f"warning: {pipeline.source_file} has dr.confirm_after_mirror with dr.region: {plan.target}, "
                "the region capture now writes to: the gate holds the slot back (PostgreSQL keeps the WAL) "
                f"until it is pointed elsewhere: start a mirror {plan.target} -> {plan.source}, set "
                f"dr.region: {plan.source} (or turn the gate off) and restart capture"
            )


def _translate_offsets(plan: FailoverPlan, step: Callable[[str], None]) -> dict[str, dict[str, int]]:
    if plan.mirror is None:
        step("offsets: no mirror, no checkpoints: groups start per auto.offset.reset in the new region")
        return {}
    from cdcrouter.dr.status import checkpoints

    spec = plan.mirror.spec
    per_group: dict[str, dict[tuple[str, int], int]] = {}
    for (group, topic, part), (_up, down) in checkpoints(spec).items():
        per_group.setdefault(group, {})[(topic, part)] = down
    admin = AdminClient(plan.target_conns.kafka.to_librdkafka())
    out: dict[str, dict[str, int]] = {}
    for group, wanted in sorted(per_group.items()):
        current = _committed(admin, group)
        if _has_members(admin, group):
            step(f"offsets: group {group} has members in {plan.target}: left as it is")
            continue
        moves = {tp: off for tp, off in wanted.items() if off > current.get(tp, -1)}
        if moves:
            tps = [TopicPartition(t, p, off) for (t, p), off in sorted(moves.items())]
            fut = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group]
            try:
                fut.result(timeout=15)
            except KafkaException as exc:
                raise DrError(
                    f"cannot set the translated offsets of group {group} in {plan.target}: "
                    f"{exc.args[0].str()}",
                    hint="is the group still active there? stop its members and run the failover again",
                ) from exc
        final = {**current, **moves}
        out[group] = {f"{t}/{p}": off for (t, p), off in sorted(final.items()) if (t, p) in wanted}
        shown = ", ".join(f"{t}/{p}={off}" for (t, p), off in sorted(wanted.items()))
        how = f"set to the translated offsets {shown}" if moves else f"already at {shown} (synced by MM2)"
        step(f"offsets: group {group} {how}")
    if not per_group:
        step("offsets: no checkpoint yet: groups start per auto.offset.reset (re-read, deduplicated by uuid)")
    return out


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=15)
    out: dict[tuple[str, int], int] = {}
    for fut in futs.values():
        with contextlib.suppress(KafkaException):
            for tp in fut.result().topic_partitions or []:
                if tp.offset >= 0:
                    out[(tp.topic, tp.partition)] = tp.offset
    return out


def _has_members(admin: AdminClient, group: str) -> bool:
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result()
    except KafkaException:
        return False
    return bool(desc.members)


# ---------------------------------------------------------------------- 5. start


def _start_processes(plan: FailoverPlan, step: Callable[[str], None]) -> None:
    from cdcrouter.dr.processes import region_env

    env = {**plan.extra_env, **region_env(plan.target_conns)}
    todo = [m for m in plan.procs.all() if m.region == plan.source]
    if not todo:
        step(f"start: nothing recorded to start in {plan.target}")
        return
    started = []
    for m in todo:  # capture, routers, consumers
        new = plan.procs.relaunch(m, plan.target, env)
        started.append(new)
        step(f"start {m.role} {m.name} in {plan.target} (pid {new.pid})")
    time.sleep(2.0)
    dead = [m for m in started if not m.alive()]
    if dead:
        tails = "\n".join(f"  {m.name}: " + " | ".join(processes.log_tail(m, 5)) for m in dead)
        raise DrError(
            f"{', '.join(m.name for m in dead)} exited right after starting in {plan.target}:\n{tails}",
            hint="see their logs; cdcrouter dr ps lists them",
        )
    step(f"start: {len(started)} process(es) run in {plan.target}")
