"""The consumer SDK: write a consumer of a filtered topic in a few lines.

    from cdcrouter.consumer import ConsumerApp

    app = ConsumerApp("loan-consumer")

    @app.on("filtered-loan-events", event="LoanCreated")
    def created(event):
        print(event.entity.entity_id, event.entity.attr("loan.loanAmount"))

    app.run()

See ``docs/consumer-guide.md`` for commits, retries, the dead-letter topic and idempotency.
"""

from cdcrouter.consumer._app import ConsumerApp, Context, Stats
from cdcrouter.consumer._dlq import dlq_topic
from cdcrouter.consumer._errors import ConsumerError, DecodeError, HandlerFailed
from cdcrouter.consumer._event import Entity, Event, EventHeader, FilterMetadata, Origin, SourceMetadata
from cdcrouter.consumer._replay import DlqInfo, DlqRecord, ReplayResult, list_dlqs, read_dlq
from cdcrouter.consumer._replay import replay as replay_dlq
from cdcrouter.consumer._serde import RegistryClient
from cdcrouter.consumer._store import IdempotencyStore, MemoryStore, PostgresStore

__all__ = [
    "ConsumerApp",
    "ConsumerError",
    "Context",
    "DecodeError",
    "DlqInfo",
    "DlqRecord",
    "Entity",
    "Event",
    "EventHeader",
    "FilterMetadata",
    "HandlerFailed",
    "IdempotencyStore",
    "MemoryStore",
    "Origin",
    "PostgresStore",
    "RegistryClient",
    "ReplayResult",
    "SourceMetadata",
    "Stats",
    "dlq_topic",
    "list_dlqs",
    "read_dlq",
    "replay_dlq",
]
