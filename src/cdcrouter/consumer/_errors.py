"""Consumer SDK errors (all are :class:`cdcrouter.errors.CdcrouterError`, printed without traceback).

ConsumerError             the SDK cannot do its job (Kafka, registry, store)
├── DecodeError           a record is not a decodable Confluent-wire-format Avro event
└── HandlerFailed         a handler kept failing and no dead-letter topic takes the record
"""

from __future__ import annotations

from cdcrouter.errors import CdcrouterError


class ConsumerError(CdcrouterError):
    pass


class DecodeError(ConsumerError):
    """Poison pill: retrying cannot help, so it goes straight to the dead-letter topic."""


class HandlerFailed(ConsumerError):
    pass
