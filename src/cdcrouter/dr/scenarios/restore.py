"""Scenario ``restore``: the pipeline's Kafka data and registry subjects lost, restored from a backup.

While the workload runs, ``dr backup`` is taken; writing goes on (those changes reach the old
topics, and the slot moves past the backup's position). Then capture, the router and the consumer
app are killed and everything the pipeline had in Kafka and the registry is deleted: its topics,
consumer groups and subjects (what an empty, fresh cluster looks like to this pipeline, on a shared
stack). ``dr restore`` brings the backup back, and capture, the router and the app start again.

The check expects every change after the backup's position once in the new filtered topics and
every committed row in the consumer's view (which lives in PostgreSQL and survived). Which rows
are after the position: the workload writes one change per transaction in a single sequence, so
they are a suffix of its sequence numbers; the suffix starts at the first change in the new raw
topic, and never later than the first change acknowledged after ``dr backup`` returned (anything
from there on that is missing is counted lost).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient

from cdcrouter.config import Connections
from cdcrouter.dr import processes
from cdcrouter.dr.drill import DrillContext, region_env
from cdcrouter.dr.rto import ArrivalTail
from cdcrouter.dr.verify import read_events


def sequence_number(row_id: str) -> int:
    """The workload's ids end in ``-<n:08d>``."""
    return int(row_id.rsplit("-", 1)[1])


class RestoreFromBackup:
    name = "restore"
    description = "the pipeline's topics, groups and subjects lost; dr restore from a backup taken under load"

    def __init__(self, after_backup_s: float = 2.0, **_: object) -> None:
        self.after_backup_s = after_backup_s
        self.backup: Path | None = None
        self.first_after_backup: int | None = None
        self._first_new: int | None = None

    def prepare(self, ctx: DrillContext) -> None:
        ctx.run.create_topics_and_schemas(ctx.conns)
        ctx.start_capture()
        ctx.start_router("router-1")
        ctx.start_view()
        ctx.step("started capture, router-1 and the consumer app")

    def surviving(self, ctx: DrillContext) -> Connections:
        return ctx.conns

    def _groups(self, ctx: DrillContext) -> list[str]:
        return [ctx.run.router_group, ctx.run.view_group]

    def inject(self, ctx: DrillContext) -> None:
        from cdcrouter.dr.backup import take_backup

        run = ctx.run
        assert ctx.workload is not None
        self.backup = run.workdir / "backup.tar.gz"
        began = time.monotonic()
        with tempfile.TemporaryDirectory() as no_deploys:
            take_backup(
                ctx.conns, run.pipeline_file, run.filters_file, self.backup, state_dir=Path(no_deploys),
                groups=self._groups(ctx), say=lambda line: ctx.step(f"  backup: {line}"),
            )  # fmt: skip
        acked = ctx.workload.log.acked
        self.first_after_backup = (acked[-1].n if acked else 0) + 1
        ctx.step(f"dr backup took {time.monotonic() - began:.1f} s; writing goes on")
        time.sleep(self.after_backup_s)
        for m in ctx.procs.all():
            processes.kill(m)
        _destroy(ctx.conns, run.name, self._groups(ctx), [run.raw_topic, *run.filtered_topics])
        # the failure's moment: the cluster is empty now (deleting the groups waits out the killed
        # members' session timeout, which a really lost cluster does not)
        ctx.failed_at = time.time()
        ctx.step("kill -9 capture, router, app; the pipeline's topics, groups and subjects deleted")
        ctx.expects = self._expects(ctx)

    def recover(self, ctx: DrillContext) -> float | None:
        from cdcrouter.dr.restore import restore

        assert self.backup is not None
        began = time.monotonic()
        restore(ctx.conns, self.backup, say=lambda line: ctx.step(f"  restore: {line}"))
        ctx.tail = ArrivalTail(ctx.conns, ctx.run.filtered_topics, ctx.run.id_prefix).start()
        env = region_env(ctx.conns)
        for name in ("capture", "router-1", "view"):
            m = ctx.procs.get(name)
            assert m is not None
            ctx.procs.relaunch(m, m.region, env)
        ctx.step("restarted capture, router-1 and the consumer app")
        return time.monotonic() - began

    def _expects(self, ctx: DrillContext):  # type: ignore[no-untyped-def]
        """Rows from the first change after the backup's position on (see the module docstring)."""

        def expects(row_id: str) -> bool:
            if self._first_new is None:
                events = read_events(ctx.conns, [ctx.run.raw_topic], ctx.run.id_prefix)
                if events:
                    self._first_new = min(sequence_number(e.entity_id) for e in events)
                    ctx.notes.append(
                        f"first change in the new raw topic: #{self._first_new}; first acknowledged "
                        f"after dr backup returned: #{self.first_after_backup}"
                    )
            assert self.first_after_backup is not None
            start = min(self._first_new or self.first_after_backup, self.first_after_backup)
            return sequence_number(row_id) >= start

        return expects

    def cleanup(self, ctx: DrillContext) -> None:
        import psycopg

        from cdcrouter.dr.backup import backup_slot_name

        with contextlib.suppress(Exception), psycopg.connect(ctx.pg_conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (backup_slot_name(ctx.run.slot),),
            )


def _destroy(conns: Connections, name: str, groups: list[str], subject_topics: list[str]) -> None:
    """Everything the pipeline had in Kafka and the registry, as a lost cluster takes it."""
    admin = AdminClient(conns.kafka.to_librdkafka())
    mine = [t for t in admin.list_topics(timeout=15).topics if t.startswith(f"{name}-")]
    if mine:
        for fut in admin.delete_topics(mine, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # a killed member leaves its group only at its session timeout
        futs = admin.delete_consumer_groups(groups, request_timeout=30)
        left = []
        for g, fut in futs.items():
            try:
                fut.result(timeout=60)
            except Exception as exc:
                if "NOT_EMPTY" in str(exc) and time.monotonic() < deadline:
                    left.append(g)
        if not left:
            break
        groups = left
        time.sleep(1.0)
    for topic in subject_topics:
        for q in ("", "?permanent=true"):
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{conns.registry.url}/subjects/{topic}-value{q}", timeout=30)
    while set(mine) & set(admin.list_topics(timeout=15).topics) and time.monotonic() < deadline:
        time.sleep(0.5)
