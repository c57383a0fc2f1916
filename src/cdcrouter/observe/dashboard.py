"""``cdcrouter dashboard``: the status view as a live web page.

The page (``dashboard_static/``, package data: no build step, nothing fetched from the network)
polls ``/api/status``, which answers with the document ``cdcrouter status --format json`` prints,
made by the same :func:`cdcrouter.observe.collect.collect_status`; ``/api/topology`` adds what the
status document does not carry (the captured tables) and the poll period.

Served by the standard library's :class:`http.server.ThreadingHTTPServer`: four read-only GET
routes on a local address need no routing, templating or async framework, and a framework would be
one more pinned dependency to keep patched for a page an operator opens now and then. The server
binds 127.0.0.1 unless told otherwise: the status shows topic, group and slot names.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from cdcrouter.errors import CdcrouterError

log = logging.getLogger(__name__)

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
IDLE_AFTER_S = 60.0  # no page asked for this long: stop collecting (no load on an unwatched pipeline)
FIRST_WAIT_S = 60.0  # a request before the first document waits this long for it


class StatusFeed:
    """The newest status document, collected by one background thread while somebody looks: any
    number of open pages cost one collection at a time, and a poll never waits a sampling window
    (except for the very first document)."""

    def __init__(
        self, collect: Callable[[], dict[str, Any]], pause_s: float, idle_after_s: float = IDLE_AFTER_S
    ) -> None:
        self._collect = collect
        self._pause_s = pause_s
        self._idle_after_s = idle_after_s
        self._doc: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._wanted_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(30)

    def latest(self, wait_s: float = FIRST_WAIT_S) -> dict[str, Any] | None:
        """The newest document (waiting for the first one up to ``wait_s``); None if none yet."""
        with self._cond:
            self._wanted_at = time.monotonic()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._doc is not None or self._stop.is_set(), timeout=wait_s)
            return self._doc

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop.is_set() or time.monotonic() - self._wanted_at < self._idle_after_s
                )
            if self._stop.is_set():
                return
            doc = self._collect_once()
            with self._cond:
                self._doc = doc
                self._cond.notify_all()
            self._stop.wait(self._pause_s)

    def _collect_once(self) -> dict[str, Any]:
        """One document; a collection that fails is shown as ``status --watch`` shows it, and the
        next one tries again (the outage is when the page is wanted)."""
        from cdcrouter.observe.watch import error_document

        try:
            return self._collect()
        except CdcrouterError as exc:
            return error_document(exc)
        except Exception as exc:  # a bug must not stop the page: show it, log it, try again
            log.exception("status collection failed")
            return error_document(CdcrouterError(f"status collection failed: {type(exc).__name__}: {exc}"))


class Dashboard:
    """The HTTP server; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(self, feed: StatusFeed, topology: dict[str, Any], host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"feed": feed, "topology": topology})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise CdcrouterError(
                f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}",
                hint="choose another --port (or --host); --port 0 picks a free one",
            ) from exc
        self.server.daemon_threads = True
        self.feed = feed

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        self.feed.start()
        try:
            self.server.serve_forever(poll_interval=0.5)
        finally:
            self.server.server_close()
            self.feed.stop()

    def shutdown(self) -> None:
        self.server.shutdown()


class _Handler(BaseHTTPRequestHandler):
    feed: StatusFeed
    topology: dict[str, Any]
    server_version = "cdcrouter-dashboard"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            doc = self.feed.latest()
            if doc is None:
                self._json({"error": "no status collected yet"}, HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._json(doc)
        elif path == "/api/topology":
            self._json(self.topology)
        elif path in STATIC:
            name, ctype = STATIC[path]
            body = resources.files("cdcrouter.observe").joinpath("dashboard_static", name).read_bytes()
            self._send(body, ctype)
        else:
            self._send(b"not found\n", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

    def _json(self, doc: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(doc, default=str).encode(), "application/json", status)

    def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def topology_of(targets: Any, poll_s: float) -> dict[str, Any]:
    """What the page draws besides the status document: the captured tables, in pipeline order."""
    pipe = targets.pipeline
    tables = [f"{pipe.schema}.{t}" for t in pipe.captured_tables()] if pipe is not None else []
    return {"tables": tables, "poll_seconds": poll_s}
