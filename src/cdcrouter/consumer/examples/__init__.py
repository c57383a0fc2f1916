"""The seed's consumer applications: loan book, service history and car inventory.

Each module has ``build(connections, topic=, schema=, name=, **app_options) -> ConsumerApp`` and
``view(connections, schema=) -> list[dict]``. The demo starts all three in-process::

    running = start_examples(connections, schema="demo")
    running.wait_for(total=120, timeout=60)   # handled records, all three apps together
    running.stop()
    for name, rows in running.views().items(): ...
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cdcrouter.config import Connections, load_connections
from cdcrouter.consumer import ConsumerApp, Stats
from cdcrouter.consumer.examples import car, loan, service
from cdcrouter.consumer.examples._common import DEFAULT_SCHEMA

MODULES = {"loan": loan, "service": service, "car": car}

__all__ = ["DEFAULT_SCHEMA", "MODULES", "RunningExamples", "start_examples"]


@dataclass
class RunningExamples:
    """Three consumer apps running in threads of this process."""

    connections: Connections
    schema: str
    apps: dict[str, ConsumerApp]
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def stats(self) -> dict[str, Stats]:
        return {name: app.stats for name, app in self.apps.items()}

    def handled(self) -> int:
        return sum(app.stats.handled for app in self.apps.values())

    def wait_for(self, total: int, timeout: float = 60.0) -> bool:
        """Wait until the apps together settled ``total`` records; False on timeout or app failure."""
        end = time.monotonic() + timeout
        while self.handled() < total:
            if self.errors or time.monotonic() > end:
                return False
            time.sleep(0.1)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batches, commit and leave the groups; re-raise an app's failure."""
        for app in self.apps.values():
            app.stop()
        for t in self.threads.values():
            t.join(timeout)
        for app in self.apps.values():
            if app.store is not None:
                app.store.close()
        if self.errors:
            raise next(iter(self.errors.values()))

    def views(self) -> dict[str, list[dict[str, Any]]]:
        """``{"loan": [...], "service": [...], "car": [...]}`` for the demo summary."""
        return {name: MODULES[name].view(self.connections, self.schema) for name in self.apps}


def start_examples(
    connections: Connections | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    topics: dict[str, str] | None = None,
    prefix: str = "",
    **app_options: Any,
) -> RunningExamples:
    """Start the loan, service and car consumers in threads.

    Args:
        topics: override topics per example, e.g. ``{"loan": "filtered-loan-events"}``.
        prefix: prepended to the consumer names (and so to groups and DLQ topics).
        app_options: passed to every ``ConsumerApp`` (``batch_timeout``, ``from_beginning``...).
    """
    connections = connections or load_connections()
    topics = topics or {}
    running = RunningExamples(connections, schema, {})
    for name, module in MODULES.items():
        running.apps[name] = module.build(
            connections,
            topic=topics.get(name, module.TOPIC),
            schema=schema,
            name=f"{prefix}{name}-consumer",
            **app_options,
        )

    def target(name: str, app: ConsumerApp) -> None:
        try:
            app.run()
        except BaseException as exc:  # surfaced by stop()
            running.errors[name] = exc

    for name, app in running.apps.items():
        t = threading.Thread(target=target, args=(name, app), name=f"consumer-{name}", daemon=True)
        running.threads[name] = t
        t.start()
    return running
