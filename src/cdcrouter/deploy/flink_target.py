"""Deploying the routing statement set to a self-managed Flink through the SQL Gateway.

Identity comes from the service: the job's name is ``cdcrouter:<name>:<sql-hash-12>``, so a
running deployment and the SQL it runs are read from the JobManager's job list.

An update never replays history and never doubles an event:

1. the new script's tables are created in a fresh gateway session and its statement set is
   EXPLAINed, so a broken update fails before the running job is touched;
2. the running job is stopped with a savepoint (its Kafka transactions commit, its source offsets
   are committed to the consumer group ``cdcrouter-<name>``);
3. the new statement set starts with ``execution.state-recovery.path`` = that savepoint. Operators
   the planner maps to the same uid (the source, when the topology allows) take their state from
   it; the rest is dropped (``ignore-unclaimed-state``) and the source then starts from the
   group's committed offsets (``scan.startup.mode`` = ``group-offsets``), never from the
   beginning.

Sinks are switched to exactly-once at deploy time (``ALTER TABLE ... SET``): Kafka transactions
with a per-deployment ``sink.transactional-id-prefix``, committed on each checkpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdcrouter.deploy import savepoint as sp
from cdcrouter.deploy import state
from cdcrouter.deploy.plan import Action, Plan, Script
from cdcrouter.deploy.sql_gateway import FlinkRest, Job, SqlGateway
from cdcrouter.errors import DeployError

TARGET = "flink"
LIVE = ("INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING")


def job_name(name: str, sql_hash: str) -> str:
    return f"cdcrouter:{name}:{sql_hash[:12]}"


def parse_job_name(job: str) -> tuple[str, str] | None:
    parts = job.split(":")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "cdcrouter" else None


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass
class FlinkOptions:
    """Deploy-time settings that are not part of the generated SQL."""

    checkpoint_interval: str = "5s"
    savepoint_dir: str | None = None  # None: the cluster's execution.checkpointing.savepoint-dir
    exactly_once: bool = True
    transaction_timeout_ms: int = 900_000  # the broker's transaction.max.timeout.ms default
    raw_topic: str | None = None  # read this topic instead of the one in the generated DDL
    # Connection options (SASL, registry auth) set on every table at deploy time. They may hold
    # secrets: sent to the gateway only, never hashed, planned, printed or stored.
    connection_options: dict[str, str] = field(default_factory=dict)


class FlinkDeployment:
    """Plan/apply/status/stop/resume/delete for one named deployment on one Flink cluster."""

    def __init__(
        self,
        name: str,
        gateway_url: str,
        rest_url: str,
        state_dir: Path,
        render: Callable[[str], str],
        options: FlinkOptions | None = None,
    ) -> None:
        if ":" in name or not name:
            raise DeployError(
                f"deployment name {name!r} is not valid", hint="use letters, digits, '-', '_', '.'"
            )
        self.name = name
        self.gateway = SqlGateway(gateway_url)
        self.rest = FlinkRest(rest_url)
        self.state_dir = state_dir
        self.render = render
        self.options = options or FlinkOptions()

    @property
    def group_id(self) -> str:
        return f"cdcrouter-{self.name}"

    def _extra(self) -> dict[str, Any]:
        o = self.options
        return {
            "exactly_once": o.exactly_once,
            "checkpoint_interval": o.checkpoint_interval,
            "raw": o.raw_topic,
        }

    # -- reading the service ------------------------------------------------------------------

    def live_jobs(self) -> list[Job]:
        return [
            j
            for j in self.rest.jobs()
            if j.state in LIVE and (parse_job_name(j.name) or ("", ""))[0] == self.name
        ]

    def current(self) -> Job | None:
        jobs = self.live_jobs()
        if len(jobs) > 1:
            ids = ", ".join(j.id for j in jobs)
            raise DeployError(
                f"{len(jobs)} Flink jobs run deployment {self.name!r}: {ids}",
                hint="cancel the extra ones (Flink UI, or `cdcrouter deploy delete`), then deploy again",
            )
        return jobs[0] if jobs else None

    # -- plan and apply -----------------------------------------------------------------------

    def plan(self, script_text: str) -> tuple[Plan, Script]:
        script = Script.parse(script_text)
        digest = script.digest(self._extra())
        plan = Plan(TARGET, self.name, digest)
        plan.facts = {"sources": script.sources, "sinks": script.sinks, "group_id": self.group_id}
        job = self.current()
        saved = state.load(self.state_dir, TARGET, self.name) or {}
        subject = f"job {job_name(self.name, digest)}"
        if job is not None:
            _, old_hash = parse_job_name(job.name) or ("", "")
            if old_hash == digest[:12]:
                plan.actions.append(Action("unchanged", f"job {job.name}", f"id {job.id}, {job.state}"))
            else:
                plan.actions.append(
                    Action(
                        "replace",
                        subject,
                        f"stop job {job.id} ({old_hash}) with a savepoint, start from it: "
                        "offsets and sink transactions carry over",
                    )
                )
        elif saved.get("savepoint"):
            plan.actions.append(Action("create", subject, f"resume from savepoint {saved['savepoint']}"))
        else:
            plan.actions.append(
                Action("create", subject, f"{len(script.sinks)} sinks; source group {self.group_id}")
            )
        return plan, script

    def _prepare_session(self, script: Script) -> Any:
        """A session with the script's SETs, tables and deploy-time table options applied."""
        session = self.gateway.open_session(name=f"cdcrouter-{self.name}")
        try:
            for key, value in script.sets:
                session.run(self.render(f"SET {_quote(key)} = {_quote(value)}"))
            for ddl in script.ddl:
                session.run(self.render(ddl))
            if self.options.connection_options:
                opts = ", ".join(
                    f"{_quote(k)} = {_quote(v)}" for k, v in self.options.connection_options.items()
                )
                for table in script.tables:
                    session.run(f"ALTER TABLE `{table}` SET ({opts})")
            for table in script.sources:
                topic = f"'topic' = {_quote(self.options.raw_topic)}, " if self.options.raw_topic else ""
                session.run(
                    f"ALTER TABLE `{table}` SET ({topic}'properties.group.id' = {_quote(self.group_id)}, "
                    "'scan.startup.mode' = 'group-offsets', 'properties.auto.offset.reset' = 'earliest')"
                )
            if not self.options.exactly_once:
                for table in script.sinks:
                    session.run(f"ALTER TABLE `{table}` SET ('sink.delivery-guarantee' = 'at-least-once')")
            else:
                for table in script.sinks:
                    prefix = f"{self.group_id}-{table}"
                    session.run(
                        f"ALTER TABLE `{table}` SET ('sink.delivery-guarantee' = 'exactly-once', "
                        f"'sink.transactional-id-prefix' = {_quote(prefix)}, "
                        f"'properties.transaction.timeout.ms' = '{self.options.transaction_timeout_ms}')"
                    )
            session.run("EXPLAIN " + self.render(script.dml))  # fails here, before anything stops
        except BaseException:
            session.close()
            raise
        return session

    def _source_topic(self, script: Script, table: str) -> str:
        if self.options.raw_topic:
            return self.options.raw_topic
        for ddl in script.ddl:
            if re.match(
                rf"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?`?{re.escape(table)}`?\s*\(", ddl, re.I
            ):
                m = re.search(r"'topic'\s*=\s*'([^']+)'", self.render(ddl))
                if m:
                    return m.group(1)
        raise DeployError(
            f"source table {table} has no single 'topic' option",
            hint="offsets can only be carried over for a source reading one named topic",
        )

    def _carry_offsets(self, session: Any, script: Script, savepoint: str) -> dict[str, dict[int, int]]:
        """Start each source exactly where the savepoint's readers stopped (see ``savepoint``)."""
        carried: dict[str, dict[int, int]] = {}
        for table in script.sources:
            topic = self._source_topic(script, table)
            offsets = sp.source_offsets(savepoint, topic)
            if offsets is None:
                raise DeployError(
                    f"savepoint {savepoint} holds no position for topic {topic}: starting the new job "
                    "would replay or skip events",
                    hint="the old job may have read a different topic; deploy under a new --name, or "
                    "`cdcrouter deploy delete` first to start over from the beginning",
                )
            carried[topic] = offsets
            if offsets:
                session.run(
                    f"ALTER TABLE `{table}` SET ('scan.startup.mode' = 'specific-offsets', "
                    f"'scan.startup.specific-offsets' = {_quote(sp.format_specific_offsets(offsets))})"
                )
        return carried

    def _submit(self, session: Any, script: Script, digest: str, savepoint: str | None) -> str:
        config = {
            "pipeline.name": job_name(self.name, digest),
            "execution.checkpointing.interval": self.options.checkpoint_interval,
            "execution.checkpointing.mode": "EXACTLY_ONCE",
        }
        if savepoint:
            config["execution.state-recovery.path"] = savepoint
            config["execution.state-recovery.ignore-unclaimed-state"] = "true"
        result = session.run(self.render(script.dml), config)
        if not result.job_id:
            raise DeployError(
                "the SQL Gateway started no job for the statement set", hint=str(result.rows)[:200]
            )
        return result.job_id

    def apply(self, plan: Plan, script: Script, *, wait: bool = True) -> dict[str, Any]:
        """Carry out ``plan``; returns what was deployed (job id, savepoint used)."""
        if not plan.changes:
            job = self.current()
            return {"job_id": job.id if job else None, "changed": False}
        session = self._prepare_session(script)
        try:
            savepoint: str | None = None
            old = self.current()
            if old is not None:
                savepoint = self.rest.stop_with_savepoint(old.id, self.options.savepoint_dir)
                self.rest.wait_terminal(old.id)
            else:
                savepoint = (state.load(self.state_dir, TARGET, self.name) or {}).get("savepoint")
            try:
                carried = self._carry_offsets(session, script, savepoint) if savepoint else {}
                job_id = self._submit(session, script, plan.sql_hash, savepoint)
            except DeployError as exc:
                if old is not None and savepoint:  # the old job is stopped: keep the way back
                    saved = state.load(self.state_dir, TARGET, self.name) or {"name": self.name}
                    saved.update(savepoint=savepoint, job_id=None, stopped_job=old.id)
                    state.save(self.state_dir, TARGET, self.name, saved)
                    raise DeployError(
                        f"{exc.message}\n  the previous job {old.id} was stopped with savepoint {savepoint}",
                        hint="fix the cause and deploy again, or `cdcrouter deploy resume` to restart the "
                        "previous version from that savepoint",
                    ) from exc
                raise
        finally:
            session.close()
        record = {
            "name": self.name,
            "job_id": job_id,
            "sql_hash": plan.sql_hash,
            "restored_from": savepoint,
            "carried_offsets": {t: {str(p): o for p, o in v.items()} for t, v in carried.items()},
            "savepoint": None,
            "script": {"sets": script.sets, "ddl": script.ddl, "dml": script.dml},
            "options": self._extra(),  # raw topic, interval, delivery: what resume must reuse
            "deployed_at": int(time.time() * 1000),
        }
        state.save(self.state_dir, TARGET, self.name, record)
        if wait:
            self.rest.wait_running(job_id)
        return {"job_id": job_id, "restored_from": savepoint, "carried_offsets": carried, "changed": True}

    # -- lifecycle ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        job = self.current()
        saved = state.load(self.state_dir, TARGET, self.name) or {}
        out: dict[str, Any] = {"name": self.name, "target": TARGET}
        if job is None:
            out["state"] = "STOPPED" if saved.get("savepoint") else "NOT DEPLOYED"
            out["savepoint"] = saved.get("savepoint")
            return out
        detail = self.rest.job(job.id)
        out.update(
            state=job.state,
            job_id=job.id,
            sql_hash=(parse_job_name(job.name) or ("", ""))[1],
            vertices={v["name"][:60]: v["status"] for v in detail.get("vertices", [])},
        )
        return out

    def stop(self) -> str:
        """Stop with a savepoint; ``resume`` (or the next deploy) continues from it."""
        job = self.current()
        if job is None:
            raise DeployError(
                f"deployment {self.name!r} has no running Flink job", hint="`cdcrouter deploy list`"
            )
        savepoint = self.rest.stop_with_savepoint(job.id, self.options.savepoint_dir)
        self.rest.wait_terminal(job.id)
        saved = state.load(self.state_dir, TARGET, self.name) or {"name": self.name}
        saved.update(savepoint=savepoint, job_id=None, stopped_job=job.id)
        state.save(self.state_dir, TARGET, self.name, saved)
        return savepoint

    def resume(self) -> str:
        saved = state.load(self.state_dir, TARGET, self.name)
        if self.current() is not None:
            raise DeployError(f"deployment {self.name!r} is already running")
        if not saved or not saved.get("savepoint") or not saved.get("script"):
            raise DeployError(
                f"deployment {self.name!r} has no savepoint to resume from",
                hint="deploy it with `cdcrouter deploy --target flink`",
            )
        opts = saved.get("options") or {}
        self.options.raw_topic = self.options.raw_topic or opts.get("raw")
        self.options.checkpoint_interval = opts.get("checkpoint_interval", self.options.checkpoint_interval)
        self.options.exactly_once = opts.get("exactly_once", self.options.exactly_once)
        s = saved["script"]
        script = Script(sets=[tuple(x) for x in s["sets"]], ddl=s["ddl"], dml=s["dml"])  # type: ignore[misc]
        plan = Plan(TARGET, self.name, saved["sql_hash"], [Action("resume", self.name)])
        return str(self.apply(plan, script)["job_id"])

    def delete(self) -> str | None:
        """Cancel the job (no savepoint) and forget the deployment. Topics are left alone."""
        job = self.current()
        if job is not None:
            self.rest.cancel(job.id)
            self.rest.wait_terminal(job.id)
        state.remove(self.state_dir, TARGET, self.name)
        return job.id if job else None

    def close(self) -> None:
        self.gateway.close()
        self.rest.close()


def list_deployments(rest_url: str) -> list[dict[str, Any]]:
    """Every cdcrouter job the JobManager knows (running or recently ended)."""
    rest = FlinkRest(rest_url)
    try:
        out = []
        for j in rest.jobs():
            parsed = parse_job_name(j.name)
            if parsed:
                out.append({"name": parsed[0], "sql_hash": parsed[1], "job_id": j.id, "state": j.state})
        return out
    finally:
        rest.close()
