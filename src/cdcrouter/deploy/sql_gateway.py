"""Clients for Apache Flink's SQL Gateway REST API and the JobManager REST API.

The SQL Gateway runs one statement per call (several INSERTs only inside a statement set), so a
generated script is split with :func:`split_statements` and run statement by statement in one
session. Stop-with-savepoint is not a gateway operation we can observe well (``STOP JOB`` blocks and
returns only a path), so it goes to the JobManager: ``POST /jobs/{id}/stop`` and a poll of the
trigger. Every failure becomes a :class:`DeployError` carrying the server's root cause, not its
Java stack trace.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from cdcrouter.config.durations import env_seconds
from cdcrouter.errors import DeployError

TIMEOUT_ENV = "CDCROUTER_SQL_GATEWAY_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 120.0  # a statement's result, a job reaching RUNNING


def default_timeout_s() -> float:
    """How long to wait for a statement's result or a job to run: ``CDCROUTER_SQL_GATEWAY_TIMEOUT_S``
    (seconds), else 120. Planning a large statement set on a small gateway heap under load can take
    longer (the Flink benchmark's 100 filters did)."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, DeployError)


_TERMINAL_OK = {"FINISHED"}
_TERMINAL_BAD = {"ERROR", "CANCELED", "CLOSED", "TIMEOUT"}
_CAUSE = re.compile(r"^(?:Caused by: )?([\w.$]+(?:Exception|Error)): (.*)$")


def server_message(body: Any) -> str:
    """The most specific message in a Flink REST error body (the last ``Caused by``)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return str(body)[:500]
    best = ""
    for text in errors:
        for line in str(text).splitlines():
            m = _CAUSE.match(line.strip().lstrip("<"))
            if m and m.group(2).strip():
                best = f"{m.group(2).strip()} ({m.group(1).rsplit('.', 1)[-1]})"
    if best:
        return best
    plain = [str(e) for e in errors if not str(e).startswith("<Exception")]
    return "; ".join(plain) or str(errors[0]).splitlines()[0]


def _request(client: httpx.Client, method: str, url: str, what: str, **kw: Any) -> Any:
    try:
        resp = client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        raise DeployError(
            f"{what}: cannot reach {url}: {exc}",
            hint="is Flink up? `cdcrouter stack up --only flink,kafka,registry`, or check connections.flink",
        ) from exc
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {"errors": [resp.text]}
        raise DeployError(f"{what}: {server_message(body)}", hint=f"HTTP {resp.status_code} from {url}")
    return resp.json() if resp.content else {}


@dataclass(frozen=True)
class Result:
    """What one statement returned: the rows (as JSON field lists) and the job id if it made one."""

    rows: list[list[Any]]
    columns: list[str]
    job_id: str | None


class Session:
    """One SQL Gateway session: tables created in it live until it is closed."""

    def __init__(self, gateway: SqlGateway, handle: str) -> None:
        self.gateway = gateway
        self.handle = handle

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _base(self) -> str:
        return f"{self.gateway.url}/{self.gateway.api}/sessions/{self.handle}"

    def execute(self, statement: str, config: dict[str, str] | None = None) -> str:
        """Submit one statement; returns its operation handle."""
        body: dict[str, Any] = {"statement": statement}
        if config:
            body["executionConfig"] = config
        out = _request(self.gateway.client, "POST", f"{self._base}/statements", "execute", json=body)
        return str(out["operationHandle"])

    def status(self, op: str) -> str:
        out = _request(self.gateway.client, "GET", f"{self._base}/operations/{op}/status", "status")
        return str(out["status"])

    def fetch(self, op: str, timeout: float | None = None) -> Result:
        """Read every page of an operation's result, following ``nextResultUri`` until EOS.

        Statements that start a job (INSERT, statement sets) end after one page with the job id;
        we stop there rather than wait for an unbounded stream.
        """
        uri = f"/{self.gateway.api}/sessions/{self.handle}/operations/{op}/result/0?rowFormat=JSON"
        rows: list[list[Any]] = []
        columns: list[str] = []
        job_id: str | None = None
        timeout = timeout or default_timeout_s()
        deadline = time.monotonic() + timeout
        while uri:
            page = _request(self.gateway.client, "GET", self.gateway.url + uri, "Flink SQL Gateway")
            kind = page.get("resultType")
            results = page.get("results") or {}
            columns = [c["name"] for c in results.get("columns", [])] or columns
            rows.extend(list(r.get("fields", [])) for r in results.get("data", []))
            job_id = page.get("jobID") or job_id
            if kind == "EOS" or (job_id and not page.get("isQueryResult")):
                break
            if kind == "NOT_READY":
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"no result from the SQL Gateway within {timeout:g}s",
                        hint=f"a loaded gateway may need longer: set {TIMEOUT_ENV} (seconds)",
                    )
                time.sleep(0.2)
            uri = page.get("nextResultUri") or ""
        if job_id is None and columns == ["job id"] and rows:
            job_id = str(rows[0][0])
        return Result(rows=rows, columns=columns, job_id=job_id)

    def run(
        self, statement: str, config: dict[str, str] | None = None, timeout: float | None = None
    ) -> Result:
        """Execute a statement, wait for its result, and close the operation."""
        op = self.execute(statement, config)
        try:
            return self.fetch(op, timeout)
        except DeployError as exc:
            first = " ".join(statement.split())[:120]
            raise DeployError(f"{exc.message}\n  in statement: {first}", hint=exc.hint) from exc
        finally:
            self.close_operation(op)

    def cancel(self, op: str) -> None:
        _request(self.gateway.client, "POST", f"{self._base}/operations/{op}/cancel", "cancel")

    def close_operation(self, op: str) -> None:
        with contextlib.suppress(DeployError):  # already closed or failed: nothing to release
            _request(self.gateway.client, "DELETE", f"{self._base}/operations/{op}/close", "close")

    def heartbeat(self) -> None:
        _request(self.gateway.client, "POST", f"{self._base}/heartbeat", "heartbeat")

    def close(self) -> None:
        with contextlib.suppress(DeployError):
            _request(self.gateway.client, "DELETE", self._base, "close session")


class SqlGateway:
    """The SQL Gateway at ``url`` (e.g. ``http://127.0.0.1:8091``), REST API ``v3`` by default."""

    def __init__(self, url: str, *, api: str = "v3", timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.api = api
        self.client = httpx.Client(timeout=timeout)

    def info(self) -> dict[str, Any]:
        return dict(_request(self.client, "GET", f"{self.url}/{self.api}/info", "gateway info"))

    def open_session(self, properties: dict[str, str] | None = None, name: str | None = None) -> Session:
        body: dict[str, Any] = {"properties": properties or {}}
        if name:
            body["sessionName"] = name
        out = _request(self.client, "POST", f"{self.url}/{self.api}/sessions", "open session", json=body)
        return Session(self, str(out["sessionHandle"]))

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    state: str
    start_time: int


class FlinkRest:
    """The JobManager REST API (``http://127.0.0.1:8081``): jobs, stop-with-savepoint, cancel."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)

    def jobs(self) -> list[Job]:
        out = _request(self.client, "GET", f"{self.url}/jobs/overview", "list jobs")
        return [Job(j["jid"], j["name"], j["state"], j["start-time"]) for j in out.get("jobs", [])]

    def jobs_named(self, name: str, states: tuple[str, ...] | None = None) -> list[Job]:
        """Jobs with this pipeline name, newest first (optionally only in the given states)."""
        found = [j for j in self.jobs() if j.name == name and (states is None or j.state in states)]
        return sorted(found, key=lambda j: j.start_time, reverse=True)

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(_request(self.client, "GET", f"{self.url}/jobs/{job_id}", "job status"))

    def wait_running(self, job_id: str, timeout: float | None = None) -> None:
        """Wait until every task of the job runs (so its sources have been assigned partitions)."""
        timeout = timeout or default_timeout_s()
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            state = job["state"]
            if state == "RUNNING" and all(v["status"] == "RUNNING" for v in job.get("vertices", [])):
                return
            if state in ("FAILED", "CANCELED", "FINISHED"):
                raise DeployError(
                    f"Flink job {job_id} is {state}: {self.root_exception(job_id)}",
                    hint=f"see {self.url}/#/job/running/{job_id}/exceptions",
                )
            if time.monotonic() > deadline:
                raise DeployError(
                    f"Flink job {job_id} not running after {timeout:g}s (state {state})",
                    hint=f"a loaded cluster may need longer: set {TIMEOUT_ENV} (seconds)",
                )
            time.sleep(0.5)

    def root_exception(self, job_id: str) -> str:
        try:
            out = _request(self.client, "GET", f"{self.url}/jobs/{job_id}/exceptions", "exceptions")
        except DeployError as exc:
            return exc.message
        history = out.get("exceptionHistory", {}).get("entries", [])
        text = history[0].get("stacktrace", "") if history else out.get("root-exception") or ""
        return server_message({"errors": [text]}) if text else "no exception recorded"

    def stop_with_savepoint(self, job_id: str, target_dir: str | None, timeout: float = 300.0) -> str:
        """Stop the job, taking a savepoint first; returns the savepoint path."""
        body: dict[str, Any] = {"drain": False}
        if target_dir:
            body["targetDirectory"] = target_dir
        out = _request(self.client, "POST", f"{self.url}/jobs/{job_id}/stop", "stop job", json=body)
        trigger = out["request-id"]
        deadline = time.monotonic() + timeout
        while True:
            res = _request(
                self.client, "GET", f"{self.url}/jobs/{job_id}/savepoints/{trigger}", "savepoint status"
            )
            if res.get("status", {}).get("id") == "COMPLETED":
                op = res.get("operation", {})
                if "location" in op:
                    return str(op["location"])
                cause = op.get("failure-cause", {})
                raise DeployError(
                    f"stop-with-savepoint of job {job_id} failed: "
                    f"{server_message({'errors': [cause.get('stack-trace', str(cause))]})}",
                    hint="the job keeps running; check its checkpoints and the savepoint directory",
                )
            if time.monotonic() > deadline:
                raise DeployError(f"savepoint of job {job_id} not done after {timeout:.0f}s")
            time.sleep(0.5)

    def cancel(self, job_id: str) -> None:
        _request(self.client, "PATCH", f"{self.url}/jobs/{job_id}?mode=cancel", "cancel job")

    def wait_terminal(self, job_id: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = str(self.job(job_id)["state"])
            if state in ("FINISHED", "CANCELED", "FAILED"):
                return state
            if time.monotonic() > deadline:
                raise DeployError(f"Flink job {job_id} still {state} after {timeout:.0f}s")
            time.sleep(0.3)

    def close(self) -> None:
        self.client.close()


def split_statements(script: str) -> list[str]:
    """Split a SQL script on top-level ``;``, keeping ``EXECUTE STATEMENT SET BEGIN ... END`` whole.

    Quotes (``'``, ``"``, backticks) and comments (``--``, ``/* */``) are respected; comments are
    dropped and empty statements skipped.
    """
    out: list[str] = []
    buf: list[str] = []
    depth = 0  # inside a statement set's BEGIN ... END
    cases = 0  # open CASE expressions
    i, n = 0, len(script)
    word = re.compile(r"[A-Za-z_]+")
    while i < n:
        c = script[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if script[j] == c:
                    if j + 1 < n and script[j + 1] == c:  # doubled quote escapes itself
                        j += 2
                        continue
                    break
                j += 1
            buf.append(script[i : j + 1])
            i = j + 1
        elif script.startswith("--", i):
            j = script.find("\n", i)
            i = n if j < 0 else j
        elif script.startswith("/*", i):
            j = script.find("*/", i + 2)
            if script.startswith("/*+", i):  # an OPTIONS hint is part of the statement
                buf.append(script[i : (n if j < 0 else j + 2)])
            i = n if j < 0 else j + 2
        elif c.isalpha() or c == "_":
            m = word.match(script, i)
            assert m
            w = m.group(0).upper()
            if w == "BEGIN" and "STATEMENT SET" in " ".join("".join(buf).upper().split()):
                depth += 1
            elif w == "CASE":  # CASE ... END (a timestamp test's SQL) does not end the statement set
                cases += 1
            elif w == "END" and cases:
                cases -= 1
            elif w == "END" and depth:
                depth -= 1
            buf.append(m.group(0))
            i = m.end()
        elif c == ";" and depth == 0:
            stmt = "".join(buf).strip()
            if stmt:
                out.append(stmt)
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    tail = "".join(buf).strip()
    if tail:
        out.append(tail)
    return out


def iter_set_statements(statements: list[str]) -> Iterator[tuple[str, str]]:
    """``SET 'k' = 'v'`` statements as (key, value); everything else is not yielded."""
    pat = re.compile(r"^SET\s+'([^']+)'\s*=\s*'((?:[^']|'')*)'$", re.IGNORECASE | re.DOTALL)
    for stmt in statements:
        m = pat.match(stmt.strip())
        if m:
            yield m.group(1), m.group(2).replace("''", "'")
