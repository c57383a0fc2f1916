"""Schemas as code: register the raw and filtered schemas in a Confluent-compatible registry.

Talks the Confluent Schema Registry REST API (content type
``application/vnd.schemaregistry.v1+json``), which Apicurio 3 serves under ``/apis/ccompat/v7``
and Confluent Cloud serves natively. Subjects follow TopicNameStrategy: ``<topic>-value``.

``plan_schemas`` only reads: for every subject it says whether the schema is already registered,
whether the compatibility level must change, and whether the registry accepts the new schema under
that level. ``apply_schemas`` refuses the whole plan while any change is incompatible, quoting the
registry's own messages, so a bad schema never half-lands.

Every subject gets ``FULL_TRANSITIVE`` (:data:`DEFAULT_COMPATIBILITY`): capture is the producer that
upgrades first, so a new raw schema must keep every older reader working (the router's compiled-in
contract, consumers that have not upgraded: FORWARD), and new readers must still read what the
topics retain from before (replays, an upgraded consumer starting from the beginning: BACKWARD),
against every earlier version, not only the latest (TRANSITIVE). Under BACKWARD, the registry's
usual default, a raw schema without ``eventHeader.eventName`` is accepted and every event after
it is unroutable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from cdcrouter.errors import RouteError

__all__ = [
    "COMPATIBILITY_LEVELS",
    "DEFAULT_COMPATIBILITY",
    "READER_SAFE_LEVELS",
    "RegistryClient",
    "SchemaChange",
    "SchemaPlan",
    "SchemaRefused",
    "SchemaRegistryError",
    "apply_schemas",
    "desired_subjects",
    "ensure_schema",
    "plan_derived",
    "plan_schemas",
    "subject_for",
]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY_LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)
NOT_FOUND_CODES = {40401, 40402, 40403, 40408}
DEFAULT_COMPATIBILITY = "FULL_TRANSITIVE"
# levels under which a new writer schema cannot break a reader of an older version
READER_SAFE_LEVELS = frozenset({"FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"})


class SchemaRegistryError(RouteError):
    """The registry refused a request or could not be reached."""


class SchemaRefused(SchemaRegistryError):
    """The registry refused to register a schema (incompatible or invalid): not worth a retry."""


UNREACHABLE_HINT = (
    "is the registry running? start it (cdcrouter stack up) or check connections.registry.url "
    "(CDCROUTER_REGISTRY__URL)"
)


def subject_for(topic: str) -> str:
    """TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def canonical(schema_text: str) -> str:
    """Whitespace-free JSON, to compare schemas independent of formatting."""
    return json.dumps(json.loads(schema_text), separators=(",", ":"), sort_keys=True)


def schema_json(schema: str | Mapping[str, Any]) -> str:
    """Schema text as sent to the registry: text unchanged, a parsed schema as compact JSON."""
    if isinstance(schema, str):
        return schema
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


class RegistryClient:
    """A small, synchronous client for the Confluent Schema Registry REST API.

    The one implementation of the HTTP calls: the router, the CLI and the consumer SDK (whose
    ``cdcrouter.consumer.RegistryClient`` subclasses this one) share auth, TLS, timeouts and errors.
    Subclasses choose the exception type with ``error`` (it must subclass SchemaRegistryError).
    """

    error: type[SchemaRegistryError] = SchemaRegistryError

    def __init__(self, conf: Mapping[str, Any], timeout: float | None = None) -> None:
        """``conf`` is ``RegistrySettings.to_client_conf()``: url, timeout, optional basic auth and CA.

        ``timeout`` (seconds) overrides the configured one; without either, 10 s: never wait forever.
        """
        self.url = str(conf["url"]).rstrip("/")
        auth = None
        if conf.get("basic.auth.user.info"):
            user, _, password = str(conf["basic.auth.user.info"]).partition(":")
            auth = httpx.BasicAuth(user, password)
        verify: Any = conf.get("ssl.ca.location") or True
        seconds = float(timeout if timeout is not None else conf.get("timeout") or 10.0)
        self._http = httpx.Client(
            base_url=self.url, auth=auth, verify=verify, timeout=seconds, headers={"Accept": CONTENT_TYPE}
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.HTTPError as exc:
            raise self.error(
                f"schema registry {self.url}: {what} failed: {type(exc).__name__}: {exc}",
                hint=UNREACHABLE_HINT,
            ) from exc

    def _call(self, method: str, path: str, what: str, body: Any = None) -> tuple[int, Any]:
        with self._errors(what):
            resp = self._http.request(
                method,
                path,
                content=None if body is None else json.dumps(body),
                headers={"Content-Type": CONTENT_TYPE} if body is not None else None,
            )
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = {"message": resp.text[:500]}
        if resp.status_code >= 500 or resp.status_code in (401, 403):
            raise self.error(
                f"schema registry {self.url}: {what}: HTTP {resp.status_code}: {_message(data)}",
                hint="check the registry's logs and credentials "
                "(connections.registry, CDCROUTER_REGISTRY__BASIC_AUTH_USER_INFO)",
            )
        return resp.status_code, data

    def _expect_ok(self, status: int, data: Any, what: str) -> None:
        if status >= 400:
            raise self.error(f"schema registry {self.url}: {what}: HTTP {status}: {_message(data)}")

    def schema_by_id(self, schema_id: int) -> str | None:
        """The schema text registered under ``schema_id``, or None if the registry has no such id."""
        status, data = self._call("GET", f"/schemas/ids/{schema_id}", f"fetching schema id {schema_id}")
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            return None
        self._expect_ok(status, data, f"fetching schema id {schema_id}")
        return str(data["schema"])

    def lookup(self, subject: str, schema: str | Mapping[str, Any]) -> int | None:
        """The id of ``schema`` under ``subject`` if it is registered there, else None."""
        status, data = self._call(
            "POST", f"/subjects/{subject}", f"looking up {subject}", {"schema": schema_json(schema)}
        )
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            return None
        self._expect_ok(status, data, f"looking up {subject}")
        return int(data["id"])

    def latest(self, subject: str) -> dict[str, Any] | None:
        """``{subject, version, id, schema}`` of the newest version, or None for a new subject."""
        status, data = self._call("GET", f"/subjects/{subject}/versions/latest", f"reading {subject}")
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            return None
        self._expect_ok(status, data, f"reading {subject}")
        return dict(data)

    def versions(self, subject: str) -> list[dict[str, Any]]:
        """Every version of ``subject``, oldest first (``{subject, version, id, schema}`` each);
        empty for a new subject."""
        status, data = self._call("GET", f"/subjects/{subject}/versions", f"listing {subject}")
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            return []
        self._expect_ok(status, data, f"listing {subject}")
        out = []
        for number in sorted(int(v) for v in data or []):
            what = f"reading {subject} v{number}"
            status, item = self._call("GET", f"/subjects/{subject}/versions/{number}", what)
            if status == 404 or _code(item) in NOT_FOUND_CODES:
                continue  # deleted meanwhile
            self._expect_ok(status, item, what)
            out.append(dict(item))
        return out

    def compatibility(self, subject: str) -> str | None:
        """The subject's compatibility level (the global one if it has none of its own)."""
        status, data = self._call(
            "GET", f"/config/{subject}?defaultToGlobal=true", f"reading {subject} config"
        )
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            status, data = self._call("GET", "/config", "reading the global config")
            if status >= 400:
                return None
        return (data or {}).get("compatibilityLevel") or (data or {}).get("compatibility")

    def set_compatibility(self, subject: str, level: str) -> None:
        status, data = self._call(
            "PUT", f"/config/{subject}", f"setting {subject} compatibility", {"compatibility": level}
        )
        self._expect_ok(status, data, f"setting {subject} compatibility to {level}")

    def check(
        self, subject: str, schema: str | Mapping[str, Any], level: str | None = None
    ) -> tuple[bool, list[str]]:
        """Would the registry accept ``schema`` as the next version of ``subject`` under ``level``?

        A ``*_TRANSITIVE`` level is checked against every version (``/versions``, which Confluent
        documents as the check ``register`` does); any other level against the latest only, because
        Apicurio 3.3.3 checks ``/versions`` against all versions whatever the level (found here)."""
        target = "versions" if level and level.endswith("_TRANSITIVE") else "versions/latest"
        status, data = self._call(
            "POST",
            f"/compatibility/subjects/{subject}/{target}?verbose=true",
            f"checking {subject} compatibility",
            {"schema": schema_json(schema)},
        )
        if status == 404 or _code(data) in NOT_FOUND_CODES:
            return True, []  # a new subject accepts anything
        if status >= 400:
            return False, [_message(data)]
        messages = [str(m) for m in (data or {}).get("messages") or []]
        return bool((data or {}).get("is_compatible")), messages

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register ``schema`` (text or parsed JSON) under ``subject``; returns its id (idempotent)."""
        status, data = self._call(
            "POST", f"/subjects/{subject}/versions", f"registering {subject}", {"schema": schema_json(schema)}
        )
        if status in (409, 422):
            raise SchemaRefused(
                f"schema registry refused the new schema for {subject}: {_message(data)}",
                hint="make the change compatible (add fields with defaults) or change the subject's "
                "compatibility level on purpose (--compatibility)",
            )
        self._expect_ok(status, data, f"registering {subject}")
        return int(data["id"])


def _code(data: Any) -> int | None:
    return data.get("error_code") if isinstance(data, dict) else None


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message") or data)
    return str(data)


@dataclass(frozen=True)
class SchemaChange:
    """What ``apply`` would do for one subject."""

    subject: str
    schema_text: str
    action: str  # "register" (new subject or new version) | "none" (already registered)
    current_version: int | None = None
    current_compatibility: str | None = None
    desired_compatibility: str | None = None
    compatible: bool = True
    messages: tuple[str, ...] = ()
    schema_id: int | None = None
    derived_from: str | None = None  # "<raw subject> v<n> (id <id>)": a filtered schema derived from it

    @property
    def sets_compatibility(self) -> bool:
        return (
            self.desired_compatibility is not None
            and self.current_compatibility != self.desired_compatibility
        )

    @property
    def is_change(self) -> bool:
        return self.action != "none" or self.sets_compatibility

    def describe(self) -> str:
        parts = []
        if self.action == "register":
            new = (
                "new subject"
                if self.current_version is None
                else f"new version after v{self.current_version}"
            )
            parts.append(f"+ register {self.subject} ({new})")
        else:
            parts.append(f"  {self.subject}: up to date (id {self.schema_id})")
        if self.derived_from:
            parts[-1] += f", derived from {self.derived_from}"
        if self.sets_compatibility and self.current_version is None:
            parts[-1] += f", compatibility {self.desired_compatibility}"
        elif self.sets_compatibility:
            parts.append(
                f"~ set {self.subject} compatibility "
                f"{self.current_compatibility} -> {self.desired_compatibility}"
            )
        if not self.compatible:
            detail = "; ".join(self.messages) or "the registry gave no details"
            parts.append(f"! INCOMPATIBLE with {self.subject} v{self.current_version}: {detail}")
        return "\n".join(parts)


@dataclass
class SchemaPlan:
    changes: list[SchemaChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def incompatible(self) -> list[SchemaChange]:
        return [c for c in self.changes if not c.compatible]

    @property
    def pending(self) -> list[SchemaChange]:
        return [c for c in self.changes if c.is_change]

    def render(self) -> str:
        if not self.changes:
            return "no subjects"
        lines = [c.describe() for c in self.changes] + self.warnings
        unsafe = sorted(
            {c.desired_compatibility for c in self.changes if c.desired_compatibility} - READER_SAFE_LEVELS
        )
        for level in unsafe:
            lines.append(
                f"! compatibility {level} lets a new raw schema break readers of the older ones "
                f"(the router, consumers); {DEFAULT_COMPATIBILITY} keeps them working"
            )
        summary = f"{len(self.pending)} subject(s) to change, {len(self.incompatible)} incompatible"
        return "\n".join([*lines, summary])


def desired_subjects(raw_topic: str, filtered_topics: list[str]) -> dict[str, str]:
    """Subject -> schema text: the raw schema for the raw topic, the filtered one for the rest."""
    from cdcrouter.schemas import filtered_schema_text, raw_schema_text

    out = {subject_for(raw_topic): raw_schema_text()}
    for topic in filtered_topics:
        out[subject_for(topic)] = filtered_schema_text()
    return out


def plan_schemas(
    client: RegistryClient, subjects: dict[str, str], compatibility: str | None = DEFAULT_COMPATIBILITY
) -> SchemaPlan:
    """Compare the desired subjects with the registry; reads only.

    A new version is checked under the subject's current level; when the plan also changes the
    level, ``apply_schemas`` checks it again under the new one before registering."""
    if compatibility is not None and compatibility not in COMPATIBILITY_LEVELS:
        raise SchemaRegistryError(
            f"unknown compatibility level {compatibility!r}",
            hint=f"use one of {', '.join(COMPATIBILITY_LEVELS)}",
        )
    plan = SchemaPlan()
    for subject, text in subjects.items():
        latest = client.latest(subject)
        current_level = client.compatibility(subject) if latest is not None else None
        if latest is None:
            plan.changes.append(SchemaChange(subject, text, "register", None, None, compatibility, True, ()))
            continue
        existing = client.lookup(subject, text)
        if existing is not None:
            plan.changes.append(
                SchemaChange(
                    subject,
                    text,
                    "none",
                    latest.get("version"),
                    current_level,
                    compatibility,
                    schema_id=existing,
                )
            )
            continue
        ok, messages = client.check(subject, text, current_level)
        plan.changes.append(
            SchemaChange(
                subject,
                text,
                "register",
                latest.get("version"),
                current_level,
                compatibility,
                ok,
                tuple(messages),
            )
        )
    return plan


def apply_schemas(client: RegistryClient, plan: SchemaPlan) -> dict[str, int]:
    """Carry out ``plan``; refuses everything if any change is incompatible. Returns subject -> id."""
    if plan.incompatible:
        lines = [c.describe() for c in plan.incompatible]
        raise SchemaRegistryError(
            "refusing to register incompatible schema(s):\n" + "\n".join(lines),
            hint="make the change compatible both ways (new fields need defaults, removed fields must "
            "have had one), or register it under a new topic; nothing was changed",
        )
    for change in plan.changes:
        if change.sets_compatibility and change.desired_compatibility:
            client.set_compatibility(change.subject, change.desired_compatibility)
    # a level just made stricter: the plan's check ran under the old one
    new_levels = {c.subject: c.desired_compatibility for c in plan.changes if c.sets_compatibility}
    refused = []
    for change in plan.changes:
        level = new_levels.get(change.subject)
        if change.action == "register" and level and change.current_version is not None:
            ok, messages = client.check(change.subject, change.schema_text, level)
            if not ok:
                detail = "; ".join(messages) or "the registry gave no details"
                refused.append(f"! INCOMPATIBLE with {change.subject} under {level}: {detail}")
    if refused:
        raise SchemaRegistryError(
            "refusing to register incompatible schema(s):\n" + "\n".join(refused),
            hint="the subjects' compatibility levels were set; no schema was registered. Make the change "
            "compatible (new fields need defaults, removed fields must have had one)",
        )
    ids: dict[str, int] = {}
    for change in plan.changes:
        if change.action == "register":
            schema_id = client.register(change.subject, change.schema_text)
        else:
            schema_id = change.schema_id
        if schema_id is not None and change.derived_from is None:
            ids[change.subject] = schema_id
    return ids


def plan_derived(
    client: RegistryClient, plan: SchemaPlan, raw_topic: str, filtered_topics: list[str]
) -> None:
    """Add to ``plan`` the filtered schema derived from every version of the raw subject that is not
    the contract but that the contract can read (an evolved raw schema, registered by a newer
    capture), under every filtered subject; reads only.

    The router registers these itself when it meets such records; planning them here shows before
    routing whether the filtered subjects accept them, and lets a router with read-only registry
    credentials find them. A raw version the contract cannot read becomes a warning: the router
    would dead-letter its records."""
    import fastavro
    from fastavro.schema import to_parsing_canonical_form

    from cdcrouter.schemas import parsed_raw_schema
    from cdcrouter.schemas.evolution import derived_filtered_text, resolution_problem

    raw_subject = subject_for(raw_topic)
    contract = to_parsing_canonical_form(parsed_raw_schema())
    for version in client.versions(raw_subject):
        label = f"{raw_subject} v{version.get('version')} (id {version.get('id')})"
        try:
            parsed = fastavro.parse_schema(json.loads(version["schema"]))
        except Exception as exc:  # fastavro's parse errors come in many types
            plan.warnings.append(f"! {label} is not a usable Avro schema: {exc}")
            continue
        if to_parsing_canonical_form(parsed) == contract:
            continue
        problem = resolution_problem(parsed, parsed_raw_schema())
        if problem is None:
            try:
                derived = derived_filtered_text(version["schema"])
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            plan.warnings.append(
                f"! {label} cannot be read by this release's contract: {problem}; "
                "the router dead-letters its records"
            )
            continue
        for topic in filtered_topics:
            subject = subject_for(topic)
            existing = client.lookup(subject, derived)
            latest = client.latest(subject)
            level = client.compatibility(subject) if latest is not None else None
            version_no = latest.get("version") if latest else None
            if existing is not None:
                plan.changes.append(
                    SchemaChange(
                        subject, derived, "none", version_no, level, schema_id=existing, derived_from=label
                    )
                )
                continue
            ok, messages = client.check(subject, derived, level) if latest else (True, [])
            plan.changes.append(
                SchemaChange(
                    subject,
                    derived,
                    "register",
                    version_no,
                    level,
                    None,
                    ok,
                    tuple(messages),
                    derived_from=label,
                )
            )


def ensure_schema(
    client: RegistryClient,
    subject: str,
    schema: str | Mapping[str, Any],
    compatibility: str | None = DEFAULT_COMPATIBILITY,
) -> int:
    """Plan and apply one subject (what ``schemas apply`` does for it); returns the schema id.

    Capture registers the raw schema this way, so it gets the same level and the same check."""
    return apply_schemas(client, plan_schemas(client, {subject: schema_json(schema)}, compatibility))[subject]
