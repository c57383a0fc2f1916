"""Deploying the routing statement set to Confluent Cloud for Apache Flink.

Each DDL statement of the script becomes its own statement named
``<name>-ddl-<hash8>`` (it COMPLETEs; a COMPLETED one with the same name is not run again). The
statement set becomes ``<name>-<hash12>``, so what runs, and which SQL it runs, is read from the
statements API itself; ``SET`` lines become statement properties.

An update creates the new statement with ``sql.tables.initial-offset-from`` = the old one: Confluent
Cloud keeps it PENDING until the old one is STOPPED and then starts it at the old one's offsets. We
then stop the old statement, wait for the new one to run, and delete the old one. With
``carry_over="hints"`` the manual way is used instead: stop the old one, read its
``status.latest_offsets`` and start the new one with ``specific-offsets`` OPTIONS hints.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from cdcrouter.deploy.confluent_cloud import RUNNING_PHASES, ConfluentCloudFlink, check_name, parse_offsets
from cdcrouter.deploy.plan import Action, Plan, Script
from cdcrouter.errors import DeployError

TARGET = "confluent-cloud"


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


class CloudDeployment:
    def __init__(
        self,
        name: str,
        api: ConfluentCloudFlink,
        render: Callable[[str], str],
        *,
        carry_over: str = "property",
        timeout: float = 600.0,
    ) -> None:
        check_name(name)
        if len(name) > 80:
            raise DeployError(f"deployment name {name!r} is too long", hint="use at most 80 characters")
        if carry_over not in ("property", "hints"):
            raise DeployError(f"unknown carry-over mode {carry_over!r}", hint="use property or hints")
        self.name = name
        self.api = api
        self.render = render
        self.carry_over = carry_over
        self.timeout = timeout

    def ddl_name(self, ddl: str) -> str:
        return f"{self.name}-ddl-{_h(ddl, 8)}"

    def dml_name(self, digest: str) -> str:
        return f"{self.name}-{digest[:12]}"

    def _ours(self, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pat = re.compile(rf"^{re.escape(self.name)}-[0-9a-f]{{12}}$")
        return [s for s in statements if pat.match(s["name"])]

    def current(self, statements: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """This deployment's statement-set statements, any phase, newest first."""
        found = self._ours(statements if statements is not None else self.api.list())
        return sorted(found, key=lambda s: (s.get("metadata") or {}).get("created_at", ""), reverse=True)

    def plan(self, script_text: str) -> tuple[Plan, Script]:
        script = Script.parse(script_text)
        digest = script.digest()
        plan = Plan(TARGET, self.name, digest)
        existing = {s["name"]: s for s in self.api.list()}
        for ddl in script.ddl:
            n = self.ddl_name(ddl)
            phase = (existing.get(n, {}).get("status") or {}).get("phase")
            if phase == "COMPLETED":
                plan.actions.append(Action("unchanged", f"statement {n}", "DDL already applied"))
            else:
                plan.actions.append(Action("create", f"statement {n}", ddl.split("(")[0].strip()[:60]))
        new = self.dml_name(digest)
        live = [s for s in self.current(list(existing.values())) if s["status"]["phase"] in RUNNING_PHASES]
        if any(s["name"] == new for s in live):
            plan.actions.append(Action("unchanged", f"statement {new}", "running"))
        elif live:
            old = live[0]["name"]
            how = (
                f"sql.tables.initial-offset-from={old}"
                if self.carry_over == "property"
                else f"specific-offsets from {old}'s latest_offsets"
            )
            plan.actions.append(Action("replace", f"statement {new}", f"starts where {old} stopped ({how})"))
            plan.actions.append(Action("stop", f"statement {old}", "then deleted once the new one runs"))
        elif new in existing:
            plan.actions.append(
                Action("resume", f"statement {new}", f"now {existing[new]['status']['phase']}")
            )
        else:
            plan.actions.append(Action("create", f"statement {new}", f"{len(script.sinks)} sinks"))
        plan.facts = {"statement": new, "sinks": script.sinks, "sources": script.sources}
        return plan, script

    def apply(self, plan: Plan, script: Script) -> dict[str, Any]:
        if not plan.changes:
            return {"statement": plan.facts.get("statement"), "changed": False}
        properties = dict(script.sets)
        for action in plan.actions:
            if action.verb == "create" and "-ddl-" in action.subject:
                ddl = next(d for d in script.ddl if f"statement {self.ddl_name(d)}" == action.subject)
                name = self.ddl_name(ddl)
                if self.api.find(name):  # an earlier failed run: start it over
                    self.api.delete(name)
                self.api.create(name, self.render(ddl), properties)
                self.api.wait_phase(name, ("COMPLETED",), self.timeout)
        new = self.dml_name(plan.sql_hash)
        verbs = {a.verb for a in plan.actions if not a.subject.startswith(f"statement {self.name}-ddl-")}
        old = next((a.subject.split(" ", 1)[1] for a in plan.actions if a.verb == "stop"), None)
        dml = self.render(script.dml)
        carried: dict[str, str] = {}
        if "resume" in verbs:
            self.api.resume(new)
        elif old and self.carry_over == "property":
            self.api.create(new, dml, {**properties, "sql.tables.initial-offset-from": old})
            self.api.wait_phase(new, ("PENDING", "RUNNING"), self.timeout)
            self.api.stop(old)
            self.api.wait_phase(old, ("STOPPED",), self.timeout)
        elif old:
            self.api.stop(old)
            stopped = self.api.wait_phase(old, ("STOPPED",), self.timeout)
            carried = dict((stopped.get("status") or {}).get("latest_offsets") or {})
            self.api.create(new, with_offset_hints(dml, script.sources, carried), properties)
        else:
            self.api.create(new, dml, properties)
        self.api.wait_phase(new, ("RUNNING",), self.timeout)
        if old:
            self.api.delete(old)
        return {"statement": new, "replaced": old, "latest_offsets": carried, "changed": True}

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "statement": s["name"],
                "phase": s["status"].get("phase"),
                "detail": s["status"].get("detail", ""),
                "latest_offsets": s["status"].get("latest_offsets"),
            }
            for s in self.current()
        ]

    def _one(self, phases: tuple[str, ...]) -> str:
        for s in self.current():
            if s["status"]["phase"] in phases:
                return str(s["name"])
        raise DeployError(
            f"deployment {self.name!r} has no statement in phase {'/'.join(phases)}",
            hint="see `cdcrouter deploy status --target confluent-cloud`",
        )

    def stop(self) -> str:
        name = self._one(RUNNING_PHASES)
        self.api.stop(name)
        self.api.wait_phase(name, ("STOPPED",), self.timeout)
        return name

    def resume(self) -> str:
        name = self._one(("STOPPED",))
        self.api.resume(name)
        self.api.wait_phase(name, ("RUNNING",), self.timeout)
        return name

    def delete(self) -> list[str]:
        """Delete this deployment's statements (DDL statements too). Tables and topics stay."""
        gone = []
        for s in self.api.list():
            if s["name"].startswith(f"{self.name}-ddl-") or self._ours([s]):
                self.api.delete(s["name"])
                gone.append(s["name"])
        return gone


def with_offset_hints(dml: str, sources: list[str], latest: dict[str, str]) -> str:
    """Add ``/*+ OPTIONS('scan.startup.mode'='specific-offsets', ...) */`` after each source table.

    On Confluent Cloud a table's name is its topic's name, so ``latest_offsets`` keys match.
    """
    out = dml
    for table in sources:
        if table not in latest:
            raise DeployError(
                f"the old statement reported no offsets for {table}",
                hint="use the default carry-over (sql.tables.initial-offset-from)",
            )
        spec = ";".join(f"partition:{p},offset:{o}" for p, o in sorted(parse_offsets(latest[table]).items()))
        hint = (
            f"/*+ OPTIONS('scan.startup.mode'='specific-offsets','scan.startup.specific-offsets'='{spec}') */"
        )
        out = re.sub(rf"(\bFROM\s+`?{re.escape(table)}`?)(?!\s*/\*\+)", rf"\1 {hint}", out, flags=re.I)
    return out
