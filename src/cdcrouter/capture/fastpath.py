"""pgoutput change message -> Kafka key and Avro value in one step (the capture hot path).

The generic path decodes a message into a :class:`~cdcrouter.capture.pgoutput.Change` of str
values, builds a :class:`~cdcrouter.capture.normalize.RowChange`, normalises it into a
BusinessEvent dict and encodes that dict. Per change that is a dozen Python objects per column
and three walks over the row. :class:`RowEncoder` does the same for one table in a single walk
over the message bytes:

* PostgreSQL's text output is already UTF-8, and Avro strings are UTF-8: a plain column's bytes
  go from the message into the Avro value as they are, never becoming a ``str``.
* Everything that depends only on the table (encoded column names, event names, entity type,
  the event's fixed tail) is encoded once, when the Relation message arrives.
* An UPDATE compares the old and new column bytes and converts only the columns that differ.
* For a table without json columns and with one plain entity-id column (most tables), an INSERT
  or an UPDATE/DELETE with the full old row is encoded in Rust (``native/src/rows.rs``,
  :class:`cdcrouter._native.RowPlan`: the column walk, the uuid v5 and the event around them):
  6.6 -> 0.7 µs CPU per change of the bench workload. A rare form (a timestamp not in the ``+00``
  form, a malformed message) makes it return None and the Python code below does that change.

The result is byte-for-byte what ``AvroEncoder.encode(normalize_row(...))`` gives for the same
change (``tests/capture/test_capture_fastpath.py`` checks this on generated messages). Anything
this module does not specialise (json columns, composite or non-text entity ids) goes through
the same canonical functions as the generic path, per column.
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha1
from struct import Struct
from typing import Final

from cdcrouter import _native
from cdcrouter.capture.avro_fast import _SMALL, _key, encode_long
from cdcrouter.capture.canonical import Kind, attribute_key, attributes, canonical_timestamp
from cdcrouter.capture.normalize import _NS_BYTES, _VARIANT, UNCHANGED, TableShape, Value, entity_id
from cdcrouter.capture.pgoutput import Relation

_U32 = Struct(">I").unpack_from
_NULL: Final = b"\x00"
_SOME: Final = b"\x02"
_UUID_LEN: Final = _SMALL[36]  # every event uuid is 36 characters
_ONE_ENTITY: Final = _SMALL[1]

# column kinds, as small ints for the hot loop
_PLAIN, _BOOL, _TS, _JSON = 0, 1, 2, 3
_EXCLUDED, _ID = 4, 5  # plan codes only: an excluded column, the (plain) entity-id column
_KIND_CODE: Final[dict[str, int]] = {
    "plain": _PLAIN,
    "bool": _BOOL,
    "timestamptz": _TS,
    "timestamp": _TS,
    "json": _JSON,
}
_BOOL_BYTES: Final = {b"t": b"true", b"f": b"false", b"true": b"true", b"false": b"false"}

# an extension built before native/src/rows.rs had RowPlan.encode (a stale editable install;
# `pip install -e .` again rebuilds it): every change is then encoded in Python, as before it
_RowPlan = getattr(_native, "RowPlan", None)
if not hasattr(_RowPlan, "encode"):
    _RowPlan = None

_Raw = bytes | None | object  # column bytes, SQL NULL, or UNCHANGED (TOAST not sent)


class KeyMoved(Exception):
    """An UPDATE that gives the row another entity id: the caller reports it through the generic
    path, as a DELETE and an INSERT (``normalize.moved_key``)."""


def _len(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else encode_long(n)


def _ts(raw: bytes) -> bytes:
    """canonical_timestamp on bytes: the common ``+00`` form without a round trip through str."""
    if raw[-3:] == b"+00" and raw[4] == 45:  # "-" after a 4-digit year: see canonical_timestamp
        return raw[:-3].replace(b" ", b"T", 1) + b"Z"
    return canonical_timestamp(raw.decode()).encode()


def _value(kind: int, raw: bytes) -> bytes:
    """Canonical bytes of one non-NULL, non-json value."""
    if kind == _PLAIN:
        return raw
    if kind == _BOOL:
        return _BOOL_BYTES.get(raw, raw)
    return _ts(raw)


class RowEncoder:
    """Encodes the Insert/Update/Delete messages of one captured table (see the module doc).

    ``encode(buf, lsn, ms, saved)`` returns ``(key, value)``: ``buf`` is the pgoutput message,
    ``lsn`` the WAL position of its record (``data_start``), ``ms`` the encoded source COMMIT
    time (:func:`encode_long`) and ``saved`` the encoded produce time.
    """

    __slots__ = (
        "columns",
        "excluded",
        "head",
        "id_columns",
        "id_index",
        "id_positions",
        "key_flags",
        "keys",
        "kinds",
        "mid",
        "n_columns",
        "names",
        "native",
        "null",
        "plan",
        "shape",
        "simple",
        "some",
        "tails",
        "uuid_mid",
    )

    def __init__(self, rel: Relation, shape: TableShape, wire_prefix: bytes) -> None:
        cols = rel.columns
        self.shape = shape
        self.columns = cols
        self.kinds = tuple(_KIND_CODE[shape.kinds.get(c, "plain")] for c in cols)
        self.keys = tuple(attribute_key(c) for c in cols)  # the attribute key of each column
        self.some = tuple(_key(k) + _SOME for k in self.keys)
        self.null = tuple(_key(k) + _NULL for k in self.keys)
        self.excluded = tuple(c in shape.excluded for c in cols)
        self.key_flags = tuple(c in rel.key_columns for c in cols)
        self.id_columns = shape.id_columns
        self.id_positions = tuple(cols.index(c) if c in cols else -1 for c in shape.id_columns)
        single = len(shape.id_columns) == 1 and shape.kinds.get(shape.id_columns[0], "plain") == "plain"
        self.id_index = self.id_positions[0] if single else -1
        # the specialised loops: no json column (no flattening, no key collisions) and one
        # plain entity-id column that the relation has
        self.simple = _JSON not in self.kinds and self.id_index >= 0
        codes = [
            _EXCLUDED if excl else (_ID if i == self.id_index else k)
            for i, (k, excl) in enumerate(zip(self.kinds, self.excluded, strict=True))
        ]
        self.plan = tuple(zip(self.some, self.null, codes, strict=True))
        self.n_columns = len(cols)
        self.uuid_mid = f":{shape.table}:".encode()
        self.head = wire_prefix + _UUID_LEN
        et = _NULL if shape.event_type is None else _SOME + _key(shape.event_type)
        self.mid = et + _ONE_ENTITY + _key(shape.entity_type)
        self.names = {op: _key(name) for op, name in shape.event_names.items()}
        self.tails = {
            op: _NULL + _SOME + _key(shape.table) + _SOME + _key(op) + _SOME
            for op in ("INSERT", "UPDATE", "DELETE")
        }
        ops = ("INSERT", "UPDATE", "DELETE")
        fixed = (self.head, _NS_BYTES, self.uuid_mid, self.mid, [self.names.get(op, b"") for op in ops])
        self.native = _RowPlan and _RowPlan(
            list(self.some),
            list(self.null),
            codes,
            max(self.id_index, 0),
            # (a table without a name for every operation: encoded here, failing as before)
            (*fixed, [self.tails[op] for op in ops]) if all(op in self.names for op in ops) else None,
        )

    # --- tuples -----------------------------------------------------------------------------

    @staticmethod
    def _raw_tuple(buf: bytes, pos: int) -> tuple[list[_Raw], int]:
        """TupleData -> one entry per column: bytes, None (NULL) or UNCHANGED."""
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        out: list[_Raw] = []
        add = out.append
        for _ in range(n):
            k = buf[pos]
            if k == 116:  # t
                (ln,) = _U32(buf, pos + 1)
                pos += 5
                add(buf[pos : pos + ln])
                pos += ln
            elif k == 110:  # n
                add(None)
                pos += 1
            elif k == 117:  # u
                add(UNCHANGED)
                pos += 1
            else:  # b: binary values are never requested; skip like the generic decoder
                (ln,) = _U32(buf, pos + 1)
                pos += 5 + ln
                add(UNCHANGED)
        return out, pos

    def _put(self, attrs: dict[str, bytes], i: int, raw: _Raw) -> None:
        """attrs.update(attributes(kind, column, value)), encoded (raw is bytes or None)."""
        if raw is None:
            attrs[self.keys[i]] = self.null[i]
            return
        kind = self.kinds[i]
        if kind != _JSON:
            v = _value(kind, raw)  # type: ignore[arg-type]
            attrs[self.keys[i]] = self.some[i] + _len(len(v)) + v
            return
        for k, val in attributes("json", self.columns[i], raw.decode()):  # type: ignore[union-attr]
            attrs[k] = _key(k) + (_NULL if val is None else _SOME + _len(len(b := val.encode())) + b)

    def _all(self, attrs: dict[str, bytes], row: list[_Raw]) -> None:
        """Every column of a row (INSERT, DELETE, UPDATE without an old row)."""
        kinds, some, null, excluded, keys = self.kinds, self.some, self.null, self.excluded, self.keys
        for i, raw in enumerate(row):
            if raw is None:
                if not excluded[i]:
                    attrs[keys[i]] = null[i]
            elif raw is UNCHANGED or excluded[i]:
                continue
            elif kinds[i] == _PLAIN:
                attrs[keys[i]] = (
                    some[i] + (_SMALL[len(raw)] if len(raw) < 4096 else encode_long(len(raw))) + raw
                )  # type: ignore[arg-type, operator]
            else:
                self._put(attrs, i, raw)

    def _changed(self, attrs: dict[str, bytes], new: list[_Raw], old: list[_Raw], key_only: bool) -> None:
        """The columns whose canonical value differs (normalize._changed_attributes)."""
        n_old = len(old)
        kinds, cols, excluded, key_flags = self.kinds, self.columns, self.excluded, self.key_flags
        for i, raw in enumerate(new):
            if raw is UNCHANGED or excluded[i]:
                continue
            if i >= n_old or (key_only and not key_flags[i]) or old[i] is UNCHANGED:
                self._put(attrs, i, raw)
                continue
            before = old[i]
            if before == raw:
                continue
            kind = kinds[i]
            if kind == _JSON:
                col = cols[i]
                old_flat = dict(attributes("json", col, None if before is None else before.decode()))  # type: ignore[union-attr]
                new_flat = dict(attributes("json", col, None if raw is None else raw.decode()))  # type: ignore[union-attr]
                for k, v in new_flat.items():
                    if k not in old_flat or old_flat[k] != v:
                        attrs[k] = _key(k) + (_NULL if v is None else _SOME + _len(len(b := v.encode())) + b)
                for k in old_flat.keys() - new_flat.keys():
                    attrs[k] = _key(k) + _NULL
            elif kind == _PLAIN or raw is None or before is None or _value(kind, raw) != _value(kind, before):
                self._put(attrs, i, raw)

    def _moved(self, old: list[_Raw], new: list[_Raw], key_only: bool) -> bool:
        """normalize.moved_key on raw tuples: every id column sent in both rows, ids differ."""
        for j in self.id_positions:
            if j < 0 or j >= len(old) or j >= len(new) or old[j] is UNCHANGED or new[j] is UNCHANGED:
                return False
            if key_only and not self.key_flags[j]:
                return False
        return self._entity_id(old) != self._entity_id(new)

    def _entity_id(self, row: list[_Raw]) -> bytes:
        i = self.id_index
        if i >= 0:
            raw = row[i] if i < len(row) else None
            return raw if type(raw) is bytes else b""
        # composite or non-text ids: the generic rule on decoded values
        values: dict[str, Value] = {}
        for col, j in zip(self.id_columns, self.id_positions, strict=True):
            raw = row[j] if 0 <= j < len(row) else None
            values[col] = raw.decode() if type(raw) is bytes else raw  # type: ignore[assignment]
        return entity_id(values, self.shape).encode()

    # --- specialised loops (simple tables) --------------------------------------------------

    def _row(self, buf: bytes, pos: int, parts: list[bytes]) -> tuple[int, bytes]:
        """Every column of a full row into ``parts``; returns (entries, entity id)."""
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        plan = self.plan if n == self.n_columns else self.plan[:n]
        add = parts.append
        small = _SMALL
        start = len(parts)
        nulls = 0
        eid = b""
        for some, null, code in plan:
            k = buf[pos]
            if k == 116:  # t
                ln = _U32(buf, pos + 1)[0]
                pos += 5
                end = pos + ln
                v = buf[pos:end]
                pos = end
                if code:
                    if code == _ID:
                        eid = v
                    elif code == _TS:
                        v = _ts(v)
                        ln = len(v)
                    elif code == _BOOL:
                        v = _BOOL_BYTES.get(v, v)
                        ln = len(v)
                    else:  # excluded
                        continue
                add(some)
                add(small[ln] if ln < 4096 else encode_long(ln))
                add(v)
            elif k == 110:  # n
                pos += 1
                if code != _EXCLUDED:
                    add(null)
                    nulls += 1
            elif k == 117:  # u: not sent, never reported
                pos += 1
            else:  # b: binary values are never requested
                pos += 5 + _U32(buf, pos + 1)[0]
        return (len(parts) - start - nulls) // 3 + nulls, eid

    def _update_full(self, buf: bytes, parts: list[bytes]) -> tuple[int, bytes]:
        """UPDATE with the full old row ('O'): only the columns whose canonical value changed,
        then the entity-id column if it was not among them. Returns (entries, entity id)."""
        pos = 6
        n_old = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        segs: list[bytes] = []  # each old column as sent: b"t" + length + text, b"n" or b"u"
        add_seg = segs.append
        for _ in range(n_old):
            k = buf[pos]
            if k == 116:
                end = pos + 5 + _U32(buf, pos + 1)[0]
                add_seg(buf[pos:end])
                pos = end
            elif k == 110:
                add_seg(b"n")
                pos += 1
            elif k == 117:
                add_seg(b"u")
                pos += 1
            else:  # b: treated like a value PostgreSQL did not send
                add_seg(b"u")
                pos += 5 + _U32(buf, pos + 1)[0]
        pos += 1  # 'N'
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        plan = self.plan
        add = parts.append
        count = 0
        idx = self.id_index
        eid = b""
        id_changed = False
        if n != n_old:  # a column missing from the old row is reported, like an unsent one
            segs = (segs + [b"u"] * n)[:n]
        for i, seg in enumerate(segs):
            if buf.startswith(seg, pos):  # the same bytes: nothing changed
                pos += len(seg)
                continue
            k = buf[pos]
            v: bytes | None
            if k == 116:
                ln = _U32(buf, pos + 1)[0]
                pos += 5
                v = buf[pos : pos + ln]
                pos += ln
            elif k == 110:
                v = None
                pos += 1
            else:  # u (or b): not sent, never reported
                pos += 1 if k == 117 else 5 + _U32(buf, pos + 1)[0]
                if i == idx:
                    id_changed = True  # no entity id, and none added
                continue
            some, null, code = plan[i]
            if code == _EXCLUDED:
                continue
            if code == _ID:
                id_changed = True
                eid = b"" if v is None else v
                if seg != b"u" and (seg[5:] if seg[0] == 116 else b"") != eid:
                    raise KeyMoved
            elif code != _PLAIN and v is not None:
                v = _value(code, v)
                if seg[0] == 116 and v == _value(code, seg[5:]):  # the same canonical value
                    continue
            count += 1
            if v is None:
                add(null)
            else:
                add(some)
                add(_len(len(v)))
                add(v)
        if idx >= n:  # the new row has no id column: it is reported as null
            count += 1
            add(self.null[idx])
        elif not id_changed:  # normalize_row adds the entity id to every UPDATE
            seg = segs[idx]
            if seg[0] == 116:
                eid = seg[5:]
                count += 1
                add(self.some[idx])
                add(_len(len(eid)))
                add(eid)
            elif seg == b"n":
                count += 1
                add(self.null[idx])
        return count, eid

    # --- messages ---------------------------------------------------------------------------

    def encode(self, buf: bytes, lsn: int, ms: bytes, saved: bytes) -> tuple[bytes, bytes]:
        tag = buf[0]
        parts: list[bytes] = [b""] * 9  # the header, filled in below
        if self.simple and (tag == 73 or buf[5] == 79):  # I, or U/D with the full old row
            # the whole event in Rust (native/src/rows.rs); None: a rare form, done here
            done = self.native and self.native.encode(buf, lsn, ms, saved)
            if done:
                if not done[1]:
                    raise KeyMoved
                return done
            op = "UPDATE" if tag == 85 else "INSERT" if tag == 73 else "DELETE"
            if tag == 85:
                count, eid = self._update_full(buf, parts)
            else:
                count, eid = self._row(buf, 6, parts)
        else:
            op, attrs, eid = self._generic(buf)
            count = len(attrs)
            parts.extend(attrs.values())
        # uuid5(EVENT_NAMESPACE, "<lsn>:<table>:<entity id>") as normalize.event_uuid
        x = sha1(b"%s%X%s%s" % (_NS_BYTES, lsn, self.uuid_mid, eid)).hexdigest()
        parts[0] = self.head
        parts[1] = f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}".encode()
        parts[2] = self.names[op]
        parts[3] = ms
        parts[4] = saved
        parts[5] = self.mid
        parts[6] = _len(len(eid))
        parts[7] = eid
        if count:
            parts[8] = _len(count)
            parts.append(_NULL)  # end of the map
        else:
            parts[8] = _NULL  # an empty map
        parts.append(self.tails[op])
        parts.append(ms)
        return eid, b"".join(parts)

    def _generic(self, buf: bytes) -> tuple[str, dict[str, bytes], bytes]:
        """Any message, with normalize_row's dict semantics: (operation, attributes, entity id)."""
        tag = buf[0]
        attrs: dict[str, bytes] = {}
        if tag == 73:  # I: 'N' + new tuple
            op = "INSERT"
            row, _ = self._raw_tuple(buf, 6)
            self._all(attrs, row)
        elif tag == 68:  # D: 'K' or 'O' + old tuple
            op = "DELETE"
            row, _ = self._raw_tuple(buf, 6)
            if buf[5] == 75:  # K: the key columns only
                row = [r if k else UNCHANGED for r, k in zip(row, self.key_flags, strict=False)]
            self._all(attrs, row)
        else:  # U: optional 'K'/'O' + old tuple, then 'N' + new tuple
            op = "UPDATE"
            marker = buf[5]
            if marker == 75 or marker == 79:
                old, pos = self._raw_tuple(buf, 6)
                row, _ = self._raw_tuple(buf, pos + 1)
                if self._moved(old, row, marker == 75):
                    raise KeyMoved
                self._changed(attrs, row, old, marker == 75)
            else:
                row, _ = self._raw_tuple(buf, 6)
                self._all(attrs, row)
            n = len(row)
            for col, j in zip(self.id_columns, self.id_positions, strict=True):
                raw = row[j] if 0 <= j < n else None
                if raw is not UNCHANGED:
                    if j < 0:
                        attrs[attribute_key(col)] = _key(attribute_key(col)) + _NULL
                    else:
                        self._put(attrs, j, raw)
        return op, attrs, self._entity_id(row)


def fast_kind_ok(kinds: Mapping[str, Kind]) -> bool:
    """Whether the row encoder knows every column kind (all of canonical's kinds today); the
    engine falls back to the generic path for a table where it does not."""
    return all(k in _KIND_CODE for k in kinds.values())
