"""Avro binary primitives in Python: zig-zag longs and length-prefixed strings.

The BusinessEvent codec is the Rust extension (:mod:`cdcrouter._native`, required). These are the
pieces Python still writes itself, each where a whole-record codec cannot serve:

* :mod:`cdcrouter.capture.fastpath` encodes a captured row straight from the pgoutput message's
  bytes (column values are never Python strings), so it writes the record field by field;
* :mod:`cdcrouter.route.wire` encodes the trailing ``filterMetadata`` appended to a passed-through
  raw body;
* the benchmarks write ``savedDate`` into pre-encoded records at append time.

The caches are why this is not a plain function: lengths below 4,096 and map keys (column
names, event names) repeat in every event and are encoded once.
"""

from __future__ import annotations

__all__ = ["encode_long", "encode_string"]


def _varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    return _varint((n << 1) ^ (n >> 63))


_SMALL = [encode_long(i) for i in range(4096)]


def encode_string(s: str) -> bytes:
    """An Avro string: its UTF-8 length as a long, then the bytes."""
    b = s.encode()
    n = len(b)
    return (_SMALL[n] if n < 4096 else encode_long(n)) + b


_KEYS: dict[str, bytes] = {}  # map key -> its encoded form (column names repeat in every event)


def _key(k: str) -> bytes:
    """``encode_string`` for strings that repeat (map keys, names), cached (bounded)."""
    kb = _KEYS.get(k)
    if kb is None:
        kb = encode_string(k)
        if len(_KEYS) < 65_536:
            _KEYS[k] = kb
    return kb
