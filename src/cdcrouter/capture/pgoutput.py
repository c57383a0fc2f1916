"""Decoder for PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1).

Only what capture needs: Begin, Commit, Relation, Type, Insert, Update, Delete, Truncate and
logical Messages (``pg_logical_emit_message``: snapshot watermarks and signals); Origin is
skipped. Values stay in PostgreSQL's text output form; the
``u`` marker (an unchanged TOASTed value that was not sent) becomes :data:`UNCHANGED`.
See https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from cdcrouter.capture.normalize import UNCHANGED, Value

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 in Unix milliseconds

_BEGIN = Struct(">QqI")  # final_lsn, commit timestamp (us since 2000), xid
_COMMIT = Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit timestamp
_I32 = Struct(">I")
_LSN = Struct(">Q")
_I16 = Struct(">h")
_RELCOL = Struct(">Ii")


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d, n, f, i
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    key_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_ms: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ms: int


@dataclass(frozen=True, slots=True)
class Change:
    """An Insert, Update or Delete. ``old`` holds the key ('K') or the full old row ('O')."""

    operation: str
    relation: Relation
    new: dict[str, Value] | None
    old: dict[str, Value] | None


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[Relation, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``pg_logical_emit_message``: sent at once when not transactional, else inside its txn."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class TypeInfo:
    oid: int
    schema: str
    name: str


Message = Begin | Commit | Relation | Change | Truncate | TypeInfo | LogicalMessage | None


def lsn_to_str(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def str_to_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


class PgOutputDecoder:
    """Stateful decoder: remembers Relation messages to name the columns of later changes."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, buf: bytes) -> Message:
        tag = buf[0]
        if tag == 73:  # I
            rel = self.relations[_I32.unpack_from(buf, 1)[0]]
            new, _ = _tuple(buf, 6, rel.columns)  # buf[5] == 'N'
            return Change("INSERT", rel, new, None)
        if tag == 85:  # U
            rel = self.relations[_I32.unpack_from(buf, 1)[0]]
            pos, old = 5, None
            marker = buf[pos]
            if marker in (75, 79):  # K, O
                old, pos = _tuple(buf, pos + 1, rel.columns)
                if marker == 75:
                    old = {c: old[c] for c in rel.key_columns if c in old}
                marker = buf[pos]
            new, _ = _tuple(buf, pos + 1, rel.columns)
            return Change("UPDATE", rel, new, old)
        if tag == 68:  # D
            rel = self.relations[_I32.unpack_from(buf, 1)[0]]
            marker = buf[5]
            old, _ = _tuple(buf, 6, rel.columns)
            if marker == 75:
                old = {c: old[c] for c in rel.key_columns if c in old}
            return Change("DELETE", rel, None, old)
        if tag == 66:  # B
            final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
            return Begin(final_lsn, ts // 1000 + PG_EPOCH_MS, xid)
        if tag == 67:  # C
            _, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
            return Commit(commit_lsn, end_lsn, ts // 1000 + PG_EPOCH_MS)
        if tag == 82:  # R
            return self._relation(buf)
        if tag == 89:  # Y
            oid = _I32.unpack_from(buf, 1)[0]
            schema, pos = _cstring(buf, 5)
            name, _ = _cstring(buf, pos)
            return TypeInfo(oid, schema, name)
        if tag == 84:  # T
            n = _I32.unpack_from(buf, 1)[0]
            oids = [_I32.unpack_from(buf, 6 + 4 * i)[0] for i in range(n)]
            return Truncate(tuple(self.relations[o] for o in oids if o in self.relations))
        if tag == 77:  # M (proto_version 1: no xid field)
            flags, lsn = buf[1], _LSN.unpack_from(buf, 2)[0]
            prefix, pos = _cstring(buf, 10)
            (n,) = _I32.unpack_from(buf, pos)
            return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(buf[pos + 4 : pos + 4 + n]))
        return None  # O (origin): not used

    def _relation(self, buf: bytes) -> Relation:
        oid = _I32.unpack_from(buf, 1)[0]
        schema, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        ident = chr(buf[pos])
        ncols = _I16.unpack_from(buf, pos + 1)[0]
        pos += 3
        cols, types, keys = [], [], []
        for _ in range(ncols):
            flags = buf[pos]
            col, pos = _cstring(buf, pos + 1)
            type_oid, _typmod = _RELCOL.unpack_from(buf, pos)
            pos += 8
            cols.append(col)
            types.append(type_oid)
            if flags & 1:
                keys.append(col)
        rel = Relation(oid, schema or "pg_catalog", name, ident, tuple(cols), tuple(types), tuple(keys))
        self.relations[oid] = rel
        return rel


_U32 = Struct(">I").unpack_from


def _tuple(buf: bytes, pos: int, columns: tuple[str, ...]) -> tuple[dict[str, Value], int]:
    """TupleData -> {column: text | None | UNCHANGED}; returns the position after it (hot path)."""
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    out: dict[str, Value] = {}
    for col in columns[:n]:
        kind = buf[pos]
        if kind == 116:  # t: text
            (ln,) = _U32(buf, pos + 1)
            pos += 5
            out[col] = buf[pos : pos + ln].decode()
            pos += ln
        elif kind == 110:  # n: null
            out[col] = None
            pos += 1
        elif kind == 117:  # u: unchanged TOAST, not sent
            out[col] = UNCHANGED
            pos += 1
        else:  # b: binary (only with the binary option, which capture never requests)
            (ln,) = _U32(buf, pos + 1)
            pos += 5 + ln
    return out, pos
