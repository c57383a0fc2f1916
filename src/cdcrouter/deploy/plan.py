"""A deployment plan: what a deploy would create, replace or leave alone, shown before it acts.

Plans hold the SQL with its ``${PLACEHOLDER}`` connection settings unresolved, so printing a plan
(or storing it) can never reveal a secret; values are substituted only when a statement is sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cdcrouter.deploy.sql_gateway import split_statements

_INSERT = re.compile(r"\bINSERT\s+INTO\s+`?([\w.-]+)`?", re.IGNORECASE)
# A table after FROM/JOIN; not a function call ``f(`` and not ``EXTRACT(x FROM col)``.
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(?:`([^`]+)`|([\w.]+)(?![\w.]|\s*[()]))", re.IGNORECASE)
_CREATE = re.compile(r"^\s*CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([\w.-]+)`?", re.I)


_EXTRACT = re.compile(r"\bEXTRACT\s*\(\s*\w+\s+FROM\b", re.IGNORECASE)


def tables_read(sql: str) -> list[str]:
    """Names after FROM/JOIN, minus the ``FROM`` of ``EXTRACT(unit FROM x)`` and function calls."""
    return [a or b for a, b in _FROM.findall(_EXTRACT.sub("EXTRACT(", sql))]


@dataclass(frozen=True)
class Action:
    """One line of a plan. ``verb``: create, replace, unchanged, stop, resume, delete, noop."""

    verb: str
    subject: str
    detail: str = ""


@dataclass
class Script:
    """A generated script split into its parts (SET, DDL, the one statement set)."""

    sets: list[tuple[str, str]]
    ddl: list[str]
    dml: str

    @classmethod
    def parse(cls, script: str) -> Script:
        sets: list[tuple[str, str]] = []
        ddl: list[str] = []
        dml: list[str] = []
        pat = re.compile(r"^SET\s+'([^']+)'\s*=\s*'((?:[^']|'')*)'$", re.IGNORECASE | re.DOTALL)
        for stmt in split_statements(script):
            m = pat.match(stmt)
            if m:
                sets.append((m.group(1), m.group(2).replace("''", "'")))
            elif re.match(r"^\s*(EXECUTE\s+STATEMENT\s+SET|BEGIN\s+STATEMENT\s+SET|INSERT)\b", stmt, re.I):
                dml.append(stmt)
            else:
                ddl.append(stmt)
        if len(dml) != 1:
            from cdcrouter.errors import DeployError

            raise DeployError(
                f"the generated script has {len(dml)} INSERT/statement-set statements, expected exactly one",
                hint="deploy the output of `cdcrouter filters generate` unchanged",
            )
        return cls(sets=sets, ddl=ddl, dml=dml[0])

    @property
    def sinks(self) -> list[str]:
        return sorted(set(_INSERT.findall(self.dml)))

    @property
    def sources(self) -> list[str]:
        """Tables the statement set reads (after FROM/JOIN, not a function call, not a sink).

        When the script creates some of them (Flink: the raw table), only those count, which keeps
        ``EXTRACT(x FROM col)`` out; on Confluent Cloud the raw table already exists in the catalog.
        """
        read = set(tables_read(self.dml)) - set(self.sinks)
        created = read & set(self.tables)
        return sorted(created or read)

    @property
    def tables(self) -> list[str]:
        return [m.group(1) for m in map(_CREATE.match, self.ddl) if m]

    def digest(self, extra: dict[str, Any] | None = None) -> str:
        """A stable hash of what would run (SQL with placeholders, plus deploy-time options)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.sets, self.ddl, self.dml, extra or {}], sort_keys=True).encode())
        return h.hexdigest()


@dataclass
class Plan:
    target: str
    name: str
    sql_hash: str
    actions: list[Action] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return any(a.verb not in ("unchanged", "noop") for a in self.actions)

    def render(self) -> str:
        lines = [f"Plan for {self.target} deployment {self.name!r} (SQL {self.sql_hash[:12]}):"]
        marks = {"create": "+", "replace": "~", "unchanged": "=", "stop": "-", "delete": "-", "resume": "+"}
        for a in self.actions:
            lines.append(
                f"  {marks.get(a.verb, ' ')} {a.verb:<9} {a.subject}"
                + (f"  ({a.detail})" if a.detail else "")
            )
        if not self.changes:
            lines.append("  nothing to do: the deployed SQL is the same")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name,
            "sql_hash": self.sql_hash,
            "changes": self.changes,
            "actions": [asdict(a) for a in self.actions],
            "facts": self.facts,
        }
