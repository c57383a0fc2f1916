"""A local stand-in for Confluent Cloud's Flink statements API, for tests only.

Confluent Cloud cannot run here, so this server plays it, following the published OpenAPI
(confluentinc/ccloud-sdk-go-v2 ``flink-gateway/v1/api/openapi.yaml``): the same paths, bodies,
status codes (201 create, 409 duplicate name or stale ``resource_version``, 202 PUT/DELETE, 404
after delete, 401 bad key), phases, ``metadata.next`` pagination and ``status.latest_offsets``.

Statements "run" as state transitions: PENDING → RUNNING (or COMPLETED for DDL) after
``step_seconds``; a statement with ``sql.tables.initial-offset-from`` stays PENDING until the
named statement is STOPPED and then starts from that one's offsets. Like the real service, text
with a ``'connector'`` option fails (FAILED with a detail). The Kafka side is simulated by
``topic_end``: a stopped statement reports, for every table it reads, the end offsets at that time.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH = re.compile(r"^/sql/v1/organizations/([^/]+)/environments/([^/]+)/statements(?:/([^/]+))?/?$")
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(?:`([^`]+)`|([\w.]+)(?![\w.]|\s*[()]))", re.IGNORECASE)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class _Statement:
    body: dict[str, Any]
    phase: str = "PENDING"
    detail: str = ""
    due: float = 0.0  # when the pending transition happens
    target: str = "RUNNING"
    version: int = 1
    start_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    latest_offsets: dict[str, str] = field(default_factory=dict)


class FakeConfluentCloud:
    """Run with ``with FakeConfluentCloud() as cc: cc.url ...``; inspect ``cc.statements``."""

    def __init__(
        self,
        *,
        organization_id: str = "7c60d51f-b44e-4682-87d6-449835ea4de6",
        environment_id: str = "env-abc123",
        api_key: str = "FAKEKEY",
        api_secret: str = "fake-secret",
        step_seconds: float = 0.1,
    ) -> None:
        self.organization_id = organization_id
        self.environment_id = environment_id
        self._auth = "Basic " + base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
        self.step = step_seconds
        self.statements: dict[str, _Statement] = {}
        self.topic_end: dict[str, dict[int, int]] = {}  # simulated Kafka end offsets per topic
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # method, path, body
        self.force_conflicts = 0  # the next N PUTs answer 409 as if the object had changed
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._seq = itertools.count(1)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeConfluentCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, payload = fake.handle(self.command, self.path, self.headers.get("Authorization"), raw)
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Request-Id", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- the API ------------------------------------------------------------------------------

    def _error(self, status: int, code: str, detail: str) -> tuple[int, dict[str, Any]]:
        title = code.replace("_", " ").capitalize()
        err = {"id": str(uuid.uuid4()), "status": str(status), "code": code, "title": title, "detail": detail}
        return status, {"errors": [err]}

    def handle(self, method: str, raw_path: str, auth: str | None, raw: bytes) -> tuple[int, Any]:
        parsed = urlparse(raw_path)
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append((method, raw_path, body))
            if auth != self._auth:
                return self._error(
                    401, "unauthenticated", "The request lacks valid authentication credentials"
                )
            m = _PATH.match(parsed.path)
            if not m:
                return self._error(404, "not_found", f"no route {parsed.path}")
            org, env, name = m.groups()
            if (org, env) != (self.organization_id, self.environment_id):
                return self._error(404, "not_found", f"environment {env} not found in organization {org}")
            self._advance()
            if name is None and method == "GET":
                return self._list(parse_qs(parsed.query))
            if name is None and method == "POST":
                return self._create(body or {})
            if name is None:
                return self._error(405, "method_not_allowed", method)
            st = self.statements.get(name)
            if st is None:
                return self._error(404, "not_found", f"Statement '{name}' not found")
            if method == "GET":
                return 200, self._render(st)
            if method == "PUT":
                return self._update(st, body or {})
            if method == "DELETE":
                st.phase = "DELETING"
                st.version += 1
                del self.statements[name]
                return 202, None
            return self._error(405, "method_not_allowed", method)

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("name", "")
        spec = body.get("spec") or {}
        if not name or not spec.get("statement"):
            return self._error(400, "bad_request", "name and spec.statement are required")
        if len(name) > 100 or not NAME_RE.match(name):
            return self._error(400, "invalid_name", f"Statement name '{name}' does not match the pattern")
        if name in self.statements:
            return self._error(409, "resource_already_exists", f"Statement '{name}' already exists")
        if len(spec["statement"]) > 131072:
            return self._error(400, "bad_request", "spec.statement is longer than 131072 characters")
        created = {
            "api_version": "sql/v1",
            "kind": "Statement",
            "name": name,
            "organization_id": self.organization_id,
            "environment_id": self.environment_id,
            "metadata": {"created_at": _now(), "uid": str(uuid.uuid4())},
            "spec": {
                "statement": spec["statement"],
                "properties": dict(spec.get("properties") or {}),
                "compute_pool_id": spec.get("compute_pool_id", "fcp-default"),
                "principal": spec.get("principal", "u-fake"),
                "stopped": bool(spec.get("stopped", False)),
            },
        }
        st = _Statement(body=created, due=time.monotonic() + self.step)
        st.body["metadata"]["seq"] = next(self._seq)
        text = spec["statement"]
        if re.search(r"'connector'\s*=", text, re.IGNORECASE):
            st.phase, st.target = "FAILED", "FAILED"
            st.detail = (
                "The 'connector' option is not supported in Confluent Cloud; "
                "tables use the 'confluent' connector."
            )
        elif re.search(r"\bTEMPORARY\b", text, re.IGNORECASE):
            st.phase, st.target = "FAILED", "FAILED"
            st.detail = "TEMPORARY tables are not supported."
        elif st.body["spec"]["stopped"]:
            st.phase, st.target = "STOPPED", "STOPPED"
        else:
            st.target = "COMPLETED" if re.match(r"\s*(CREATE|ALTER|DROP)\b", text, re.I) else "RUNNING"
        self.statements[name] = st
        return 201, self._render(st)

    def _update(self, st: _Statement, body: dict[str, Any]) -> tuple[int, Any]:
        version = (body.get("metadata") or {}).get("resource_version")
        spec = body.get("spec") or {}
        if version is None or "stopped" not in spec:
            return self._error(400, "bad_request", "metadata.resource_version and spec.stopped are required")
        if self.force_conflicts > 0 or version != str(st.version):
            self.force_conflicts = max(0, self.force_conflicts - 1)
            st.version += 1  # as if the service had just touched the object
            return self._error(409, "conflict", "The resource version is stale; read the statement again")
        if spec.get("statement", st.body["spec"]["statement"]) != st.body["spec"]["statement"]:
            return self._error(400, "immutable_field", "spec.statement cannot be changed")
        want = bool(spec["stopped"])
        st.body["spec"]["stopped"] = want
        st.version += 1
        if want and st.phase in ("PENDING", "RUNNING", "DEGRADED"):
            st.phase, st.target, st.due = "STOPPING", "STOPPED", time.monotonic() + self.step
        elif not want and st.phase in ("STOPPED", "FAILED"):
            st.phase, st.target, st.due = "PENDING", "RUNNING", time.monotonic() + self.step
            st.start_offsets = {t: dict(_parse(o)) for t, o in st.latest_offsets.items()}
        return 202, self._render(st)

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        size = int((query.get("page_size") or ["10"])[0])
        if size < 1 or size > 100:
            return self._error(400, "invalid_page_size", "page_size must be between 1 and 100")
        start = int((query.get("page_token") or ["0"])[0] or 0)
        ordered = sorted(self.statements.values(), key=lambda s: s.body["metadata"]["seq"])
        page = ordered[start : start + size]
        base = self._base()
        meta: dict[str, Any] = {"self": base}
        if start + size < len(ordered):
            meta["next"] = f"{base}?page_size={size}&page_token={start + size}"
        return 200, {"api_version": "sql/v1", "kind": "StatementList", "metadata": meta,
                     "data": [self._render(s) for s in page]}  # fmt: skip

    def _base(self) -> str:
        org, env = self.organization_id, self.environment_id
        return f"{self.url}/sql/v1/organizations/{org}/environments/{env}/statements"

    # -- the simulated engine -----------------------------------------------------------------

    def _advance(self) -> None:
        now = time.monotonic()
        for st in self.statements.values():
            if st.phase not in ("PENDING", "STOPPING") or now < st.due:
                continue
            if st.phase == "STOPPING":
                st.phase = "STOPPED"
                st.latest_offsets = {
                    t: ";".join(
                        f"partition:{p},offset:{o}" for p, o in sorted(self.topic_end.get(t, {}).items())
                    )
                    for t in self._sources(st)
                }
                st.version += 1
                continue
            origin = st.body["spec"]["properties"].get("sql.tables.initial-offset-from")
            if origin and st.target == "RUNNING" and not st.start_offsets:
                old = self.statements.get(origin)
                if old is None:
                    st.phase, st.detail = (
                        "FAILED",
                        f"Statement '{origin}' in sql.tables.initial-offset-from not found",
                    )
                    st.version += 1
                    continue
                if old.phase != "STOPPED":
                    st.detail = f"Waiting for statement '{origin}' to stop to carry over its offsets"
                    continue  # stays PENDING (the real service waits up to 6 hours)
                st.start_offsets = {t: dict(_parse(o)) for t, o in old.latest_offsets.items()}
            elif st.target == "RUNNING" and not st.start_offsets:
                text = st.body["spec"]["statement"]
                st.start_offsets = {t: _hinted_offsets(text, t) for t in self._sources(st)}  # {} = earliest
            st.phase, st.detail = st.target, ""
            st.version += 1

    def _sources(self, st: _Statement) -> list[str]:
        text = re.sub(r"\bEXTRACT\s*\(\s*\w+\s+FROM\b", "EXTRACT(", st.body["spec"]["statement"], flags=re.I)
        return sorted({a or b for a, b in _FROM.findall(text)})

    def _render(self, st: _Statement) -> dict[str, Any]:
        out = json.loads(json.dumps(st.body))
        out["metadata"].pop("seq", None)
        out["metadata"]["resource_version"] = str(st.version)
        out["metadata"]["updated_at"] = _now()
        out["metadata"]["self"] = f"{self._base()}/{st.body['name']}"
        status: dict[str, Any] = {
            "phase": st.phase,
            "detail": st.detail or f"Statement is {st.phase.lower()}",
        }
        if st.phase == "STOPPED" and st.latest_offsets:
            status["latest_offsets"] = st.latest_offsets
            status["latest_offsets_timestamp"] = _now()
        out["status"] = status
        return out


def _hinted_offsets(text: str, table: str) -> dict[int, int]:
    """Offsets from a ``FROM t /*+ OPTIONS('scan.startup.specific-offsets'='...') */`` hint."""
    pat = (
        rf"\bFROM\s+`?{re.escape(table)}`?\s*/\*\+\s*OPTIONS\([^)]*"
        r"'scan.startup.specific-offsets'\s*=\s*'([^']*)'"
    )
    m = re.search(pat, text, re.IGNORECASE)
    return dict(_parse(m.group(1))) if m else {}


def _parse(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, text.split(";")):
        f = dict(kv.split(":", 1) for kv in part.split(","))
        out.append((int(f["partition"]), int(f["offset"])))
    return out
