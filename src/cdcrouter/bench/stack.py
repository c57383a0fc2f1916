"""``cdcrouter bench stack``: cold and warm ``stack up`` times and the stack's peak memory.

Runs in a scratch state dir on free ports, so it never touches a shared stack. "Cold" is the
first ``up`` of an empty state dir (initdb, Kafka storage format, registry schema creation) with
the jar cache already filled (``stack fetch`` is measured separately); "warm" is ``up`` after
``down`` with data kept; "no-op" is ``up`` while everything runs. Memory is the sum of PSS
(proportional set size: shared pages split between processes, so PostgreSQL's backends are not
counted twice) over each service's process tree, sampled every 0.5 s.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cdcrouter.stack.manager import Stack
from cdcrouter.stack.service import DEFAULT_PORTS


def _free_ports(keys: Iterable[str]) -> dict[str, int]:
    socks, ports = [], {}
    for key in keys:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports[key] = s.getsockname()[1]
    for s in socks:
        s.close()
    return ports


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_pss_mb(pids: Iterable[int]) -> float:
    """PSS of the given processes and all their descendants, in MiB."""
    tree = _children()
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(tree.get(pid, []))
    return sum(_pss_kb(p) for p in seen) / 1024


class _Sampler(threading.Thread):
    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop_event = threading.Event()
        self.peak_total = 0.0
        self.peak_by_service: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop_event.is_set():
            total = 0.0
            for name in self.stack.services:
                rec = self.stack.running_record(name)
                if not rec:
                    continue
                mb = tree_pss_mb([rec.pid])
                total += mb
                self.peak_by_service[name] = max(self.peak_by_service.get(name, 0.0), mb)
            self.peak_total = max(self.peak_total, total)
            self.stop_event.wait(0.5)


def sample_running(stack: Stack, seconds: float) -> dict[str, Any]:
    """Peak PSS of an already-running stack (e.g. the shared dev stack under real test load)."""
    sampler = _Sampler(stack)
    sampler.start()
    time.sleep(seconds)
    sampler.stop_event.set()
    sampler.join()
    return {
        "state_dir": str(stack.state_dir),
        "sampled_s": seconds,
        "running": [n for n in stack.services if stack.running_record(n)],
        "peak_pss_mb": round(sampler.peak_total),
        "peak_pss_mb_by_service": {k: round(v) for k, v in sampler.peak_by_service.items()},
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def run_bench(
    only: list[str] | None,
    *,
    state_dir: Path | None = None,
    settle_seconds: float = 20.0,
    report: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Measure ``up`` (cold, no-op, warm) and peak memory; always stops and purges what it started."""
    scratch = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="cdcrouter-bench-"))
    stack = Stack(scratch, ports=_free_ports(DEFAULT_PORTS))
    stack.fetch(only, report=report)  # not timed: `stack fetch` is measured on its own
    sampler = _Sampler(stack)
    sampler.start()
    result: dict[str, Any] = {"services": [s.name for s in stack.resolve(only)]}
    everything = result["services"]  # down(only) would spare the dependencies: stop all we started
    marks: dict[str, float] = {}

    def timed(name: str, message: str) -> None:
        marks[f"{name}:{message.split()[0]}"] = time.monotonic()
        if report:
            report(name, message)

    try:
        t0 = time.monotonic()
        stack.up(only, report=timed)
        result["cold_up_s"] = round(time.monotonic() - t0, 2)
        result["cold_up_s_by_service"] = {
            name: round(marks[f"{name}:ready"] - marks[f"{name}:fetching"], 2)
            for name in result["services"]
            if f"{name}:ready" in marks and f"{name}:fetching" in marks
        }
        t0 = time.monotonic()
        stack.up(only)
        result["noop_up_s"] = round(time.monotonic() - t0, 2)
        time.sleep(settle_seconds)  # let JIT and background start-up work show in the memory peak
        result["peak_pss_mb_after_cold"] = round(sampler.peak_total)
        stack.down(everything)
        t0 = time.monotonic()
        stack.up(only, report=report)
        result["warm_up_s"] = round(time.monotonic() - t0, 2)
        time.sleep(settle_seconds)
    finally:
        sampler.stop_event.set()
        sampler.join()
        stack.down(everything, purge=True)
        if not state_dir:
            shutil.rmtree(scratch, ignore_errors=True)
    result["peak_pss_mb"] = round(sampler.peak_total)
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # other work on the machine
    result["peak_pss_mb_by_service"] = {k: round(v) for k, v in sampler.peak_by_service.items()}
    return result
