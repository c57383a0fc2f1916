"""µs/event of the BusinessEvent codecs: fastavro and cdcrouter._native (also reading an evolved
writer schema through a Projection).

    python native/bench_codec.py [N]

Decodes and encodes N ``make_event(i)`` events (default 2,000), best of 7 rounds. A measurement
script, not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import fastavro

from cdcrouter import _native
from cdcrouter.bench.route import evolved_event, evolved_raw_schema
from cdcrouter.route.codec import RawDecoder
from cdcrouter.route.events import make_event
from cdcrouter.route.wire import header
from cdcrouter.schemas import parsed_raw_schema


def best_us(fn: Callable[[Any], Any], items: list[Any], rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t0)
    return best / len(items) * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    schema = parsed_raw_schema()
    events = [make_event(i) for i in range(n)]
    values = [header(1) + _native.encode_business_event(e) for e in events]
    evolved = fastavro.parse_schema(evolved_raw_schema())
    evolved_values = []
    for i, e in enumerate(events):
        buf = io.BytesIO(header(2))
        buf.seek(0, 2)
        fastavro.schemaless_writer(
            buf,
            evolved,
            evolved_event(
                dict(e, eventHeader=dict(e["eventHeader"]), sourceMetadata=dict(e["sourceMetadata"])), i
            ),
        )
        evolved_values.append(buf.getvalue())
    projection = RawDecoder({2: json.dumps(evolved_raw_schema())}.get).writer(2).projection

    def fa_decode(v: bytes) -> Any:
        return fastavro.schemaless_reader(io.BytesIO(memoryview(v)[5:]), schema, None)

    def fa_encode(e: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, e)
        return buf.getvalue()

    def nat_decode(v: bytes) -> Any:
        return _native.decode_business_event(v, 5)

    def nat_decode_evolved(v: bytes) -> Any:
        return _native.decode_business_event(v, 5, projection)

    def fa_resolve_evolved(v: bytes) -> Any:
        return fastavro.schemaless_reader(io.BytesIO(memoryview(v)[5:]), evolved, schema)

    avg = sum(len(v) - 5 for v in values) / n
    print(f"{n} events, {avg:.0f} bytes of Avro body on average")
    rows = [
        ("decode  fastavro schemaless_reader", best_us(fa_decode, values)),
        ("decode  _native.decode_business_event", best_us(nat_decode, values)),
        ("decode  evolved writer, fastavro resolution", best_us(fa_resolve_evolved, evolved_values)),
        ("decode  evolved writer, _native + Projection", best_us(nat_decode_evolved, evolved_values)),
        ("encode  fastavro schemaless_writer", best_us(fa_encode, events)),
        ("encode  _native.encode_business_event", best_us(_native.encode_business_event, events)),
    ]
    for name, us in rows:
        print(f"{name:46s} {us:6.2f} µs/event")


if __name__ == "__main__":
    main()
