"""Scenario ``router-kill``: ``kill -9`` of one of two routers in a group.

The other router gets the dead one's partitions once the group coordinator notices (the session
timeout, 15 s) and resumes from the offsets the dead one committed in its transactions. What the
dead router had produced in its open transaction stays invisible to read_committed readers and
blocks their partitions until the taker fences the dead instance's transactional ids on takeover
(route/takeover.py), the broker aborts it (the router's ``transaction.timeout.ms``, 20 s) or a
restart of the same instance fences it; ``restart=True`` restarts it the way a Kubernetes
StatefulSet does (same instance id) and measures that instead.
"""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.dr import processes
from cdcrouter.dr.drill import DrillContext
from cdcrouter.errors import CdcrouterError


class RouterKill:
    name = "router-kill"

    def __init__(self, restart: bool = False, **_: object) -> None:
        self.restart = restart
        self.description = "kill -9 of one router of two in a group" + (
            ", restarted with its instance id" if restart else "; the other takes over"
        )
        self.victim: str | None = None

    def prepare(self, ctx: DrillContext) -> None:
        ctx.run.create_topics_and_schemas(ctx.conns)
        ctx.start_capture()
        ctx.start_router("router-1")
        ctx.start_router("router-2")
        ctx.start_view()
        ctx.step("started capture, router-1, router-2 (one group) and the consumer app")
        _await_members(ctx, ctx.run.router_group, 2, timeout_s=90)
        ctx.step("both routers own partitions of the raw topic")

    def surviving(self, ctx: DrillContext) -> Connections:
        return ctx.conns

    def inject(self, ctx: DrillContext) -> None:
        m = ctx.procs.get("router-1")
        assert m is not None
        processes.kill(m)
        self.victim = m.name
        ctx.step(f"kill -9 {m.name} (pid {m.pid})")

    def recover(self, ctx: DrillContext) -> float | None:
        if not self.restart:
            return None
        m = ctx.procs.get("router-1")
        assert m is not None
        began = time.monotonic()
        ctx.procs.relaunch(m, m.region, _env_of(ctx))
        ctx.step("router-1 restarted with its instance id (fences its dead predecessor's transaction)")
        return time.monotonic() - began

    def cleanup(self, ctx: DrillContext) -> None:
        pass


def _env_of(ctx: DrillContext) -> dict[str, str]:
    from cdcrouter.dr.processes import region_env

    return region_env(ctx.conns)


def _await_members(ctx: DrillContext, group: str, count: int, timeout_s: float) -> None:
    """Until ``group`` has ``count`` members that each own partitions."""
    admin = AdminClient(ctx.conns.kafka.to_librdkafka())
    deadline = time.monotonic() + timeout_s
    while True:
        ctx.check_processes()
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
            owners = [m for m in desc.members if m.assignment and m.assignment.topic_partitions]
            if len(owners) >= count:
                return
        except Exception:  # the group does not exist yet
            pass
        if time.monotonic() > deadline:
            raise CdcrouterError(
                f"the routers of group {group} did not both get partitions within {timeout_s:.0f} s",
                hint=f"see their logs in {ctx.procs.directory / 'logs'}",
            )
        time.sleep(0.5)
