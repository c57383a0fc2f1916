"""Client for Confluent Cloud for Apache Flink's statements API (``/sql/v1``).

Follows the published OpenAPI (confluentinc/ccloud-sdk-go-v2 ``flink-gateway/v1/api/openapi.yaml``):
create (201, 409 if the name exists), list (``page_size`` ≤ 100, next page in ``metadata.next``),
get (404 after delete), update by PUT of the whole object with ``metadata.resource_version`` (409 on
a stale version: read again and retry), delete (202). Stop and resume flip ``spec.stopped``; the SQL
text is immutable. Basic auth with a Flink API key; the secret never leaves :class:`httpx.BasicAuth`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from cdcrouter.errors import ConfigError, DeployError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_MAX = 100
RUNNING_PHASES = ("PENDING", "RUNNING", "DEGRADED")
FAILED_PHASES = ("FAILED", "FAILING")


def check_name(name: str) -> None:
    """Refuse a statement name Confluent Cloud would reject, before any request."""
    if len(name) > NAME_MAX or not NAME_RE.match(name):
        raise DeployError(
            f"statement name {name!r} is not valid on Confluent Cloud",
            hint="use at most 100 characters: lowercase letters, digits, '-' (not at either end), '.'",
        )


def _failure(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        return "; ".join(str(e.get("detail") or e.get("title") or e) for e in errors)
    return str(body)[:300]


class StatementNotFound(DeployError):
    pass


class Conflict(DeployError):
    pass


class ConfluentCloudFlink:
    """Statements in one organization/environment."""

    def __init__(
        self,
        endpoint: str,
        organization_id: str,
        environment_id: str,
        api_key: str,
        api_secret: str,
        *,
        compute_pool_id: str | None = None,
        principal: str | None = None,
        catalog: str | None = None,
        database: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = (
            f"{endpoint.rstrip('/')}/sql/v1/organizations/{organization_id}/environments/{environment_id}"
        )
        self.organization_id = organization_id
        self.environment_id = environment_id
        self.compute_pool_id = compute_pool_id
        self.principal = principal
        self.catalog = catalog
        self.database = database
        self.client = httpx.Client(auth=httpx.BasicAuth(api_key, api_secret), timeout=timeout)

    @classmethod
    def from_settings(cls, cc: Any) -> ConfluentCloudFlink:
        """Build from ``Connections.confluent_cloud``; names every missing setting at once."""
        required = (
            "flink_endpoint",
            "organization_id",
            "environment_id",
            "flink_api_key",
            "flink_api_secret",
        )
        missing = [k for k in required if not getattr(cc, k)]
        if missing:
            env = ", ".join(f"CDCROUTER_CONFLUENT_CLOUD__{k.upper()}" for k in missing)
            raise ConfigError(
                f"Confluent Cloud settings missing: {', '.join(missing)}",
                hint=f"set {env} (or connections.confluent_cloud in cdcrouter.yaml, secrets as ${{ENV}})",
            )
        return cls(
            cc.flink_endpoint,
            cc.organization_id,
            cc.environment_id,
            cc.flink_api_key,
            cc.flink_api_secret.get_secret_value(),
            compute_pool_id=cc.compute_pool_id,
            principal=cc.principal,
            catalog=cc.catalog,
            database=cc.database,
        )

    def _call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            resp = self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise DeployError(
                f"{what}: cannot reach {url}: {exc}", hint="check confluent_cloud.flink_endpoint"
            ) from exc
        if resp.status_code == 404:
            raise StatementNotFound(f"{what}: not found ({_failure(resp)})")
        if resp.status_code == 409:
            raise Conflict(f"{what}: conflict: {_failure(resp)}")
        if resp.status_code in (401, 403):
            raise DeployError(
                f"{what}: Confluent Cloud refused the credentials (HTTP {resp.status_code})",
                hint="check the Flink API key/secret (CDCROUTER_CONFLUENT_CLOUD__FLINK_API_KEY/_SECRET) and "
                "that the key is for this region and environment",
            )
        if resp.status_code >= 400:
            raise DeployError(f"{what}: {_failure(resp)}", hint=f"HTTP {resp.status_code} from {url}")
        return resp.json() if resp.content else {}

    # -- the API ----------------------------------------------------------------------------

    def create(
        self, name: str, statement: str, properties: dict[str, str] | None = None, *, stopped: bool = False
    ) -> dict[str, Any]:
        check_name(name)
        props = {}
        if self.catalog:
            props["sql.current-catalog"] = self.catalog
        if self.database:
            props["sql.current-database"] = self.database
        props.update(properties or {})
        spec: dict[str, Any] = {"statement": statement, "properties": props, "stopped": stopped}
        if self.compute_pool_id:
            spec["compute_pool_id"] = self.compute_pool_id
        if self.principal:
            spec["principal"] = self.principal
        body = {
            "name": name,
            "organization_id": self.organization_id,
            "environment_id": self.environment_id,
            "spec": spec,
        }
        return dict(self._call("POST", "/statements", f"create statement {name}", json=body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/statements/{name}", f"statement {name}"))

    def find(self, name: str) -> dict[str, Any] | None:
        try:
            return self.get(name)
        except StatementNotFound:
            return None

    def list(self, page_size: int = 100) -> list[dict[str, Any]]:
        """Every statement in the environment, following ``metadata.next`` page by page."""
        out: list[dict[str, Any]] = []
        url: str | None = f"/statements?page_size={min(page_size, 100)}"
        while url:
            page = self._call("GET", url, "list statements")
            out.extend(page.get("data", []))
            url = (page.get("metadata") or {}).get("next") or None
        return out

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/statements/{name}", f"delete statement {name}")

    def set_stopped(self, name: str, stopped: bool, retries: int = 5) -> dict[str, Any]:
        """Stop or resume: read, flip ``spec.stopped``, PUT with the read ``resource_version``.

        A 409 means someone (often the service itself) changed the statement since we read it:
        read again and retry.
        """
        for attempt in range(retries):
            current = self.get(name)
            if bool(current["spec"].get("stopped")) == stopped:
                return current
            body = {k: current[k] for k in ("name", "organization_id", "environment_id", "metadata", "spec")}
            body["spec"] = {**current["spec"], "stopped": stopped}
            try:
                return dict(self._call("PUT", f"/statements/{name}", f"update statement {name}", json=body))
            except Conflict:
                time.sleep(0.1 * (attempt + 1))
        raise DeployError(
            f"statement {name} kept changing while we tried to {'stop' if stopped else 'resume'} it",
            hint="retry in a moment",
        )

    def stop(self, name: str) -> dict[str, Any]:
        return self.set_stopped(name, True)

    def resume(self, name: str) -> dict[str, Any]:
        return self.set_stopped(name, False)

    def exceptions(self, name: str) -> list[dict[str, Any]]:
        try:
            return list(self._call("GET", f"/statements/{name}/exceptions", "exceptions").get("data", []))
        except DeployError:
            return []

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float = 300.0) -> dict[str, Any]:
        """Poll until the statement reaches one of ``phases``; a failure raises with its detail."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.get(name)
            phase = (st.get("status") or {}).get("phase", "")
            if phase in phases:
                return st
            if phase in FAILED_PHASES and not set(phases) & set(FAILED_PHASES):
                detail = (st.get("status") or {}).get("detail", "")
                raise DeployError(
                    f"statement {name} {phase}: {detail}",
                    hint="see `cdcrouter deploy status --target confluent-cloud` for its exceptions",
                )
            if time.monotonic() > deadline:
                raise DeployError(
                    f"statement {name} still {phase} after {timeout:.0f}s (waiting for {phases})"
                )
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()


def parse_offsets(text: str) -> dict[int, int]:
    """``"partition:0,offset:100;partition:1,offset:200"`` → ``{0: 100, 1: 200}``."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = dict(kv.split(":", 1) for kv in part.split(","))
        out[int(fields["partition"])] = int(fields["offset"])
    return out


def format_offsets(offsets: dict[int, int]) -> str:
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(offsets.items()))
