"""Real Flink as a checker: EXPLAIN generated SQL, and run bounded jobs for differential tests.

Both use PyFlink (the optional ``cdcrouter[flink]`` extra) in this process, with the Kafka
connector and avro-confluent format jars on ``pipeline.jars``, so a statement is planned against
its real DDL with its real connector options. One :class:`FlinkChecker` keeps one JVM and one
TableEnvironment per mode: start-up costs seconds, an EXPLAIN once warm costs milliseconds.

The bounded runner answers "which predicates are TRUE for each event" with a single batch
query over a JSON-lines file of events, whose row type is the raw event's (every nested field
nullable, as the generated source DDL must declare it; see docs/operations.md).
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cdcrouter.errors import CdcrouterError

# The raw event as a Flink row type. Everything nullable on purpose: a NOT NULL nested field makes
# the planner fold ``entities[9].entityType IS NULL`` to FALSE although an out-of-range index is NULL.
RAW_EVENT_COLUMNS = """\
  `eventHeader` ROW<`uuid` STRING, `eventName` STRING, `createdDate` BIGINT, `savedDate` BIGINT,
                    `eventType` STRING>,
  `eventBody` ROW<`entities` ARRAY<ROW<`entityType` STRING, `entityId` STRING,
                                       `updatedAttributes` MAP<STRING, STRING>>>>,
  `sourceMetadata` ROW<`table` STRING, `operation` STRING, `timestamp` BIGINT>"""

_PASS_THROUGH = ("CREATE", "DROP", "ALTER", "USE", "SET", "RESET", "LOAD", "UNLOAD")


class FlinkCheckError(CdcrouterError):
    """Flink rejected a statement: ``statement`` is the SQL, ``reason`` Flink's own message."""

    def __init__(self, statement: str, reason: str) -> None:
        first = statement.strip().splitlines()[0] if statement.strip() else ""
        super().__init__(
            f"Flink rejected `{first[:120]}`: {reason}",
            hint="this is a bug in the generated SQL: report it with the filters.yaml that produced it",
        )
        self.statement = statement
        self.reason = reason


@dataclass(frozen=True)
class Explained:
    """One statement Flink planned: the SQL and the plan text EXPLAIN printed."""

    statement: str
    plan: str


def split_statements(script: str) -> list[str]:
    """Split a SQL script on top-level ``;``, keeping ``EXECUTE STATEMENT SET BEGIN ... END;`` whole.

    Quotes (``'...'`` with ``''``), back-quoted names, ``--`` and ``/* */`` comments are respected.
    Comment-only pieces are dropped.
    """
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    depth = 0  # inside BEGIN ... END of a statement set
    cases = 0  # open CASE expressions
    while i < n:
        ch = script[i]
        if ch == "'" or ch == "`":
            j = i + 1
            while j < n:
                if script[j] == ch:
                    if j + 1 < n and script[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            buf.append(script[i : j + 1])
            i = j + 1
            continue
        if script.startswith("--", i):
            j = script.find("\n", i)
            j = n if j < 0 else j
            buf.append(script[i:j])
            i = j
            continue
        if script.startswith("/*", i):
            j = script.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(script[i:j])
            i = j
            continue
        if ch.isalpha():
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", script[i:])
            assert m
            word = m.group(0).upper()
            if word == "BEGIN" and re.search(r"STATEMENT\s+SET\s*$", "".join(buf), re.IGNORECASE):
                depth += 1
            elif word == "CASE":  # CASE ... END (a timestamp test's SQL) does not end the statement set
                cases += 1
            elif word == "END" and cases:
                cases -= 1
            elif word == "END" and depth:
                depth -= 1
            buf.append(m.group(0))
            i += len(m.group(0))
            continue
        if ch == ";" and not depth:
            out.append("".join(buf))
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if _strip_comments(s).strip()]


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.DOTALL)


# Whitespace and comments before a statement's first keyword (comments inside literals are data).
_LEADING = r"((?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*)"


def _first_word(sql: str) -> str:
    m = re.match(_LEADING + r"([A-Za-z]+)", sql, re.DOTALL)
    return m.group(2).upper() if m else ""


def _java_message(exc: BaseException) -> str:
    """The useful line of a Py4J error: the innermost ``...Exception: message``."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if "Exception:" in ln]
    for ln in reversed(lines):
        if "Caused by" in ln or lines.index(ln) == 0:
            return re.sub(r"^(Caused by: )?[\w.$]+Exception: ", "", ln)[:800]
    return text.strip().splitlines()[0][:800] if text.strip() else type(exc).__name__


class FlinkChecker:
    """PyFlink in this process, with the connector jars on the class path.

    Args:
        jars: jar paths for ``pipeline.jars`` (by default the Kafka connector and avro-confluent
            jars from the stack's jar cache, fetched with Maven when missing).
    """

    def __init__(self, jars: Iterable[Path] | None = None) -> None:
        try:
            import pyflink  # noqa: F401
        except ImportError as exc:
            raise CdcrouterError(
                "PyFlink is not installed: EXPLAIN checks and bounded runs need real Flink",
                hint="pip install 'cdcrouter[flink]'",
            ) from exc
        if jars is None:
            from cdcrouter.stack.flink import connector_jars
            from cdcrouter.stack.service import default_cache_dir

            jars = connector_jars(default_cache_dir())
        self.jars = [Path(j).resolve() for j in jars]
        self._stream: Any = None
        self._batch: Any = None
        self._db_counter = 0

    # -- environments -------------------------------------------------------------------------

    def _configure(self, env: Any) -> Any:
        conf = env.get_config()
        conf.set("pipeline.jars", ";".join(p.as_uri() for p in self.jars))
        conf.set("parallelism.default", "1")
        conf.set("table.local-time-zone", "UTC")
        return env

    @property
    def stream_env(self) -> Any:
        """A streaming TableEnvironment (Kafka sources are unbounded: EXPLAIN them here)."""
        if self._stream is None:
            from pyflink.table import EnvironmentSettings, TableEnvironment

            self._stream = self._configure(TableEnvironment.create(EnvironmentSettings.in_streaming_mode()))
        return self._stream

    @property
    def batch_env(self) -> Any:
        """A batch TableEnvironment for bounded jobs over files."""
        if self._batch is None:
            from pyflink.table import EnvironmentSettings, TableEnvironment

            self._batch = self._configure(TableEnvironment.create(EnvironmentSettings.in_batch_mode()))
        return self._batch

    def _fresh_database(self, env: Any) -> str:
        """A new, empty database so statements from earlier checks never collide."""
        self._db_counter += 1
        name = f"cdcrouter_check_{self._db_counter}"
        env.execute_sql(f"CREATE DATABASE `{name}`")
        env.use_database(name)
        return name

    # -- EXPLAIN ------------------------------------------------------------------------------

    def explain(self, script: str | Sequence[str]) -> list[Explained]:
        """Plan every statement of ``script`` with real Flink; return the plans of the DML.

        DDL (CREATE/DROP/...) runs, in a fresh database; INSERT, SELECT and
        ``EXECUTE STATEMENT SET`` are EXPLAINed, never executed.

        Raises:
            FlinkCheckError: the first statement Flink rejects, with Flink's reason.
        """
        statements = split_statements(script) if isinstance(script, str) else list(script)
        env = self.stream_env
        self._fresh_database(env)
        plans = [self.explain_one(env, stmt) for stmt in statements]
        return [p for p in plans if p is not None]

    def explain_one(self, env: Any, stmt: str) -> Explained | None:
        """Run one DDL statement (None) or EXPLAIN one DML statement in ``env``."""
        word = _first_word(stmt)
        try:
            if word in _PASS_THROUGH:
                env.execute_sql(stmt)
                return None
            if word == "EXECUTE":
                flags = re.IGNORECASE | re.DOTALL
                target = re.sub(_LEADING + r"EXECUTE\s+", r"\1", stmt, count=1, flags=flags)
            else:
                target = stmt
            result = env.execute_sql(f"EXPLAIN {target}")
            plan = "\n".join(str(row[0]) for row in result.collect())
        except Exception as exc:  # Py4JJavaError and PyFlink's wrappers: all carry Flink's text
            raise FlinkCheckError(stmt, _java_message(exc)) from exc
        return Explained(stmt, plan)

    # -- bounded differential runs ------------------------------------------------------------

    def match_sets(
        self,
        predicates: Mapping[str, str],
        events: Sequence[Mapping[str, Any]],
        *,
        columns: str = RAW_EVENT_COLUMNS,
        chunk: int = 12,
    ) -> list[set[str]]:
        """For each event, the keys of ``predicates`` whose SQL boolean expression is TRUE.

        One batch job: the events file is read once, and each group of ``chunk`` predicates is one
        branch of a UNION ALL (its own small generated class: Flink's planning time grows much
        faster than linearly with the size of one projection). Results go to a CSV file sink,
        not through ``collect()``, which costs a Py4J round trip per row.

        Args:
            predicates: key -> a SQL boolean expression over the raw event's columns
                (``eventHeader``, ``eventBody``, ``sourceMetadata``), e.g. a ``where_clause``.
            events: decoded raw events (the fastavro dict shape).
            columns: the source table's column list (defaults to :data:`RAW_EVENT_COLUMNS`).
            chunk: predicates per UNION ALL branch.

        Returns:
            One set per event, in input order. FALSE and NULL (UNKNOWN) both mean no match.
        """
        keys = list(predicates)
        result: list[set[str]] = [set() for _ in events]
        if not keys or not events:
            return result
        env = self.batch_env
        self._fresh_database(env)
        tmp = Path(tempfile.mkdtemp(prefix="cdcrouter-flink-events-"))
        try:
            (tmp / "in").mkdir()
            with open(tmp / "in" / "events.jsonl", "wb") as fh:
                for idx, ev in enumerate(events):
                    fh.write(orjson.dumps({"_idx": idx, **ev}) + b"\n")
            env.execute_sql(
                f"CREATE TABLE `events` (\n  `_idx` INT,\n{columns}\n) WITH ("
                f"'connector'='filesystem', 'path'='{_sql_str(str(tmp / 'in'))}', 'format'='json',"
                " 'json.fail-on-missing-field'='true')"
            )
            env.execute_sql(
                "CREATE TABLE `hits` (`_idx` INT, `hits` STRING) WITH ('connector'='filesystem',"
                f" 'path'='{_sql_str(str(tmp / 'out'))}', 'format'='csv')"
            )
            branches = []
            for start in range(0, len(keys), chunk):
                # IF takes NULL as FALSE; CONCAT_WS skips NULLs: the column lists the TRUE predicates.
                cols = ",\n  ".join(
                    f"IF({predicates[k]}, '{start + j}', CAST(NULL AS STRING))"
                    for j, k in enumerate(keys[start : start + chunk])
                )
                branches.append(f"SELECT `_idx`, CONCAT_WS(' ',\n  {cols}) FROM `events`")
            statement = "INSERT INTO `hits`\n" + "\nUNION ALL\n".join(branches)
            try:
                env.execute_sql(statement).wait()
            except Exception as exc:
                raise FlinkCheckError(statement, _java_message(exc)) from exc
            for part in sorted((tmp / "out").rglob("*")):
                if not part.is_file() or part.name.startswith("."):
                    continue
                with open(part, newline="", encoding="utf-8") as fh:
                    for row in csv.reader(fh):
                        for h in row[1].split() if len(row) > 1 else ():
                            result[int(row[0])].add(keys[int(h)])
            return result
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a bounded query in batch mode and return its rows (for probes and tests)."""
        try:
            return [tuple(r) for r in self.batch_env.execute_sql(sql).collect()]
        except Exception as exc:
            raise FlinkCheckError(sql, _java_message(exc)) from exc


def _sql_str(text: str) -> str:
    return text.replace("'", "''")
