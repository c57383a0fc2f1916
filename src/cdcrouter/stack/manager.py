"""``Stack``: bring services up in dependency order, report status, stop by PID.

One file lock per state dir (``<state>/stack.lock``) serialises ``up``/``down``, so several
engineers' shells and test sessions can share one stack without racing. ``up`` is idempotent:
a service whose recorded PID is alive and whose health check passes is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdcrouter.errors import StackError, UsageError
from cdcrouter.stack.process import ProcessRecord, is_alive, kill_leftovers, launch, port_is_free, stop, tail
from cdcrouter.stack.regions import PRIMARY, REGION_PORTS, REGION_SERVICES, env_port_var, region_state_dir
from cdcrouter.stack.service import DEFAULT_PORTS, HOST, Service, StackContext, default_cache_dir
from cdcrouter.stack.services import groups, service_classes
from cdcrouter.stack.services.postgres import stack_major

if TYPE_CHECKING:
    from cdcrouter.config import Connections

Reporter = Callable[[str, str], None]  # (service name, message)


def default_state_dir() -> Path:
    return Path(os.environ.get("CDCROUTER_STATE_DIR", ".cdcrouter"))


def _env_ports(region: str = PRIMARY) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in DEFAULT_PORTS:
        raw = os.environ.get(env_port_var(key, region))
        if raw:
            out[key] = _port(key, raw)
    return out


def _port(key: str, raw: str | int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise UsageError(f"port for {key} must be 1-65535, got {raw!r}")
    return value


def parse_port_overrides(items: Iterable[str]) -> dict[str, int]:
    """``["kafka=19092", ...]`` → ``{"kafka": 19092}`` (keys from :data:`DEFAULT_PORTS`)."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULT_PORTS:
            raise UsageError(
                f"bad --port {item!r}: expected NAME=PORT with NAME one of {', '.join(DEFAULT_PORTS)}"
            )
        out[key] = _port(key, value)
    return out


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | unhealthy | stopped | dead
    pid: int | None
    ports: dict[str, int]
    version: str
    endpoint: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "ports": self.ports,
            "version": self.version,
            "endpoint": self.endpoint,
        }


class Stack:
    """The local stack in one state dir.

    Args:
        state_dir: where data, logs, PID files and secrets live (default ``$CDCROUTER_STATE_DIR``
            or ``.cdcrouter``).
        ports: explicit port overrides; otherwise ``CDCROUTER_STACK_PORT_<NAME>``, then the ports
            recorded by an earlier ``up`` in this state dir, then :data:`DEFAULT_PORTS`.
        cache_dir: the jar cache (default ``$CDCROUTER_STACK_CACHE`` or ``~/.cache/cdcrouter/stack``).
        allow_fetch: may ``up`` download missing jars/packages.
        pg_version: the PostgreSQL major (default ``$CDCROUTER_STACK_PG_VERSION``, else the data
            dir's, else 15).
        region: ``a`` (default) is this stack; ``b`` is the second Kafka region for disaster
            recovery in ``<state_dir>/region-b``, on its own ports (``CDCROUTER_STACK_B_PORT_<NAME>``),
            running only Kafka (see :mod:`cdcrouter.stack.regions`).
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        ports: dict[str, int] | None = None,
        cache_dir: str | Path | None = None,
        allow_fetch: bool = True,
        pg_version: str | None = None,
        region: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.region = (region or PRIMARY).lower()
        self.state_dir = region_state_dir(self.state_dir, self.region).absolute()
        merged = dict(DEFAULT_PORTS)
        merged.update(REGION_PORTS.get(self.region, {}))
        merged.update(self._recorded_ports())
        merged.update(_env_ports(self.region))
        merged.update(ports or {})
        self.ctx = StackContext(
            state_dir=self.state_dir,
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
            ports=merged,
            allow_fetch=allow_fetch,
        )
        if pg_version:
            self.ctx.pg_version = pg_version
        stack_major(self.ctx)  # an unsupported --pg-version is a usage error before anything starts
        self.services: dict[str, Service] = {
            cls.name: cls()
            for cls in service_classes()
            if self.region == PRIMARY or cls.name in REGION_SERVICES
        }
        self._fetch_lock = threading.Lock()

    # -- selection -----------------------------------------------------------------------------

    def resolve(self, only: Iterable[str] | None = None) -> list[Service]:
        """The selected services plus their dependencies, in start order."""
        names = list(only or self.services)
        grouped = groups()
        wanted: list[str] = []
        for name in names:
            wanted.extend(grouped.get(name, (name,)))
        unknown = [n for n in wanted if n not in self.services]
        if unknown:
            choices = ", ".join([*self.services, *grouped])
            raise UsageError(f"unknown service {', '.join(unknown)}; choose from {choices}")
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in path:
                raise StackError(f"dependency cycle: {' -> '.join((*path, name))}")
            for dep in self.services[name].depends_on:
                visit(dep, (*path, name))
            order.append(name)

        for name in self.services:  # catalogue order keeps output stable
            if name in wanted:
                visit(name, ())
        return [self.services[n] for n in order]

    # -- records -------------------------------------------------------------------------------

    def _recorded_ports(self) -> dict[str, int]:
        path = self.state_dir / "ports.json"
        try:
            return {k: int(v) for k, v in json.loads(path.read_text()).items() if k in DEFAULT_PORTS}
        except (OSError, ValueError, AttributeError):
            return {}

    def record(self, name: str) -> ProcessRecord | None:
        return ProcessRecord.load(self.ctx.pid_file(name))

    def running_record(self, name: str) -> ProcessRecord | None:
        rec = self.record(name)
        return rec if rec and is_alive(rec) else None

    @contextlib.contextmanager
    def lock(self, report: Reporter | None = None) -> Iterator[None]:
        """Hold ``<state>/stack.lock`` (waits while another up/down holds it)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "stack.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if report:
                    report("stack", f"waiting for another `stack up/down` on {self.state_dir}")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- commands ------------------------------------------------------------------------------

    def fetch(self, only: Iterable[str] | None = None, report: Reporter | None = None) -> None:
        """Download what the selected services need (jars, packages) into the cache."""
        self.ctx.allow_fetch = True
        for svc in self.resolve(only):
            if report:
                report(svc.name, "fetching")
            svc.fetch(self.ctx)
            if report:
                report(svc.name, "fetched")

    def up(self, only: Iterable[str] | None = None, report: Reporter | None = None) -> list[str]:
        """Start the selected services (and dependencies); return the names this call started."""
        started: list[str] = []
        with self.lock(report):
            (self.state_dir / "ports.json").write_text(json.dumps(self.ctx.ports, indent=2))
            try:
                for wave in self._waves(self.resolve(only)):
                    started += self._up_wave(wave, report)
            finally:
                self.write_endpoints()
        return started

    def _waves(self, services: list[Service]) -> list[list[Service]]:
        """Group services by dependency depth: each wave only needs earlier waves."""
        depth: dict[str, int] = {}
        for svc in services:  # already in dependency order
            depth[svc.name] = 1 + max((depth.get(d, -1) for d in svc.depends_on), default=-1)
        waves: list[list[Service]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for svc in services:
            waves[depth[svc.name]].append(svc)
        return waves

    def _up_wave(self, wave: list[Service], report: Reporter | None) -> list[str]:
        """Start one wave's services in parallel (JVM start-up waits on I/O as much as CPU)."""
        if len(wave) == 1:
            return [wave[0].name] if self._up_one(wave[0], report) else []
        with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="stack-up") as pool:
            futures = {svc.name: pool.submit(self._up_one, svc, report) for svc in wave}
            wait(futures.values())
        errors = [f.exception() for f in futures.values() if f.exception()]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return [name for name, f in futures.items() if f.result()]

    def _up_one(self, svc: Service, report: Reporter | None) -> bool:
        say = (lambda msg: report(svc.name, msg)) if report else (lambda msg: None)
        rec = self.running_record(svc.name)
        if rec is not None:
            if svc.ready(self.ctx):
                say(f"already running (pid {rec.pid})")
                return False
            say(f"pid {rec.pid} runs but is not healthy yet: waiting")
            self._wait_ready(svc, rec)
            self._after_start(svc, say)
            return False
        stale = self.record(svc.name)
        if stale is not None:  # it died (kill -9, OOM): its children may still hold resources
            killed = kill_leftovers(stale)
            if killed:
                say(f"killed {len(killed)} leftover process(es) of dead pid {stale.pid}")
        for key in svc.port_keys:
            port = self.ctx.port(key)
            if not port_is_free(port):
                env = env_port_var(key, self.region)
                raise StackError(
                    f"{svc.name} cannot start: port {port} ({key}) on {HOST} is already in use "
                    "by another process",
                    hint=f"stop that process, or pick another port: --port {key}=N or {env}=N",
                )
        say("fetching" if self.ctx.allow_fetch else "checking jars")
        with self._fetch_lock:  # one mvn/pip at a time: ~/.m2 is not safe for parallel writers
            svc.fetch(self.ctx)
        say("preparing")
        svc.prepare(self.ctx)
        argv = svc.command(self.ctx)
        log = self.ctx.log_file(svc.name)
        rec = launch(
            argv,
            pid_file=self.ctx.pid_file(svc.name),
            log_file=log,
            cwd=svc.cwd(self.ctx),
            env=svc.env(self.ctx),
            version=svc.version,
            ports={k: self.ctx.port(k) for k in svc.port_keys},
            user=svc.run_user(),
        )
        say(f"starting (pid {rec.pid})")
        try:
            self._wait_ready(svc, rec)
        except StackError:
            stop(rec, sig=svc.stop_signal, timeout=svc.stop_timeout)
            raise
        self._after_start(svc, say)
        say(f"ready at {svc.endpoint(self.ctx)}")
        return True

    def _after_start(self, svc: Service, say: Callable[[str], None]) -> None:
        note = svc.after_start(self.ctx)
        if note:
            say(note)

    def _wait_ready(self, svc: Service, rec: ProcessRecord) -> None:
        deadline = time.monotonic() + svc.start_timeout
        log = self.ctx.log_file(svc.name)
        delay = 0.2
        while True:
            if not is_alive(rec):
                raise StackError(
                    f"{svc.name} (pid {rec.pid}) exited during start-up; last lines of {log}:\n"
                    + _indent(tail(log, 25)),
                    hint=f"fix the cause above; full log: cdcrouter stack logs {svc.name}",
                )
            if svc.ready(self.ctx):
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{svc.name} (pid {rec.pid}) did not become healthy within {svc.start_timeout:.0f}s; "
                    f"last lines of {log}:\n" + _indent(tail(log, 25)),
                    hint=f"see the log (cdcrouter stack logs {svc.name}); a slow machine may need a retry",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def down(
        self, only: Iterable[str] | None = None, *, purge: bool = False, report: Reporter | None = None
    ) -> list[str]:
        """Stop the selected services by PID (reverse order); ``purge`` also deletes their data."""
        names = [s.name for s in self.resolve(only)] if only else list(self.services)
        if only:  # stop exactly what was named (expanded groups), not their dependencies
            expanded = {n for x in only for n in groups().get(x, (x,))}
            names = [n for n in names if n in expanded]
        stopped: list[str] = []
        with self.lock(report):
            for name in reversed(names):
                svc = self.services[name]
                rec = self.record(name)
                if rec and stop(rec, sig=svc.stop_signal, timeout=svc.stop_timeout):
                    stopped.append(name)
                    if report:
                        report(name, f"stopped (pid {rec.pid})")
                if rec:
                    kill_leftovers(rec)
                self.ctx.pid_file(name).unlink(missing_ok=True)
                if purge:
                    shutil.rmtree(self.state_dir / name, ignore_errors=True)
                    self.ctx.log_file(name).unlink(missing_ok=True)
                    if report:
                        report(name, "purged")
            if purge and not only:
                for extra in ("endpoints.json", "ports.json"):
                    (self.state_dir / extra).unlink(missing_ok=True)
                shutil.rmtree(self.state_dir / "secrets", ignore_errors=True)
            else:
                self.write_endpoints()
        return stopped

    def status(self, only: Iterable[str] | None = None) -> list[ServiceStatus]:
        out = []
        for svc in self.resolve(only) if only else self.services.values():
            rec = self.record(svc.name)
            alive = bool(rec and is_alive(rec))
            if alive:
                state = "running" if svc.ready(self.ctx) else "unhealthy"
            else:
                state = "dead" if rec else "stopped"
            ports = rec.ports if rec else {k: self.ctx.port(k) for k in svc.port_keys}
            out.append(
                ServiceStatus(
                    name=svc.name,
                    state=state,
                    pid=rec.pid if rec else None,
                    ports=ports,
                    version=rec.version if rec else svc.version,
                    endpoint=svc.endpoint(self.ctx),
                )
            )
        return out

    def log_path(self, name: str) -> Path:
        if name not in self.services:
            raise UsageError(f"unknown service {name}; choose from {', '.join(self.services)}")
        return self.ctx.log_file(name)

    # -- endpoints -----------------------------------------------------------------------------

    def endpoints(self, *, running_only: bool = True) -> dict[str, Any]:
        """``endpoints.json`` content: the ``Connections`` sections of the (running) services."""
        data: dict[str, Any] = {}
        for svc in self.services.values():
            if running_only and not self.running_record(svc.name):
                continue
            for section, values in svc.connections(self.ctx).items():
                data.setdefault(section, {}).update(values)
        return data

    def write_endpoints(self) -> None:
        path = self.state_dir / "endpoints.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.endpoints(), indent=2) + "\n")
        tmp.replace(path)

    def connections(self) -> Connections:
        """A :class:`cdcrouter.config.Connections` for this stack's endpoints (running or not)."""
        from cdcrouter.config import Connections
        from cdcrouter.stack.services.postgres import password

        data = self.endpoints(running_only=False)
        if "postgres" in data:
            data["postgres"]["password"] = password(self.ctx)
        return Connections.model_validate(data)


def _indent(lines: list[str]) -> str:
    return "\n".join("    " + ln for ln in lines) if lines else "    (log is empty)"
