//! Avro binary BusinessEvent -> the dict fastavro's `schemaless_reader` returns.
//!
//! The field order below is the schema's (`raw-business-event.avsc`); the dicts are built in that
//! order so their key order matches fastavro's too.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::projection::Projection;
use crate::reader::{DecodeError, Problem, Reader, Result};
use crate::strings::StrCache;

/// Decodes a BusinessEvent Avro body starting at `offset` of `buf` into a dict.
///
/// The whole rest of `buf` must be the record: trailing bytes raise ValueError, as do truncated
/// input, bad varints, bad union indexes and invalid UTF-8 (the message names the field and the
/// byte offset). With a `projection`, the body was written with an evolved schema whose added
/// fields the projection locates; they are read past, and the dict is the contract's.
#[pyfunction]
#[pyo3(signature = (buf, offset = 0, projection = None))]
pub fn decode_business_event<'py>(
    py: Python<'py>,
    buf: Cow<'_, [u8]>,
    offset: i64,
    projection: Option<&Bound<'py, Projection>>,
) -> PyResult<Bound<'py, PyDict>> {
    if offset < 0 || offset as u64 > buf.len() as u64 {
        let problem = Problem::BadOffset {
            offset,
            len: buf.len(),
        };
        return Err(to_py(DecodeError {
            problem,
            field: "offset",
            at: 0,
        }));
    }
    let mut r = Reader::new(&buf, offset as usize);
    let mut cache = StrCache::new(py);
    let none = Projection::default();
    let p = projection.map_or(&none, |p| p.get());
    match decode(py, &mut r, &mut cache, p) {
        Ok(event) => Ok(event),
        Err(Fail::Py(e)) => Err(e),
        Err(Fail::Avro(e)) => Err(to_py(e)),
    }
}

fn to_py(e: DecodeError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A decoding failure (bad input) or a Python failure (out of memory, say).
enum Fail {
    Avro(DecodeError),
    Py(PyErr),
}

impl From<DecodeError> for Fail {
    fn from(e: DecodeError) -> Self {
        Fail::Avro(e)
    }
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Self {
        Fail::Py(e)
    }
}

type Out<T> = std::result::Result<T, Fail>;

fn decode<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    p: &Projection,
) -> Out<Bound<'py, PyDict>> {
    p.event.skip(r, 0)?;
    let header = decode_header(py, r, cache, p)?;
    p.event.skip(r, 1)?;
    let body = decode_body(py, r, cache, p)?;
    p.event.skip(r, 2)?;
    let meta = decode_source_metadata(py, r, cache, p)?;
    p.event.skip(r, 3)?;
    r.finish()?;
    let event = PyDict::new(py);
    event.set_item(intern!(py, "eventHeader"), header)?;
    event.set_item(intern!(py, "eventBody"), body)?;
    event.set_item(intern!(py, "sourceMetadata"), meta)?;
    Ok(event)
}

/// A fresh (not cached) Python str: for values that are unique per event (uuids, ids).
#[inline]
fn fresh<'py>(py: Python<'py>, r: &mut Reader<'_>, field: &'static str) -> Result<Bound<'py, PyString>> {
    Ok(PyString::new(py, r.str(field)?))
}

/// A Python str that repeats across events (names, types, map keys): taken from the cache.
#[inline]
fn repeated<'py>(
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    field: &'static str,
) -> Result<Bound<'py, PyString>> {
    let start = r.pos();
    let bytes = r.string_bytes(field)?;
    cache.get(bytes).map_err(|valid_up_to| DecodeError {
        problem: Problem::BadUtf8 { valid_up_to },
        field,
        at: start,
    })
}

/// `["null", "string"]` of a repeated value.
#[inline]
fn opt_repeated<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    field: &'static str,
) -> Result<Bound<'py, PyAny>> {
    Ok(if r.union_present(field)? {
        repeated(r, cache, field)?.into_any()
    } else {
        py.None().into_bound(py)
    })
}

fn decode_header<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    p: &Projection,
) -> Out<Bound<'py, PyDict>> {
    let g = &p.header;
    g.skip(r, 0)?;
    let uuid = fresh(py, r, "eventHeader.uuid")?;
    g.skip(r, 1)?;
    let name = repeated(r, cache, "eventHeader.eventName")?;
    g.skip(r, 2)?;
    let created = r.long("eventHeader.createdDate")?;
    g.skip(r, 3)?;
    let saved = r.long("eventHeader.savedDate")?;
    g.skip(r, 4)?;
    let event_type = opt_repeated(py, r, cache, "eventHeader.eventType")?;
    g.skip(r, 5)?;
    let h = PyDict::new(py);
    h.set_item(intern!(py, "uuid"), uuid)?;
    h.set_item(intern!(py, "eventName"), name)?;
    h.set_item(intern!(py, "createdDate"), created)?;
    h.set_item(intern!(py, "savedDate"), saved)?;
    h.set_item(intern!(py, "eventType"), event_type)?;
    Ok(h)
}

fn decode_body<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    p: &Projection,
) -> Out<Bound<'py, PyDict>> {
    const FIELD: &str = "eventBody.entities";
    p.body.skip(r, 0)?;
    let mut entities: Vec<Bound<'py, PyAny>> = Vec::new();
    loop {
        let n = r.block_count(FIELD)?;
        if n == 0 {
            break;
        }
        // Every entity takes at least 3 bytes, so a huge count fails on truncation quickly;
        // reserve only what the input could hold.
        entities.reserve(n.min(r.remaining() as u64 / 3) as usize);
        for _ in 0..n {
            entities.push(decode_entity(py, r, cache, p)?.into_any());
        }
    }
    p.body.skip(r, 1)?;
    let body = PyDict::new(py);
    body.set_item(intern!(py, "entities"), PyList::new(py, entities)?)?;
    Ok(body)
}

fn decode_entity<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    p: &Projection,
) -> Out<Bound<'py, PyDict>> {
    const ATTRS: &str = "eventBody.entities[].updatedAttributes";
    let g = &p.entity;
    g.skip(r, 0)?;
    let entity_type = repeated(r, cache, "eventBody.entities[].entityType")?;
    g.skip(r, 1)?;
    let entity_id = fresh(py, r, "eventBody.entities[].entityId")?;
    g.skip(r, 2)?;
    let attrs = PyDict::new(py);
    loop {
        let n = r.block_count(ATTRS)?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            let key = repeated(r, cache, "eventBody.entities[].updatedAttributes key")?;
            let value = if r.union_present(ATTRS)? {
                PyString::new(py, r.str(ATTRS)?).into_any()
            } else {
                py.None().into_bound(py)
            };
            attrs.set_item(key, value)?;
        }
    }
    g.skip(r, 3)?;
    let e = PyDict::new(py);
    e.set_item(intern!(py, "entityType"), entity_type)?;
    e.set_item(intern!(py, "entityId"), entity_id)?;
    e.set_item(intern!(py, "updatedAttributes"), attrs)?;
    Ok(e)
}

fn decode_source_metadata<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
    p: &Projection,
) -> Out<Bound<'py, PyDict>> {
    let g = &p.source;
    g.skip(r, 0)?;
    let table = opt_repeated(py, r, cache, "sourceMetadata.table")?;
    g.skip(r, 1)?;
    let operation = opt_repeated(py, r, cache, "sourceMetadata.operation")?;
    g.skip(r, 2)?;
    let timestamp = if r.union_present("sourceMetadata.timestamp")? {
        pyo3::types::PyInt::new(py, r.long("sourceMetadata.timestamp")?).into_any()
    } else {
        py.None().into_bound(py)
    };
    g.skip(r, 3)?;
    let m = PyDict::new(py);
    m.set_item(intern!(py, "table"), table)?;
    m.set_item(intern!(py, "operation"), operation)?;
    m.set_item(intern!(py, "timestamp"), timestamp)?;
    Ok(m)
}
