//! `cdcrouter.capture.fastpath.RowEncoder.encode` for its "simple" tables: a pgoutput
//! Insert/Update/Delete message -> the event's Kafka key and Avro value.
//!
//! Byte for byte what `RowEncoder._row` / `RowEncoder._update_full` and the event assembly build
//! in Python (those stay as the fallback and the reference). Anything unusual (a truncated message, more columns than
//! the relation, a timestamp not in the common `+00` form) returns None and the caller runs the
//! Python walk, so every error and rare form keeps exactly its Python behaviour.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

const PLAIN: u8 = 0;
const BOOL: u8 = 1;
const TS: u8 = 2;
const EXCLUDED: u8 = 4;
const ID: u8 = 5;

/// A moved entity id (fastpath.KeyMoved): the count returned instead of an entry count.
const KEY_MOVED: i64 = -1;

fn u16_at(buf: &[u8], pos: usize) -> Option<usize> {
    let b = buf.get(pos..pos + 2)?;
    Some(((b[0] as usize) << 8) | b[1] as usize)
}

fn u32_at(buf: &[u8], pos: usize) -> Option<usize> {
    let b = buf.get(pos..pos + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Avro long (zig-zag varint) of a non-negative length.
fn put_len(out: &mut Vec<u8>, n: usize) {
    let mut v = (n as u64) << 1;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// fastpath._value for BOOL/TS (None: the Python slow form is needed).
fn canonical<'a>(code: u8, raw: &'a [u8], scratch: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    match code {
        BOOL => Some(match raw {
            b"t" | b"true" => b"true",
            b"f" | b"false" => b"false",
            _ => raw,
        }),
        TS => {
            if raw.len() < 5 || !raw.ends_with(b"+00") || raw[4] != b'-' {
                return None;
            }
            scratch.clear();
            let body = &raw[..raw.len() - 3];
            match body.iter().position(|&c| c == b' ') {
                Some(i) => {
                    scratch.extend_from_slice(&body[..i]);
                    scratch.push(b'T');
                    scratch.extend_from_slice(&body[i + 1..]);
                }
                None => scratch.extend_from_slice(body),
            }
            scratch.push(b'Z');
            Some(&scratch[..])
        }
        _ => Some(raw),
    }
}

/// A column as the old row sent it: a value, NULL or not sent ('u', or 'b' taken as such).
#[derive(Clone, Copy)]
enum Seg {
    Text(usize, usize), // the whole 't' + length + text segment: start, end
    Null,
    Unsent,
}

/// The per-relation plan: each column's encoded `key + 0x02` and `key + 0x00`, its code, and
/// the entity-id column.
#[pyclass(frozen, module = "cdcrouter._native")]
pub struct RowPlan {
    some: Vec<Vec<u8>>,
    null: Vec<Vec<u8>>,
    codes: Vec<u8>,
    id_index: usize,
    event: Option<EventParts>,
}

/// What `RowEncoder.encode` puts around the entries: all fixed per table and operation.
struct EventParts {
    head: Vec<u8>,       // wire prefix + the uuid's length
    namespace: Vec<u8>,  // the uuid v5 namespace's 16 bytes
    uuid_mid: Vec<u8>,   // ":<table>:"
    mid: Vec<u8>,        // event type, one entity, entity type
    names: [Vec<u8>; 3], // INSERT, UPDATE, DELETE: the encoded event name
    tails: [Vec<u8>; 3], // INSERT, UPDATE, DELETE: the source record up to its commit time
}

#[pymethods]
impl RowPlan {
    /// `event`: (head, namespace, uuid_mid, mid, names, tails) for `encode` (names and tails
    /// for INSERT, UPDATE, DELETE in that order).
    #[new]
    #[pyo3(signature = (some, null, codes, id_index, event=None))]
    #[allow(clippy::type_complexity)]
    fn new(
        some: Vec<Vec<u8>>,
        null: Vec<Vec<u8>>,
        codes: Vec<u8>,
        id_index: usize,
        event: Option<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, [Vec<u8>; 3], [Vec<u8>; 3])>,
    ) -> Self {
        let event = event.map(|(head, namespace, uuid_mid, mid, names, tails)| EventParts {
            head,
            namespace,
            uuid_mid,
            mid,
            names,
            tails,
        });
        RowPlan {
            some,
            null,
            codes,
            id_index,
            event,
        }
    }

    /// RowEncoder.encode for an Insert, or an Update/Delete with the full old row: (key, value),
    /// an empty value when the entity id changed (KeyMoved), None for the Python walk.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        lsn: u64,
        ms: &[u8],
        saved: &[u8],
    ) -> Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let ev = self.event.as_ref()?;
        let (op, (count, eid, entries)) = match *buf.first()? {
            b'I' => (0, self.walk_row(buf, 6)?),
            b'U' => (1, self.walk_update(buf)?),
            _ => (2, self.walk_row(buf, 6)?),
        };
        if count < 0 {
            return Some((PyBytes::new(py, b""), PyBytes::new(py, b"")));
        }
        let mut out = Vec::with_capacity(160 + entries.len() + eid.len());
        out.extend_from_slice(&ev.head);
        push_uuid(&mut out, ev, lsn, eid);
        out.extend_from_slice(&ev.names[op]);
        out.extend_from_slice(ms);
        out.extend_from_slice(saved);
        out.extend_from_slice(&ev.mid);
        put_len(&mut out, eid.len());
        out.extend_from_slice(eid);
        put_len(&mut out, count as usize); // 0: the empty map
        if count > 0 {
            out.extend_from_slice(&entries);
            out.push(0); // end of the map
        }
        out.extend_from_slice(&ev.tails[op]);
        out.extend_from_slice(ms);
        Some((PyBytes::new(py, eid), PyBytes::new(py, &out)))
    }
}

/// `str(uuid5(namespace, "<LSN in hex>:<table>:<entity id>"))` (normalize.event_uuid).
fn push_uuid(out: &mut Vec<u8>, ev: &EventParts, lsn: u64, eid: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = sha1_smol::Sha1::new();
    h.update(&ev.namespace);
    h.update(format!("{lsn:X}").as_bytes());
    h.update(&ev.uuid_mid);
    h.update(eid);
    let mut d = h.digest().bytes();
    d[6] = (d[6] & 0x0f) | 0x50; // version 5
    d[8] = (d[8] & 0x3f) | 0x80; // RFC 4122 variant
    for (i, b) in d[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

impl RowPlan {
    fn entry(&self, out: &mut Vec<u8>, i: usize, v: Option<&[u8]>) {
        match v {
            None => out.extend_from_slice(&self.null[i]),
            Some(v) => {
                out.extend_from_slice(&self.some[i]);
                put_len(out, v.len());
                out.extend_from_slice(v);
            }
        }
    }

    fn walk_row<'b>(&self, buf: &'b [u8], mut pos: usize) -> Option<(i64, &'b [u8], Vec<u8>)> {
        let n = u16_at(buf, pos)?.min(self.codes.len());
        pos += 2;
        let mut out = Vec::with_capacity(buf.len() + 16 * n);
        let mut scratch = Vec::new();
        let mut count = 0i64;
        let mut eid: &[u8] = b"";
        for i in 0..n {
            let code = self.codes[i];
            match *buf.get(pos)? {
                b't' => {
                    let ln = u32_at(buf, pos + 1)?;
                    let v = buf.get(pos + 5..pos + 5 + ln)?;
                    pos += 5 + ln;
                    if code == EXCLUDED {
                        continue;
                    }
                    if code == ID {
                        eid = v;
                    }
                    let v = canonical(code, v, &mut scratch)?;
                    self.entry(&mut out, i, Some(v));
                    count += 1;
                }
                b'n' => {
                    pos += 1;
                    if code != EXCLUDED {
                        self.entry(&mut out, i, None);
                        count += 1;
                    }
                }
                b'u' => pos += 1,
                _ => pos += 5 + u32_at(buf, pos + 1)?,
            }
        }
        Some((count, eid, out))
    }

    fn walk_update<'b>(&self, buf: &'b [u8]) -> Option<(i64, &'b [u8], Vec<u8>)> {
        let mut pos = 6;
        let n_old = u16_at(buf, pos)?;
        pos += 2;
        let mut segs: Vec<Seg> = Vec::with_capacity(n_old);
        for _ in 0..n_old {
            match *buf.get(pos)? {
                b't' => {
                    let end = pos + 5 + u32_at(buf, pos + 1)?;
                    buf.get(pos..end)?;
                    segs.push(Seg::Text(pos, end));
                    pos = end;
                }
                b'n' => {
                    segs.push(Seg::Null);
                    pos += 1;
                }
                b'u' => {
                    segs.push(Seg::Unsent);
                    pos += 1;
                }
                _ => {
                    segs.push(Seg::Unsent);
                    pos += 5 + u32_at(buf, pos + 1)?;
                }
            }
        }
        pos += 1; // 'N'
        let n = u16_at(buf, pos)?;
        pos += 2;
        segs.resize(n, Seg::Unsent); // a column missing from the old row: reported
        let idx = self.id_index;
        let mut out = Vec::with_capacity(64);
        let mut scratch = Vec::new();
        let mut scratch_old = Vec::new();
        let mut count = 0i64;
        let mut eid: &[u8] = b"";
        let mut id_changed = false;
        for (i, seg) in segs.iter().enumerate() {
            let k = *buf.get(pos)?;
            // the same bytes as the old column: nothing changed
            match *seg {
                Seg::Text(s, e) if buf.get(pos..pos + (e - s)) == Some(&buf[s..e]) => {
                    pos += e - s;
                    continue;
                }
                Seg::Null if k == b'n' => {
                    pos += 1;
                    continue;
                }
                Seg::Unsent if k == b'u' => {
                    pos += 1;
                    continue;
                }
                _ => {}
            }
            let v: Option<&[u8]> = match k {
                b't' => {
                    let ln = u32_at(buf, pos + 1)?;
                    let v = buf.get(pos + 5..pos + 5 + ln)?;
                    pos += 5 + ln;
                    Some(v)
                }
                b'n' => {
                    pos += 1;
                    None
                }
                _ => {
                    pos += if k == b'u' { 1 } else { 5 + u32_at(buf, pos + 1)? };
                    if i == idx {
                        id_changed = true;
                    }
                    continue;
                }
            };
            let code = *self.codes.get(i)?;
            if code == EXCLUDED {
                continue;
            }
            let old_text = match *seg {
                Seg::Text(s, e) => Some(&buf[s + 5..e]),
                _ => None,
            };
            let mut value = v;
            if code == ID {
                id_changed = true;
                eid = v.unwrap_or(b"");
                if !matches!(seg, Seg::Unsent) && old_text.unwrap_or(b"") != eid {
                    return Some((KEY_MOVED, b"", Vec::new()));
                }
            } else if code != PLAIN {
                if let Some(raw) = v {
                    let new_c = canonical(code, raw, &mut scratch)?;
                    if let Some(old) = old_text {
                        if canonical(code, old, &mut scratch_old)? == new_c {
                            continue; // the same canonical value
                        }
                    }
                    value = Some(new_c);
                }
            }
            count += 1;
            self.entry(&mut out, i, value);
        }
        if idx >= n {
            count += 1; // the new row has no id column: reported as null
            self.entry(&mut out, idx, None);
        } else if !id_changed {
            // normalize_row adds the entity id to every UPDATE
            match segs[idx] {
                Seg::Text(s, e) => {
                    eid = &buf[s + 5..e];
                    count += 1;
                    self.entry(&mut out, idx, Some(eid));
                }
                Seg::Null => {
                    count += 1;
                    self.entry(&mut out, idx, None);
                }
                Seg::Unsent => {}
            }
        }
        Some((count, eid, out))
    }
}
