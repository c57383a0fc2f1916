"""The pipeline's processes on one machine, so a failover can stop them and start them elsewhere.

``cdcrouter capture run`` and ``cdcrouter run`` are foreground programs: nothing records them. A
process started through :func:`launch` (``cdcrouter dr start``, and every drill) is detached, logs
to a file, and leaves a record in a registry directory: its role, the command line, the region it
was pointed at and its PID with the process start time (a recycled PID never passes for it, see
:mod:`cdcrouter.stack.process`). The record never holds the environment: secrets stay where they
were (the environment, secret files); a restart in another region only changes the region's
``CDCROUTER_*`` connection variables.

On Kubernetes the same steps are a configuration change and a rollout (docs/disaster-recovery.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cdcrouter.config import Connections
from cdcrouter.errors import UsageError
from cdcrouter.stack import process

ROLES = ("capture", "router", "consumer")
# The order a failover restarts them in: capture first (the raw topic fills), then the routers, then
# the consumers of their topics; they stop in the reverse order.
START_ORDER = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Managed:
    """One recorded pipeline process."""

    name: str
    role: str
    argv: list[str]
    cwd: str
    region: str
    pid: int
    start_ticks: int
    log_file: str
    started_at: float

    @property
    def record(self) -> process.ProcessRecord:
        return process.ProcessRecord(self.pid, self.start_ticks, "", {}, self.started_at)

    def alive(self) -> bool:
        return process.is_alive(self.record)


def region_env(conns: Connections) -> dict[str, str]:
    """``CDCROUTER_*`` variables that point a child process at ``conns`` (secrets only in its env)."""
    env: dict[str, str] = {}
    for section in ("kafka", "registry", "postgres"):
        settings = getattr(conns, section)
        for key, value in settings.model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"CDCROUTER_{section.upper()}__{key.upper()}"] = str(value)
    return env


def cdcrouter_argv(*args: str) -> list[str]:
    """The command line of a ``cdcrouter`` subcommand run by this interpreter."""
    return [sys.executable, "-m", "cdcrouter.cli.main", *args]


class ProcessRegistry:
    """Records under ``directory`` (one JSON file per process name)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def all(self) -> list[Managed]:
        out = []
        for path in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                out.append(Managed(**json.loads(path.read_text())))
        return sorted(out, key=lambda m: (START_ORDER.get(m.role, 9), m.name))

    def get(self, name: str) -> Managed | None:
        path = self._path(name)
        if not path.is_file():
            return None
        return Managed(**json.loads(path.read_text()))

    def save(self, m: Managed) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(m.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(m), indent=1))
        tmp.replace(self._path(m.name))

    def forget(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def launch(
        self,
        name: str,
        role: str,
        argv: list[str],
        region: str,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> Managed:
        """Start ``argv`` detached with ``env`` added to this process's environment, and record it."""
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
        old = self.get(name)
        if old is not None and old.alive():
            raise UsageError(
                f"{name} already runs (pid {old.pid})", hint=f"stop it first: cdcrouter dr stop {name}"
            )
        log_file = self.directory / "logs" / f"{name}.log"
        where = Path(cwd or os.getcwd())
        pid = process.spawn(argv, log_file=log_file, cwd=where, env={**os.environ, **env})
        ticks = process.start_ticks(pid) or 0
        m = Managed(name, role, list(argv), str(where), region, pid, ticks, str(log_file), time.time())
        self.save(m)
        return m

    def relaunch(self, m: Managed, region: str, env: dict[str, str]) -> Managed:
        """The same command line again, pointed at ``region``."""
        return self.launch(m.name, m.role, m.argv, region, env, Path(m.cwd))


def stop(m: Managed, grace_s: float = 20.0) -> str:
    """SIGTERM (capture and routers finish their open transaction), SIGKILL after ``grace_s``.

    Returns what happened, for the failover's step log.
    """
    if not m.alive():
        return "was not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(m.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not m.alive():
            return "stopped (SIGTERM)"
        time.sleep(0.1)
    kill(m)
    return f"killed (SIGKILL after {grace_s:.0f}s: its Kafka was unreachable)"


def stop_all(ms: list[Managed], grace_s: float = 20.0) -> dict[str, str]:
    """:func:`stop` for several at once: SIGTERM to all, one shared grace period, then SIGKILL.

    A failover from a dead region waits out the grace period once, not once per process.
    """
    out: dict[str, str] = {}
    for m in ms:
        if not m.alive():
            out[m.name] = "was not running"
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(m.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    waiting = [m for m in ms if m.name not in out]
    while waiting and time.monotonic() < deadline:
        for m in [m for m in waiting if not m.alive()]:
            out[m.name] = "stopped (SIGTERM)"
            waiting.remove(m)
        time.sleep(0.1)
    for m in waiting:
        kill(m)
        out[m.name] = f"killed (SIGKILL after {grace_s:.0f}s: its Kafka was unreachable)"
    return out


def kill(m: Managed) -> None:
    """``kill -9``: what a crash looks like."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(m.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while m.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def log_tail(m: Managed, lines: int = 15) -> list[str]:
    return process.tail(Path(m.log_file), lines)
