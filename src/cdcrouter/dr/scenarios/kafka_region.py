"""Scenario ``kafka-region``: the Kafka cluster of region A killed (``kill -9`` of its broker), the
pipeline failed over to region B with ``cdcrouter dr failover``.

Region A is a broker of the drill's own (its own state directory and free ports: killing it
touches nothing else); region B is the stack's Kafka (``conns``), the one that survives. MirrorMaker 2
mirrors the drill's topics and consumer groups from A to B. Capture, two routers and the SDK consumer
run against A until the broker dies; the failover (with ``--force``: region A cannot tell how far B
is behind) stops them, translates the groups' offsets from MM2's checkpoints and starts them
against B. The verdict is read from B: every committed row once in the consumer's view, every change
in the filtered topics (a few repeated uuids are expected: the translation is conservative).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from cdcrouter.config import Connections
from cdcrouter.dr.drill import DrillContext
from cdcrouter.dr.pipeline import DrillPipeline
from cdcrouter.errors import DrError
from cdcrouter.stack import process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KafkaRegionLoss:
    name = "kafka-region"
    description = "kill -9 of region A's Kafka broker, then cdcrouter dr failover --to b --force"

    def __init__(self, routers: int = 2, **_: object) -> None:
        self.routers = routers
        self.scratch: Path | None = None
        self.region_a: Any = None  # cdcrouter.stack.manager.Stack of the drill's own broker
        self.mirror: Any = None  # cdcrouter.dr.mirror.MirrorMaker
        self.region_b: Connections | None = None
        self.result: Any = None  # cdcrouter.dr.failover.FailoverResult

    def pipeline_yaml(self, run: DrillPipeline) -> str:
        """Capture confirms the slot only up to what region b holds (``dr.confirm_after_mirror``)."""
        from cdcrouter.capture.pipeline import Pipeline

        if "dr" not in Pipeline.model_fields:  # a build without the mirror gate: the drill shows the gap
            return ""
        return f"dr: {{confirm_after_mirror: true, region: b, source_alias: {run.name}-a}}\n"

    def prepare(self, ctx: DrillContext) -> None:
        from cdcrouter.dr.mirror import MirrorMaker, MirrorSpec, pipeline_topics
        from cdcrouter.stack.manager import Stack

        self.region_b = ctx.conns
        self.scratch = Path(tempfile.mkdtemp(prefix=f"cdcrouter-{ctx.run.name}-a-"))
        self.region_a = Stack(
            self.scratch / "state", ports={"kafka": _free_port(), "kafka-controller": _free_port()}
        )
        self.region_a.up(["kafka"])
        a = ctx.conns.model_copy(update={"kafka": self.region_a.connections().kafka})
        ctx.step(f"region a: a broker of the drill's own at {a.kafka.bootstrap_servers}")
        ctx.conns, ctx.region = a, "a"  # the pipeline starts in region a
        # where capture's mirror gate finds region b (dr.confirm_after_mirror)
        ctx.extra_env["CDCROUTER_REGION_B__KAFKA__BOOTSTRAP_SERVERS"] = self.region_b.kafka.bootstrap_servers
        for conns in (a, self.region_b):
            ctx.run.create_topics_and_schemas(conns)
        spec = MirrorSpec(
            source=a.kafka,
            target=self.region_b.kafka,
            topics=pipeline_topics(ctx.run.raw_topic, ctx.run.filtered_topics),
            groups=(f"{ctx.run.name}-.*",),
            source_alias=f"{ctx.run.name}-a",
            target_alias=f"{ctx.run.name}-b",
            rest_port=_free_port(),
        )
        self.mirror = MirrorMaker(spec, self.scratch / "mirror-state", name="mirror")
        # a loaded 2-core machine took over 180 s; a status topic too new to read is waited out inside
        self.mirror.start(timeout_s=300.0)
        ctx.step(f"MirrorMaker 2 mirrors {len(spec.topics)} topics and the drill's groups a -> b")
        ctx.start_capture()
        for i in range(1, self.routers + 1):
            ctx.start_router(f"router-{i}")
        ctx.start_view()
        ctx.step(f"capture, {self.routers} router(s) and the consumer app run against region a")

    def surviving(self, ctx: DrillContext) -> Connections:
        assert self.region_b is not None
        return self.region_b

    def inject(self, ctx: DrillContext) -> None:
        from cdcrouter.dr.status import topic_lag

        with contextlib.suppress(Exception):  # a figure for the report, not a condition
            parts, _, _ = topic_lag(self.mirror.spec)
            behind = sum(p.behind_records for p in parts)
            oldest = max((p.behind_seconds for p in parts), default=0.0)
            ctx.step(f"mirror lag just before the failure: {behind} record(s), oldest {oldest:.1f} s")
        self._await_checkpoints(ctx)
        rec = self.region_a.running_record("kafka")
        if rec is None:
            raise DrError("region a's broker is not running", hint="see the drill's log")
        ctx.failed_at = time.time()
        process.stop(rec, sig=9, timeout=10)
        process.kill_leftovers(rec)
        ctx.step(f"kill -9 region a's broker (pid {rec.pid})")

    def _await_checkpoints(self, ctx: DrillContext, timeout_s: float = 60.0) -> None:
        """Until MM2 has a checkpoint for the routers' and the consumer's groups (steady state has
        them; without one a group in region b would start from the beginning)."""
        from cdcrouter.dr.status import checkpoints

        wanted = {ctx.run.router_group, ctx.run.view_group}
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):
                have = {g for g, _t, _p in checkpoints(self.mirror.spec)}
                if wanted <= have:
                    return
            if time.monotonic() > deadline:
                ctx.notes.append(f"MM2 had no checkpoint for every group after {timeout_s:.0f} s")
                return
            time.sleep(1.0)

    def recover(self, ctx: DrillContext) -> float | None:
        from cdcrouter.dr.failover import FailoverPlan, failover

        assert self.region_b is not None
        plan = FailoverPlan(
            source="a",
            target="b",
            source_conns=ctx.conns,
            target_conns=self.region_b,
            procs=ctx.procs,
            mirror=self.mirror,
            force=True,
            stop_grace_s=5.0,
            record=False,
            extra_env=ctx.extra_env,  # the processes started again keep the drill's variables
        )
        began = time.monotonic()
        self.result = failover(plan, say=lambda line: ctx.step(f"  dr failover: {line}"))
        took = time.monotonic() - began
        ctx.conns, ctx.region = self.region_b, "b"
        return took

    def cleanup(self, ctx: DrillContext) -> None:
        if self.mirror is not None:
            with contextlib.suppress(Exception):
                self.mirror.stop()
        if self.region_a is not None:
            with contextlib.suppress(Exception):
                self.region_a.down(["kafka"], purge=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
