"""``cdcrouter dr drill``: a failure injected while a steady workload runs, then every committed
change accounted for.

A drill builds its own pipeline (:mod:`cdcrouter.dr.pipeline`: table, slot, raw and filtered topics,
capture, routers and an SDK consumer as real processes), writes at a steady rate
(:mod:`cdcrouter.dr.workload`), and hands over to a :class:`Scenario`:

1. ``prepare``: start what the scenario needs (a second region, a second router...);
2. ``inject``: the failure itself (``kill -9`` of a broker, a router, the primary database);
3. ``recover``: what an operator would run (``cdcrouter dr failover``...), timed;

then it lets the workload run on, waits for the pipeline to drain, and checks the surviving
region's filtered topics and the consumer's view against the rows the database committed
(:mod:`cdcrouter.dr.verify`), with the recovery time from :mod:`cdcrouter.dr.rto`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cdcrouter.config import Connections
from cdcrouter.dr import processes
from cdcrouter.dr.pipeline import DrillPipeline
from cdcrouter.dr.processes import Managed, ProcessRegistry, region_env
from cdcrouter.dr.report import DrillReport, ViewVerdict, check_view
from cdcrouter.dr.rto import ArrivalTail
from cdcrouter.dr.verify import Verdict, read_events, verify
from cdcrouter.dr.view_app import read_view
from cdcrouter.dr.workload import SteadyWorkload, committed_rows
from cdcrouter.errors import CdcrouterError

log = logging.getLogger("cdcrouter.dr")

__all__ = ["DrillContext", "DrillOptions", "Scenario", "region_env", "run_drill"]


@dataclass
class DrillOptions:
    rate: float = 50.0  # changes/s written throughout
    before_s: float = 3.0  # steady state before the failure
    after_s: float = 5.0  # writing goes on this long after the recovery step returned
    settle_s: float = 120.0  # the longest wait for every committed change to arrive
    flow_timeout_s: float = 90.0  # the longest wait for the pipeline to deliver its first change
    workdir: Path | None = None
    name: str | None = None  # the run's name (topics, slot); default dr-<random>
    keep: bool = False  # leave the pipeline's processes, topics and slot behind for a look
    # the consumer app's session.timeout.ms (None: librdkafka's 45 s). A restarted app waits this
    # long for its killed predecessor to leave the group; tests set it shorter.
    view_session_timeout_ms: int | None = None


@dataclass
class DrillContext:
    """What a scenario works with. ``conns`` is where the pipeline starts (region ``region``)."""

    run: DrillPipeline
    conns: Connections
    opts: DrillOptions
    procs: ProcessRegistry
    say: Callable[[str], None]
    region: str = "a"
    started: float = field(default_factory=time.monotonic)
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workload: SteadyWorkload | None = None
    failed_at: float | None = None  # time.time() of the failure
    extra_env: dict[str, str] = field(default_factory=dict)  # more variables for every process started
    # which committed rows (by id) the check expects; None: all (a restore expects only the changes
    # after the backup's position)
    expects: Callable[[str], bool] | None = None
    tail: ArrivalTail | None = None  # a scenario's own tail (new topics after a restore), for the RTO

    def step(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s  {what}"
        self.steps.append(line)
        self.say(line)

    @property
    def pg_conninfo(self) -> str:
        """Where the workload writes (a database scenario may change ``conns.postgres``)."""
        return self.conns.postgres.conninfo()

    # ------------------------------------------------------------------ the pipeline's processes

    def start_capture(self, conns: Connections | None = None, region: str | None = None) -> Managed:
        conns = conns or self.conns
        argv = processes.cdcrouter_argv("capture", "run", "--pipeline", str(self.run.pipeline_file))
        env = {**self.extra_env, **region_env(conns)}
        return self.procs.launch("capture", "capture", argv, region or self.region, env)

    def start_router(self, name: str, conns: Connections | None = None, region: str | None = None) -> Managed:
        conns = conns or self.conns
        argv = processes.cdcrouter_argv(
            "run",
            "--filters", str(self.run.filters_file),
            "--pipeline", str(self.run.pipeline_file),
            "--group", self.run.router_group,
            "--instance-id", f"{self.run.name}-{name}",
            "--no-reload",
        )  # fmt: skip
        return self.procs.launch(name, "router", argv, region or self.region, region_env(conns))

    def start_view(self, conns: Connections | None = None, region: str | None = None) -> Managed:
        conns = conns or self.conns
        argv = [
            sys.executable, "-m", "cdcrouter.dr.view_app",
            "--topic", self.run.all_topic, "--group", self.run.view_group,
            "--schema", self.run.schema, "--table", self.run.view_table,
        ]  # fmt: skip
        if self.opts.view_session_timeout_ms is not None:
            argv += ["--session-timeout-ms", str(self.opts.view_session_timeout_ms)]
        return self.procs.launch("view", "consumer", argv, region or self.region, region_env(conns))

    def check_processes(self) -> None:
        """Fail early (with its log) when a pipeline process died on its own."""
        for m in self.procs.all():
            if not m.alive():
                tail = "\n    ".join(processes.log_tail(m))
                raise CdcrouterError(
                    f"the drill's {m.name} process ({m.role}) exited on its own:\n    {tail}",
                    hint=f"its whole log: {m.log_file}",
                )

    def stop_all(self) -> None:
        for m in reversed(self.procs.all()):
            processes.stop(m, grace_s=10)


class Scenario(Protocol):
    """One failure and its recovery (see the module docstring)."""

    name: str
    description: str

    def prepare(self, ctx: DrillContext) -> None:
        """Create topics and start the pipeline's processes (and anything else the scenario needs).

        It may point ``ctx.conns`` at the region the pipeline starts in. A scenario may also have a
        ``pipeline_yaml(run) -> str`` method: more top-level YAML for the drill's pipeline.yaml.
        """

    def surviving(self, ctx: DrillContext) -> Connections:
        """Where the drill reads its result: the surviving region's Kafka and the database."""
        ...

    def inject(self, ctx: DrillContext) -> None:
        """The failure. Sets ``ctx.failed_at`` (``time.time()``) at the moment of the failure when
        it does something first (else the drill takes the time it was called)."""

    def recover(self, ctx: DrillContext) -> float | None:
        """The recovery an operator runs; returns how long the failover command took (None: none)."""
        ...

    def cleanup(self, ctx: DrillContext) -> None:
        """Stop what ``prepare`` started beyond the pipeline's processes."""


def run_drill(
    scenario: Scenario,
    conns: Connections,
    opts: DrillOptions | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> DrillReport:
    """Run one drill end to end and return its report (never raises for a failed drill: the
    report says ``ok: false`` with the error)."""
    opts = opts or DrillOptions()
    name = opts.name or f"dr-{uuid.uuid4().hex[:8]}"
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix=f"cdcrouter-{name}-"))
    run = DrillPipeline(name, workdir)
    ctx = DrillContext(run, conns, opts, ProcessRegistry(workdir / "processes"), say)
    report = DrillReport(scenario.name, name, scenario.description, rate=opts.rate)
    tail: ArrivalTail | None = None
    try:
        run.write_files(getattr(scenario, "pipeline_yaml", lambda _run: "")(run))
        run.create_table(conns)
        ctx.step(f"pipeline {name}: table {run.schema}.{run.table}, topics {', '.join(run.filtered_topics)}")
        scenario.prepare(ctx)
        surviving = scenario.surviving(ctx)
        _await_slot(ctx)  # a change committed before capture created its slot would never be captured
        tail = ArrivalTail(surviving, run.filtered_topics, run.id_prefix).start()
        ctx.workload = SteadyWorkload(lambda: ctx.pg_conninfo, run.schema, run.table, name, opts.rate).start()
        _await_flow(ctx, tail)
        ctx.step(f"events flow end to end; steady state for {opts.before_s:g} s at {opts.rate:g} changes/s")
        time.sleep(opts.before_s)
        before = time.time()
        scenario.inject(ctx)  # it may set ctx.failed_at itself, right at the kill, after its own checks
        ctx.failed_at = ctx.failed_at or before
        ctx.step(f"failure injected: {scenario.description}")
        began = time.monotonic()
        report.failover_s = scenario.recover(ctx)
        ctx.step(f"recovery step done after {time.monotonic() - began:.1f} s")
        time.sleep(opts.after_s)
        wl = ctx.workload.stop()
        ctx.step(f"workload stopped: {len(wl.acked)} commits acknowledged, {len(wl.in_doubt)} in doubt")
        surviving = scenario.surviving(ctx)
        verdict, view = _settle(ctx, surviving)
        ctx.step(f"checked: {verdict.lost} lost, {verdict.duplicate_uuids} duplicate uuid(s)")
        report.verdict, report.view = verdict, view
        committed_at = {c.id: c.at for c in wl.acked} | {c.id: c.at for c in wl.in_doubt}
        report.recovery = (ctx.tail or tail).recovery(ctx.failed_at, committed_at)
        lost = {i for t in verdict.topics for i in t.lost}
        if lost:
            when = sorted(committed_at[i] - ctx.failed_at for i in lost if i in committed_at)
            if when:
                ctx.notes.append(
                    f"the {len(lost)} lost change(s) were committed between {when[0]:+.1f} s and "
                    f"{when[-1]:+.1f} s of the failure"
                )
    except CdcrouterError as exc:
        report.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        ctx.step(f"drill failed: {exc.message}")
    except Exception as exc:  # a library's own error (Kafka, PostgreSQL): the report says it, no traceback
        report.error = f"{type(exc).__name__}: {exc}"
        ctx.step(f"drill failed: {report.error}")
    finally:
        if ctx.workload is not None:
            wl = ctx.workload.stop()
            report.acked, report.in_doubt = len(wl.acked), len(wl.in_doubt)
            report.failed_writes, report.reconnects = wl.failed, wl.reconnects
            report.seconds = (wl.acked[-1].at - wl.acked[0].at) if len(wl.acked) > 1 else 0.0
        for t in (tail, ctx.tail):
            if t is not None:
                t.stop()
        if not opts.keep:
            ctx.stop_all()
            with contextlib.suppress(Exception):
                scenario.cleanup(ctx)
            with contextlib.suppress(Exception):
                run.drop_database_objects(ctx.pg_conninfo)
            with contextlib.suppress(Exception):
                _delete_topics(ctx.conns, run.name)
        else:
            ctx.notes.append(f"kept: processes in {ctx.procs.directory}, files in {workdir}")
        if not opts.keep and not report.ok:  # in the caller's workdir too (the tests' tmp_path)
            ctx.notes.append(f"the processes' logs are kept in {ctx.procs.directory / 'logs'}")
        elif not opts.keep and opts.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)  # its files and the processes' logs
        report.steps, report.notes = ctx.steps, ctx.notes
        report.load_average_end = os.getloadavg()
    return report


def _delete_topics(conns: Connections, name: str) -> None:
    """The drill's topics (and MM2's for its aliases), so a drill leaves no topics behind."""
    from confluent_kafka.admin import AdminClient

    from cdcrouter.topics import delete_topics

    topics = AdminClient(conns.kafka.to_librdkafka()).list_topics(timeout=15).topics
    mine = [t for t in topics if t.startswith(f"{name}-") or f".{name}-" in t]
    if mine:
        delete_topics(conns, mine)


def _await_slot(ctx: DrillContext) -> None:
    import psycopg

    deadline = time.monotonic() + ctx.opts.flow_timeout_s
    while True:
        ctx.check_processes()
        with psycopg.connect(ctx.pg_conninfo, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (ctx.run.slot,)
            ).fetchone()
        if row is not None and row[0]:
            return
        if time.monotonic() > deadline:
            raise CdcrouterError(
                f"capture did not open its slot {ctx.run.slot} within {ctx.opts.flow_timeout_s:.0f} s",
                hint=f"see its log in {ctx.procs.directory / 'logs'}",
            )
        time.sleep(0.2)


def _await_flow(ctx: DrillContext, tail: ArrivalTail) -> None:
    deadline = time.monotonic() + ctx.opts.flow_timeout_s
    while not tail.arrivals:
        ctx.check_processes()
        if tail.error is not None:
            raise CdcrouterError(
                f"the drill's reader failed: {tail.error}", hint="check the surviving region"
            )
        if time.monotonic() > deadline:
            raise CdcrouterError(
                f"no change reached {ctx.run.all_topic} within {ctx.opts.flow_timeout_s:.0f} s of writing",
                hint=f"the processes' logs are in {ctx.procs.directory / 'logs'}",
            )
        time.sleep(0.1)


def _settle(ctx: DrillContext, surviving: Connections) -> tuple[Verdict, ViewVerdict]:
    """Check until nothing is missing (or ``settle_s`` is up): the pipeline drains its backlog."""
    assert ctx.workload is not None
    run = ctx.run
    wl = ctx.workload.log
    expects = ctx.expects or (lambda _id: True)
    acked = {c.id: c.val for c in wl.acked if expects(c.id)}
    in_doubt = {c.id: c.val for c in wl.in_doubt if expects(c.id)}
    deadline = time.monotonic() + ctx.opts.settle_s
    while True:
        rows = committed_rows(surviving.postgres.conninfo(), run.schema, run.table)
        rows = {i: v for i, v in rows.items() if expects(i)}
        events = read_events(surviving, run.filtered_topics, run.id_prefix)
        verdict = verify(rows, acked, in_doubt, events, run.expected_topics())
        try:
            view = check_view(rows, read_view(surviving.postgres.conninfo(), run.schema, run.view_table))
        except Exception:  # the view table is not there yet
            view = check_view(rows, {})
        if (verdict.lost == 0 and not view.missing) or time.monotonic() > deadline:
            return verdict, view
        time.sleep(1.0)
