//! Avro binary BusinessEvent -> the dict fastavro's `schemaless_reader` returns.
//!
//! The field order below is the schema's (`raw-business-event.avsc`); the dicts are built in that
//! order so their key order matches fastavro's too.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::reader::{DecodeError, Problem, Reader, Result};
use crate::strings::StrCache;

/// Decodes a BusinessEvent Avro body starting at `offset` of `buf` into a dict.
///
/// The whole rest of `buf` must be the record: trailing bytes raise ValueError, as do truncated
/// input, bad varints, bad union indexes and invalid UTF-8 (the message names the field and the
/// byte offset).
#[pyfunction]
#[pyo3(signature = (buf, offset = 0))]
pub fn decode_business_event<'py>(
    py: Python<'py>,
    buf: Cow<'_, [u8]>,
    offset: i64,
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
    match decode(py, &mut r, &mut cache) {
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

fn decode<'py>(py: Python<'py>, r: &mut Reader<'_>, cache: &mut StrCache<'py>) -> Out<Bound<'py, PyDict>> {
    let header = decode_header(py, r, cache)?;
    let body = decode_body(py, r, cache)?;
    let meta = decode_source_metadata(py, r, cache)?;
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
) -> Out<Bound<'py, PyDict>> {
    let uuid = fresh(py, r, "eventHeader.uuid")?;
    let name = repeated(r, cache, "eventHeader.eventName")?;
    let created = r.long("eventHeader.createdDate")?;
    let saved = r.long("eventHeader.savedDate")?;
    let event_type = opt_repeated(py, r, cache, "eventHeader.eventType")?;
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
) -> Out<Bound<'py, PyDict>> {
    const FIELD: &str = "eventBody.entities";
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
            entities.push(decode_entity(py, r, cache)?.into_any());
        }
    }
    let body = PyDict::new(py);
    body.set_item(intern!(py, "entities"), PyList::new(py, entities)?)?;
    Ok(body)
}

fn decode_entity<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    cache: &mut StrCache<'py>,
) -> Out<Bound<'py, PyDict>> {
    const ATTRS: &str = "eventBody.entities[].updatedAttributes";
    let entity_type = repeated(r, cache, "eventBody.entities[].entityType")?;
    let entity_id = fresh(py, r, "eventBody.entities[].entityId")?;
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
) -> Out<Bound<'py, PyDict>> {
    let table = opt_repeated(py, r, cache, "sourceMetadata.table")?;
    let operation = opt_repeated(py, r, cache, "sourceMetadata.operation")?;
    let timestamp = if r.union_present("sourceMetadata.timestamp")? {
        pyo3::types::PyInt::new(py, r.long("sourceMetadata.timestamp")?).into_any()
    } else {
        py.None().into_bound(py)
    };
    let m = PyDict::new(py);
    m.set_item(intern!(py, "table"), table)?;
    m.set_item(intern!(py, "operation"), operation)?;
    m.set_item(intern!(py, "timestamp"), timestamp)?;
    Ok(m)
}
