"""Flink for the local stack: PyFlink's bundled Flink plus connector jars from Maven Central.

PyPI's ``apache-flink`` ships a whole Flink (``pyflink/{bin,lib,opt,conf}``) but neither the Kafka
connector, the avro-confluent format nor the SQL Gateway. ``jvm/flink/pom.xml`` resolves those
into the jar cache. PyFlink's own Flink (``bin``, ``lib``, ``opt``, ``conf``) is copied once into the
jar cache too (``flink-dist-<version>``, hard links where the file system allows), and the cluster
runs from there: a Flink started from one venv used to link into that venv's site-packages, so
deleting the venv broke the running cluster and every later start. A private layout under the
state dir (``<state>/flink/{conf,lib,opt,log}``) holds our config and symlinks into the cache, so
site-packages is never written to. A lib with a broken link (its target deleted) makes the
services unhealthy (:func:`lib_problems`) instead of "already running".

Three processes, each a :class:`~cdcrouter.stack.service.Service`: the JobManager (REST 8081),
one TaskManager, and the SQL Gateway (REST 8091; Connect owns 8083). Heaps are small: the three
stay near 1.5 GB together. A ``<state>/flink/config-overrides.json`` (an object of config keys; a
``null`` value removes a default key) is merged over these defaults: the fair Flink benchmark
sizes its private cluster that way (``cdcrouter.bench.flink``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from cdcrouter.errors import StackError
from cdcrouter.stack import versions
from cdcrouter.stack.fetch import STAMP, component_dir, is_complete, mvn_fetch
from cdcrouter.stack.service import HOST, Service, StackContext, jvm_dir

log = logging.getLogger("cdcrouter.stack")

PYFLINK_HINT = "pip install 'cdcrouter[flink]'  (PyFlink bundles the Flink runtime)"

# Memory: JM ~512 MB + TM ~704 MB + gateway ~350 MB (heap 192 MB) keeps Flink near 1.5 GB.
JOBMANAGER_PROCESS_MB = 512
TASKMANAGER_PROCESS_MB = 704
GATEWAY_HEAP_MB = 192
TASK_SLOTS = 4
GATEWAY_JAVA_OPTS = f"-Xmx{GATEWAY_HEAP_MB}m -Xms64m -XX:MaxMetaspaceSize=192m -XX:+UseSerialGC"
OVERRIDES_FILE = "config-overrides.json"


def pyflink_home() -> Path:
    """The Flink distribution inside the installed PyFlink (``site-packages/pyflink``).

    Raises:
        StackError: PyFlink is not installed, or its version differs from ``versions.FLINK``.
    """
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.origin:
        raise StackError(
            "PyFlink is not installed: Flink runs from the apache-flink package", hint=PYFLINK_HINT
        )
    home = Path(spec.origin).parent
    dist = sorted((home / "lib").glob("flink-dist-*.jar"))
    if not dist:
        raise StackError(f"PyFlink at {home} has no lib/flink-dist-*.jar", hint=PYFLINK_HINT)
    found = dist[0].name.removeprefix("flink-dist-").removesuffix(".jar")
    if found != versions.FLINK:
        raise StackError(
            f"PyFlink bundles Flink {found}, but the stack pins {versions.FLINK} (connector jars match that)",
            hint=f"pip install apache-flink=={versions.FLINK}",
        )
    return home


def stable_home(cache_dir: Path) -> Path:
    """PyFlink's Flink distribution copied into the jar cache (one folder per Flink version), so the
    cluster no longer depends on the venv that started it. Copied once, from the installed PyFlink
    (hard links when on the same file system: no extra space, and they outlive the venv).

    Raises:
        StackError: the copy is missing and PyFlink is not installed (or has another version).
    """
    dest = component_dir(cache_dir, f"flink-dist-{versions.FLINK}")
    if is_complete(dest) and (dest / "lib" / f"flink-dist-{versions.FLINK}.jar").is_file():
        return dest
    home = pyflink_home()
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in ("bin", "lib", "opt", "conf"):
        shutil.copytree(home / part, tmp / part, copy_function=_link_or_copy)
    (tmp / STAMP).write_text(f"copied from {home}\n")
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    try:
        tmp.rename(dest)
    except OSError:  # another process published it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(dest):
            raise
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def lib_problems(layout: FlinkLayout) -> list[str]:
    """Links in the layout's ``lib``/``opt`` whose target is gone (a deleted venv or cache): a
    cluster running on them fails on its next class load or restart."""
    problems = []
    for folder in (layout.lib, layout.opt):
        if not folder.is_dir():
            problems.append(f"{folder} is missing")
            continue
        problems += [
            f"{entry} -> {os.readlink(entry)} (gone)" for entry in folder.iterdir() if not entry.exists()
        ]
    if not any(layout.lib.glob("flink-dist-*.jar")) and layout.lib.is_dir():
        problems.append(f"{layout.lib} has no flink-dist jar")
    return problems


def _jar_names() -> dict[str, str]:
    return {
        "kafka": f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR}.jar",
        "avro-confluent": f"flink-sql-avro-confluent-registry-{versions.FLINK_AVRO_CONFLUENT}.jar",
        "sql-gateway": f"flink-sql-gateway-{versions.FLINK_SQL_GATEWAY}.jar",
    }


def jars_dir(cache_dir: Path) -> Path:
    """The cache folder for this version set (a version bump fetches a new folder)."""
    tag = f"{versions.FLINK_KAFKA_CONNECTOR}_{versions.FLINK_AVRO_CONFLUENT}_{versions.FLINK_SQL_GATEWAY}"
    return component_dir(cache_dir, f"flink-{tag}")


def fetch_flink_jars(cache_dir: Path, *, allow_fetch: bool = True) -> list[Path]:
    """Make the Kafka connector, avro-confluent and SQL Gateway jars present; return their paths.

    Raises:
        StackError: Maven is missing or cannot resolve them, or the cache is empty and fetching
            is not allowed.
    """
    dest = jars_dir(cache_dir)
    if not is_complete(dest):
        if not allow_fetch:
            raise StackError(
                f"the jar cache {dest} has no Flink connector jars",
                hint="run `cdcrouter stack fetch` (needs Maven and Maven Central)",
            )
        props = {
            "flink.kafka.connector.version": versions.FLINK_KAFKA_CONNECTOR,
            "flink.avro.confluent.version": versions.FLINK_AVRO_CONFLUENT,
            "flink.sql.gateway.version": versions.FLINK_SQL_GATEWAY,
        }
        mvn_fetch(jvm_dir() / "flink" / "pom.xml", dest, props)
    paths = [dest / name for name in _jar_names().values()]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise StackError(
            f"the jar cache {dest} lacks {missing}",
            hint=f"delete {dest} and run `cdcrouter stack fetch` again",
        )
    return paths


def connector_jars(cache_dir: Path, *, allow_fetch: bool = True) -> list[Path]:
    """The jars a Flink SQL job needs on its class path (Kafka connector, avro-confluent format)."""
    return [p for p in fetch_flink_jars(cache_dir, allow_fetch=allow_fetch) if "gateway" not in p.name]


@dataclass(frozen=True)
class FlinkLayout:
    """Our own FLINK_CONF_DIR/LIB/OPT/LOG folders under the state dir."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def opt(self) -> Path:
        return self.root / "opt"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"


def _link_dir(dest: Path, sources: list[Path]) -> None:
    """Make ``dest`` hold exactly one symlink per source (idempotent, stale links removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    want = {src.name: src for src in sources}
    for entry in dest.iterdir():
        if entry.name not in want or not entry.is_symlink() or entry.resolve() != want[entry.name].resolve():
            entry.unlink()
    for name, src in want.items():
        link = dest / name
        if not link.is_symlink():
            link.symlink_to(src)


def flink_config(ports: dict[str, int], layout: FlinkLayout) -> dict[str, Any]:
    """The ``config.yaml`` keys for a small loopback session cluster plus gateway."""
    return {
        "jobmanager.rpc.address": HOST,
        "jobmanager.rpc.port": ports.get("flink-rpc", 6123),
        "jobmanager.bind-host": HOST,
        "jobmanager.memory.process.size": f"{JOBMANAGER_PROCESS_MB}m",
        "jobmanager.memory.jvm-metaspace.size": "128m",
        "jobmanager.memory.jvm-overhead.min": "64m",
        "jobmanager.memory.off-heap.size": "64m",
        "taskmanager.host": HOST,
        "taskmanager.bind-host": HOST,
        "taskmanager.numberOfTaskSlots": TASK_SLOTS,
        "taskmanager.memory.process.size": f"{TASKMANAGER_PROCESS_MB}m",
        "taskmanager.memory.jvm-metaspace.size": "160m",
        "taskmanager.memory.jvm-overhead.min": "64m",
        "taskmanager.memory.managed.size": "64m",
        "taskmanager.memory.network.min": "32m",
        "taskmanager.memory.network.max": "32m",
        "rest.address": HOST,
        "rest.bind-address": HOST,
        "rest.port": ports["flink-rest"],
        "parallelism.default": 1,
        "blob.server.port": "0",
        "sql-gateway.endpoint.rest.address": HOST,
        "sql-gateway.endpoint.rest.bind-address": HOST,
        "sql-gateway.endpoint.rest.port": ports["sql-gateway"],
        "env.java.opts.sql-gateway": GATEWAY_JAVA_OPTS,
        "env.log.dir": str(layout.log),
        "env.pid.dir": str(layout.run),
        "io.tmp.dirs": str(layout.root / "tmp"),
        "web.tmpdir": str(layout.root / "tmp"),
        "execution.checkpointing.dir": f"file://{layout.root / 'checkpoints'}",
        "execution.checkpointing.savepoint-dir": f"file://{layout.root / 'savepoints'}",
    }


def prepare_layout(
    state_dir: Path, cache_dir: Path, ports: dict[str, int], *, allow_fetch: bool = True
) -> FlinkLayout:
    """Write ``<state>/flink/conf`` and link Flink's jars (the cache's copy of PyFlink's) plus ours
    into ``lib``/``opt``. Idempotent."""
    home = stable_home(cache_dir)
    jars = {p.name: p for p in fetch_flink_jars(cache_dir, allow_fetch=allow_fetch)}
    layout = FlinkLayout(state_dir / "flink")
    for d in (layout.conf, layout.log, layout.run, layout.root / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    for src in (home / "conf").iterdir():
        if src.is_file() and src.name != "config.yaml":
            shutil.copyfile(src, layout.conf / src.name)
    config = flink_config(ports, layout)
    overrides = layout.root / OVERRIDES_FILE
    if overrides.is_file():
        for key, value in json.loads(overrides.read_text()).items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
    lines = [f"{key}: {_yaml_scalar(value)}" for key, value in config.items()]
    (layout.conf / "config.yaml").write_text(
        "# written by cdcrouter.stack.flink; edits are overwritten\n" + "\n".join(lines) + "\n"
    )
    gateway = [p for n, p in jars.items() if "gateway" in n]
    _link_dir(
        layout.lib, sorted((home / "lib").glob("*.jar")) + [p for n, p in jars.items() if "gateway" not in n]
    )
    _link_dir(layout.opt, sorted((home / "opt").glob("*.jar")) + gateway)
    return layout


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def _flink_env(ctx: StackContext) -> dict[str, str]:
    layout = FlinkLayout(ctx.state_dir / "flink")
    env = dict(os.environ)
    java = Path(ctx.java).resolve()
    env.update(
        FLINK_CONF_DIR=str(layout.conf),
        FLINK_LIB_DIR=str(layout.lib),
        FLINK_OPT_DIR=str(layout.opt),
        FLINK_LOG_DIR=str(layout.log),
        FLINK_PID_DIR=str(layout.run),
        JAVA_HOME=str(java.parent.parent),
    )
    env.pop("FLINK_HOME", None)
    env.pop("HADOOP_CLASSPATH", None)
    return env


_reported: set[str] = set()


def _lib_intact(ctx: StackContext) -> bool:
    """Health: a Flink whose lib links lead nowhere is not healthy, whatever its REST API says."""
    layout = FlinkLayout(ctx.state_dir / "flink")
    problems = lib_problems(layout)
    if problems and str(layout.root) not in _reported:
        _reported.add(str(layout.root))
        log.warning(
            "Flink's lib under %s is broken (%s); restart it: cdcrouter stack down --only flink && "
            "cdcrouter stack up --only flink",
            layout.root,
            "; ".join(problems[:3]),
        )
    return not problems


def _get_json(url: str) -> Any | None:
    try:
        resp = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


class FlinkJobManager(Service):
    """The session cluster's JobManager (dispatcher, REST API and web UI on ``flink-rest``)."""

    name = "flink-jobmanager"
    version = versions.FLINK
    port_keys = ("flink-rest",)
    start_timeout: ClassVar[float] = 90.0

    def fetch(self, ctx: StackContext) -> None:
        # Jars only: `stack fetch` works without the [flink] extra; `up` checks PyFlink in prepare().
        fetch_flink_jars(ctx.cache_dir, allow_fetch=ctx.allow_fetch)

    def prepare(self, ctx: StackContext) -> None:
        prepare_layout(ctx.state_dir, ctx.cache_dir, ctx.ports, allow_fetch=ctx.allow_fetch)

    def command(self, ctx: StackContext) -> list[str]:
        return ["bash", str(stable_home(ctx.cache_dir) / "bin" / "jobmanager.sh"), "start-foreground"]

    def env(self, ctx: StackContext) -> dict[str, str]:
        return _flink_env(ctx)

    def ready(self, ctx: StackContext) -> bool:
        return _lib_intact(ctx) and _get_json(f"http://{HOST}:{ctx.port('flink-rest')}/overview") is not None

    def endpoint(self, ctx: StackContext) -> str:
        return f"http://{HOST}:{ctx.port('flink-rest')}"


class FlinkTaskManager(Service):
    """One TaskManager with a few slots; ready once the JobManager lists it."""

    name = "flink-taskmanager"
    version = versions.FLINK
    port_keys = ()  # no fixed port of its own: it registers with the JobManager
    depends_on = ("flink-jobmanager",)
    start_timeout: ClassVar[float] = 90.0

    def prepare(self, ctx: StackContext) -> None:
        prepare_layout(ctx.state_dir, ctx.cache_dir, ctx.ports, allow_fetch=ctx.allow_fetch)

    def command(self, ctx: StackContext) -> list[str]:
        return ["bash", str(stable_home(ctx.cache_dir) / "bin" / "taskmanager.sh"), "start-foreground"]

    def env(self, ctx: StackContext) -> dict[str, str]:
        return _flink_env(ctx)

    def ready(self, ctx: StackContext) -> bool:
        data = _get_json(f"http://{HOST}:{ctx.port('flink-rest')}/taskmanagers")
        return _lib_intact(ctx) and bool(data and data.get("taskmanagers"))

    def endpoint(self, ctx: StackContext) -> str:
        return f"{TASK_SLOTS} slots via http://{HOST}:{ctx.port('flink-rest')}"


class FlinkSqlGateway(Service):
    """The SQL Gateway REST endpoint: how users deploy statements to self-managed Flink."""

    name = "sql-gateway"
    version = versions.FLINK_SQL_GATEWAY
    port_keys = ("sql-gateway",)
    depends_on = ("flink-taskmanager",)
    start_timeout: ClassVar[float] = 90.0

    def prepare(self, ctx: StackContext) -> None:
        prepare_layout(ctx.state_dir, ctx.cache_dir, ctx.ports, allow_fetch=ctx.allow_fetch)

    def command(self, ctx: StackContext) -> list[str]:
        return [
            "bash",
            str(stable_home(ctx.cache_dir) / "bin" / "sql-gateway.sh"),
            "start-foreground",
            f"-Dsql-gateway.endpoint.rest.address={HOST}",
            f"-Dsql-gateway.endpoint.rest.port={ctx.port('sql-gateway')}",
        ]

    def env(self, ctx: StackContext) -> dict[str, str]:
        return _flink_env(ctx)

    def ready(self, ctx: StackContext) -> bool:
        return _lib_intact(ctx) and _get_json(f"http://{HOST}:{ctx.port('sql-gateway')}/v1/info") is not None

    def endpoint(self, ctx: StackContext) -> str:
        return f"http://{HOST}:{ctx.port('sql-gateway')}"

    def connections(self, ctx: StackContext) -> dict[str, Any]:
        return {
            "flink": {
                "sql_gateway_url": f"http://{HOST}:{ctx.port('sql-gateway')}",
                "rest_url": f"http://{HOST}:{ctx.port('flink-rest')}",
            }
        }


FLINK_SERVICES: tuple[type[Service], ...] = (FlinkJobManager, FlinkTaskManager, FlinkSqlGateway)
