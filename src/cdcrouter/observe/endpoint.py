"""One small HTTP server per process for Prometheus and probes: ``/metrics``, ``/healthz``, ``/readyz``.

Capture, the router and consumer apps all serve through it, so the three endpoints behave the same
everywhere. ``/metrics`` is prometheus_client's own WSGI app; ``/healthz`` answers 200 while the
process serves at all (alive); ``/readyz`` answers 200 only when every readiness check of the process
passes (connected, assigned, not stalled) and 503 with each check's reason otherwise. A check is a
callable returning ``(ready, reason)``; the process registers its own (see :class:`Heartbeat`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

__all__ = ["Check", "Heartbeat", "MetricsServer"]

Check = Callable[[], tuple[bool, str]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never keeps the process from exiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: no log line each
        pass


def _family(addr: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (``::``), else IPv4."""
    info = socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return info[0][0]


class MetricsServer:
    """Serves ``registry`` and the readiness ``checks`` on ``addr:port`` from a daemon thread.

    ``port`` 0 takes a free port (read it back from :attr:`port`). Raises ``OSError`` when the
    address cannot be bound, so the caller can tell the user which option to change.
    """

    def __init__(
        self,
        port: int,
        addr: str = "127.0.0.1",
        registry: CollectorRegistry = REGISTRY,
        checks: Iterable[tuple[str, Check]] = (),
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._checks: dict[str, Check] = dict(checks)
        self._lock = threading.Lock()
        server_class = type("_Bound", (_Server,), {"address_family": _family(addr)})
        self._httpd = make_server(addr, port, self._app, server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"metrics:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def add_check(self, name: str, check: Check) -> None:
        """Another readiness check (several consumer apps of one process share one server)."""
        with self._lock:
            self._checks[name] = check

    def remove_check(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def readiness(self) -> tuple[bool, list[str]]:
        """Every check's verdict; ready when all pass (and at least one is registered)."""
        with self._lock:
            checks = list(self._checks.items())
        if not checks:
            return False, ["nothing registered a readiness check yet"]
        lines, ok = [], True
        for name, check in checks:
            try:
                ready, reason = check()
            except Exception as exc:  # a broken check is not-ready, never a 500
                ready, reason = False, f"check failed: {exc!r}"
            ok = ok and ready
            lines.append(f"{name}: {'ready' if ready else 'not ready'}: {reason}")
        return ok, lines

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            ready, lines = self.readiness()
            body = "\n".join(lines) + "\n"
            return _text(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        if path in ("/metrics", "/"):  # / like prometheus_client's own server
            return self._metrics(environ, start_response)
        # a misspelt probe path must fail, not look healthy
        return _text(start_response, "404 Not Found", "not found: try /metrics, /healthz or /readyz\n")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    start_response(status, headers)
    return [data]


class Heartbeat:
    """Readiness state a long-running loop keeps: ``beat()`` each turn, ``set(ready, reason)`` on a
    change (connected, assigned). As a check it is ready when set ready and the loop beat within
    ``stall_s`` (a loop stuck in a call is not ready, though the process is alive). ``progress``, a
    counter read at check time (e.g. changes read), counts as a beat whenever it moved: a hot loop
    that is busy (one huge transaction) need not beat per record."""

    def __init__(
        self, stall_s: float = 60.0, reason: str = "starting", progress: Callable[[], int] | None = None
    ) -> None:
        self.stall_s = stall_s
        self._ready = False
        self._reason = reason
        self._beat = time.monotonic()
        self._progress = progress
        self._seen = progress() if progress is not None else 0

    def beat(self) -> None:
        self._beat = time.monotonic()

    def set(self, ready: bool, reason: str) -> None:
        self._ready, self._reason = ready, reason
        self._beat = time.monotonic()

    def __call__(self) -> tuple[bool, str]:
        if self._progress is not None and (now := self._progress()) != self._seen:
            self._seen = now
            self.beat()
        idle = time.monotonic() - self._beat
        if self._ready and idle > self.stall_s:
            return False, f"stalled: its loop has not turned for {idle:.0f} s ({self._reason})"
        return self._ready, self._reason
