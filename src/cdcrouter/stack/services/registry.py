"""Apicurio Registry 3.x serving the Confluent Schema Registry API at ``/apis/ccompat/v7``.

Storage is an H2 *file* in the state dir (Apicurio's default is in-memory): schema ids survive a
registry restart for the life of the stack, and ``--purge`` clears them. The Quarkus management
interface (health, metrics; 9000 by default) is built in, so it moves to its own port (8090).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdcrouter.config.durations import env_seconds
from cdcrouter.errors import StackError
from cdcrouter.stack import fetch, versions
from cdcrouter.stack.service import HOST, Service, StackContext, jvm_dir

START_TIMEOUT_ENV = "CDCROUTER_REGISTRY_START_TIMEOUT_S"


def registry_home(ctx: StackContext) -> Path:
    dest = fetch.component_dir(ctx.cache_dir, f"apicurio-registry-{versions.APICURIO_REGISTRY}")
    if ctx.allow_fetch:
        fetch.mvn_fetch(
            jvm_dir() / "registry" / "pom.xml", dest, {"apicurio.version": versions.APICURIO_REGISTRY}
        )
    return fetch.require(dest, f"Apicurio Registry {versions.APICURIO_REGISTRY}", "quarkus-run.jar")


class Registry(Service):
    name = "registry"
    version = versions.APICURIO_REGISTRY
    port_keys = ("registry", "registry-management")
    heap_mb = 384
    java_min = 21  # Apicurio 3.3 is built for Java 21 (class file 65)

    @property
    def start_timeout(self) -> float:  # type: ignore[override]
        """How long `stack up` waits for the registry's health endpoint: Quarkus starts slowly on a
        loaded machine. ``CDCROUTER_REGISTRY_START_TIMEOUT_S`` (seconds), else 120."""
        return env_seconds(START_TIMEOUT_ENV, 120.0, StackError)

    def fetch(self, ctx: StackContext) -> None:
        registry_home(ctx)

    def command(self, ctx: StackContext) -> list[str]:
        db = ctx.service_dir(self.name) / "h2" / "registry"
        props = {
            "quarkus.http.host": HOST,
            "quarkus.http.port": str(ctx.port("registry")),
            "quarkus.management.host": HOST,  # management is built in: it can only be moved
            "quarkus.management.port": str(ctx.port("registry-management")),
            "quarkus.banner.enabled": "false",
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": f"jdbc:h2:file:{db};DB_CLOSE_ON_EXIT=FALSE",
            "apicurio.rest.deletion.group.enabled": "true",
            "apicurio.rest.deletion.artifact.enabled": "true",
            "apicurio.rest.deletion.artifact-version.enabled": "true",
        }
        return [
            ctx.java_for(self.java_min),
            *self.java_opts(self.heap_mb),
            *[f"-D{k}={v}" for k, v in props.items()],
            "-jar",
            str(registry_home(ctx) / "quarkus-run.jar"),
        ]

    def url(self, ctx: StackContext) -> str:
        return f"http://{HOST}:{ctx.port('registry')}/apis/ccompat/v7"

    def ready(self, ctx: StackContext) -> bool:
        import httpx

        try:
            return httpx.get(self.url(ctx) + "/subjects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def endpoint(self, ctx: StackContext) -> str:
        return self.url(ctx)

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        return {"registry": {"url": self.url(ctx)}}
