"""The service model: a declarative spec per service plus the context it runs in.

To add a service (Flink does this from ``cdcrouter.stack.flink``), subclass :class:`Service`,
set the class attributes and override what differs: ``fetch`` (make artifacts present),
``prepare`` (write config, initialise data; idempotent), ``command``/``env`` (how to run it),
``ready`` (a real health check), ``after_start`` (one-off setup once healthy) and
``connections`` (its part of ``endpoints.json``). The manager does the rest: dependency order,
locking, port checks, PID files, logs, timeouts that show the last log lines, stop by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cdcrouter.errors import StackError

DEFAULT_PORTS: dict[str, int] = {
    "postgres": 55432,
    "kafka": 9092,
    "kafka-controller": 9093,
    "registry": 8080,
    "registry-management": 8090,  # Quarkus management (health, metrics); fixed on at build time
    "connect": 8083,
    "flink-rest": 8081,
    "flink-rpc": 6123,  # JobManager RPC (jobmanager.rpc.port); two Flinks on one host need two
    "sql-gateway": 8091,
}

HOST = "127.0.0.1"


def default_cache_dir() -> Path:
    """Where fetched jars live, shared by every state dir (``CDCROUTER_STACK_CACHE`` overrides)."""
    env = os.environ.get("CDCROUTER_STACK_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cdcrouter" / "stack"


def jvm_dir() -> Path:
    """The ``jvm/`` folder with the poms (``CDCROUTER_JVM_DIR`` overrides)."""
    env = os.environ.get("CDCROUTER_JVM_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "jvm"
    if not path.is_dir():
        raise StackError(
            f"the Maven poms folder {path} does not exist",
            hint="run from a cdcrouter source checkout, or set CDCROUTER_JVM_DIR to its jvm/ folder",
        )
    return path


@dataclass
class StackContext:
    """Where one stack lives: state dir, jar cache, ports, PostgreSQL major, whether fetching is allowed."""

    state_dir: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    allow_fetch: bool = True
    # The PostgreSQL major to run (None: the data dir's, else the default); the env var picks one too.
    pg_version: str | None = field(default_factory=lambda: os.environ.get("CDCROUTER_STACK_PG_VERSION"))

    def service_dir(self, name: str) -> Path:
        path = self.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def secrets_dir(self) -> Path:
        path = self.state_dir / "secrets"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        return path

    def port(self, key: str) -> int:
        return self.ports[key]

    _javas: dict[int, str] = field(default_factory=dict, repr=False)

    def java_for(self, minimum: int = 17) -> str:
        """The ``java`` to run a service needing Java ``minimum``+ (looked up once per minimum)."""
        if minimum not in self._javas:
            self._javas[minimum] = find_java(os.environ, minimum)
        return self._javas[minimum]

    @property
    def java(self) -> str:
        return self.java_for(17)


_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
JVM_ROOT = Path("/usr/lib/jvm")


def java_major(java: str) -> int:
    """The major version ``java -version`` reports (0 if it cannot be read)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    m = _JAVA_VERSION.search(out.stderr + out.stdout)
    if not m:
        return 0
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" style


def find_java(env: os._Environ[str] | dict[str, str], minimum: int = 17, jvm_root: Path = JVM_ROOT) -> str:
    """A ``java`` of at least ``minimum``: ``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``, else the
    newest suitable JDK under ``/usr/lib/jvm`` (Apicurio 3.3 needs 21+ while Debian 12 ships 17).

    Raises:
        StackError: ``JAVA_HOME`` is broken, or no Java of at least ``minimum`` exists.
    """
    java_home = env.get("JAVA_HOME")
    seen: list[str] = []
    chosen: list[str] = []  # the user's own choice: JAVA_HOME, else PATH
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not os.access(java, os.X_OK):
            raise StackError(
                f"JAVA_HOME={java_home} has no bin/java",
                hint=f"point JAVA_HOME at a Java {minimum}+ JDK or unset it to use the java on PATH",
            )
        chosen.append(str(java))
    on_path = shutil.which("java", path=env.get("PATH", ""))
    if on_path:
        chosen.append(on_path)
    for java in chosen:
        major = java_major(java)
        seen.append(f"{java} ({major or '?'})")
        if major >= minimum:
            return java
    best: tuple[int, str] | None = None
    installed = sorted(str(p) for p in jvm_root.glob("*/bin/java")) if jvm_root.is_dir() else []
    for java in installed:
        if java in chosen or not os.access(java, os.X_OK):
            continue
        major = java_major(java)
        seen.append(f"{java} ({major or '?'})")
        if major >= minimum and (best is None or major > best[0]):
            best = (major, java)
    if best:
        return best[1]
    if not seen:
        raise StackError(
            f"no Java found: Kafka, the registry and Connect need Java {minimum}+",
            hint=f"install a Java {minimum}+ JDK (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME",
        )
    raise StackError(
        f"no Java {minimum}+ found; found only: {', '.join(seen)}",
        hint=f"install a Java {minimum}+ JDK and set JAVA_HOME to it",
    )


class Service:
    """One local service. Subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    version: ClassVar[str]
    port_keys: ClassVar[tuple[str, ...]]  # keys into StackContext.ports; the first is the main port
    depends_on: ClassVar[tuple[str, ...]] = ()
    start_timeout: ClassVar[float] = 120.0
    stop_timeout: ClassVar[float] = 30.0
    stop_signal: ClassVar[int] = signal.SIGTERM
    java_min: ClassVar[int] = 17  # for JVM services: the oldest Java they run on

    def run_user(self) -> str | None:
        """The user to run as (None: ours). PostgreSQL refuses root, so it says ``postgres`` then."""
        return None

    def fetch(self, ctx: StackContext) -> None:
        """Make binaries/jars present (download only when ``ctx.allow_fetch``)."""

    def prepare(self, ctx: StackContext) -> None:
        """Write config files, initialise data dirs. Must be idempotent."""

    def command(self, ctx: StackContext) -> list[str]:
        raise NotImplementedError

    def env(self, ctx: StackContext) -> dict[str, str]:
        return dict(os.environ)

    def cwd(self, ctx: StackContext) -> Path:
        return ctx.service_dir(self.name)

    def ready(self, ctx: StackContext) -> bool:
        """A real health check: True once the service answers its protocol."""
        raise NotImplementedError

    def after_start(self, ctx: StackContext) -> str | None:
        """One-off setup once healthy (databases, internal topics, warm-up). Must be idempotent.
        Returns a line for ``up``'s report, or None."""
        return None

    def endpoint(self, ctx: StackContext) -> str:
        """A human-readable endpoint for ``status`` and ``up``."""
        return f"{HOST}:{ctx.port(self.port_keys[0])}"

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        """This service's part of ``endpoints.json`` (the shape of ``cdcrouter.config.Connections``)."""
        return {}

    # The serial collector has the smallest footprint; a service whose pauses are on the data path
    # (the broker) overrides this.
    gc_opts: tuple[str, ...] = ("-XX:+UseSerialGC",)

    def java_opts(self, heap_mb: int, gc_opts: tuple[str, ...] | None = None) -> list[str]:
        """Small-footprint JVM flags: the whole stack (with Flink) must fit in 6 GB on 2 cores.
        ``gc_opts`` replaces the class's collector flags (the broker picks its own per Java)."""
        return [
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 128)}m",
            *(self.gc_opts if gc_opts is None else gc_opts),
            "-XX:MaxMetaspaceSize=256m",
            "-XX:ReservedCodeCacheSize=96m",
            "-Djava.net.preferIPv4Stack=true",
            "-Djava.awt.headless=true",
        ]
