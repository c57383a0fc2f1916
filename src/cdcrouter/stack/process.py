"""Process plumbing for local services: detached start, PID identity, stop, ports, log tails.

A PID file alone is not proof: PIDs are reused. Each record also keeps the process start time
(``/proc/<pid>/stat`` field 22), so a recycled PID never passes for a running service.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cdcrouter.errors import StackError


@dataclass(frozen=True)
class ProcessRecord:
    """What a PID file holds: enough to recognise the exact process again."""

    pid: int
    start_ticks: int
    version: str
    ports: dict[str, int]
    started_at: float

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot, or None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(record: ProcessRecord) -> bool:
    """True if the recorded process still runs (same PID *and* start time, not a zombie)."""
    reap(record.pid)
    fields = _stat_fields(record.pid)
    if not fields:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == record.start_ticks


def as_user(user: str | None) -> dict[str, object]:
    """``subprocess`` arguments that drop to ``user`` with *its* groups (uid alone keeps root's gid,
    and then a root-group directory's group bits, often ``---``, deny access)."""
    if not user:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


LOG_ROTATE_BYTES = 64 * 1024 * 1024


def rotate_log(log_file: Path, limit: int = LOG_ROTATE_BYTES) -> Path | None:
    """Before a start: a log past ``limit`` becomes ``<name>.1`` (replacing the one before), so a
    stack restarted for months keeps two logs per service, not one without end (a test-suite
    stack's broker and Connect logs reached 800 MB each). The rotated path, or None."""
    try:
        if log_file.stat().st_size <= limit:
            return None
    except FileNotFoundError:
        return None
    older = log_file.with_name(log_file.name + ".1")
    os.replace(log_file, older)
    return older


def spawn(
    argv: list[str],
    *,
    log_file: Path,
    cwd: Path,
    env: dict[str, str],
    user: str | None = None,
) -> int:
    """Start ``argv`` detached (own session, stdout+stderr appended to ``log_file``); return its PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_file)
    with open(log_file, "ab") as log:
        log.write(f"\n--- cdcrouter: starting {argv[0]} at {time.strftime('%F %T')} ---\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_user(user),  # type: ignore[arg-type]
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(
                f"cannot run {argv[0]}: {exc}", hint="check that the program is installed"
            ) from exc
    return proc.pid


def launch(
    argv: list[str],
    *,
    pid_file: Path,
    log_file: Path,
    cwd: Path,
    env: dict[str, str],
    version: str,
    ports: dict[str, int],
    user: str | None = None,
) -> ProcessRecord:
    """:func:`spawn` ``argv`` and write its :class:`ProcessRecord` to ``pid_file``: every service,
    the standby and MirrorMaker 2 are started and later recognised the same way."""
    pid = spawn(argv, log_file=log_file, cwd=cwd, env=env, user=user)
    rec = ProcessRecord(
        pid=pid, start_ticks=start_ticks(pid) or 0, version=version, ports=ports, started_at=time.time()
    )
    rec.dump(pid_file)
    return rec


def stop(record: ProcessRecord, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Stop the recorded process: ``sig``, then SIGKILL after ``timeout``. True if it was running."""
    if not is_alive(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(record):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def leftovers(record: ProcessRecord) -> list[int]:
    """Processes left in the service's process group (its session, started by us) after the
    leader died: e.g. PostgreSQL backends after ``kill -9`` of the postmaster, which keep the
    shared memory block and make a restart fail. Started no earlier than the leader."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == record.pid and int(fields[19]) >= record.start_ticks and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_leftovers(record: ProcessRecord, timeout: float = 15.0) -> list[int]:
    """SIGKILL what :func:`leftovers` finds and wait for it to go; returns the PIDs killed."""
    pids = leftovers(record)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pids and leftovers(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` (a bind test, like the server's own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:] if lines > 0 else []
