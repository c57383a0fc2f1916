//! BusinessEvent dict -> the Avro binary bytes fastavro's `schemaless_writer` writes.
//!
//! Missing fields behave as in fastavro: an optional field (one with a default in the schema)
//! takes its default (null, or `{}` for `updatedAttributes`); a missing required field, or a value
//! of the wrong type, raises ValueError/TypeError naming the field.

use std::fmt;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Where a value sits in the event, for error messages (built only on failure).
#[derive(Clone, Copy)]
enum Path {
    Field(&'static str),
    Entity(usize, &'static str),
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Field(name) => f.write_str(name),
            Path::Entity(i, name) => write!(f, "eventBody.entities[{i}]{name}"),
        }
    }
}

/// Encodes a BusinessEvent dict as Avro binary (no wire-format header).
#[pyfunction]
pub fn encode_business_event<'py>(
    py: Python<'py>,
    event: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let event = as_dict(event, Path::Field("event"))?;

    let h = required(event, intern!(py, "eventHeader"), Path::Field("eventHeader"))?;
    let h = as_dict(&h, Path::Field("eventHeader"))?;
    write_str(
        &mut out,
        &required(h, intern!(py, "uuid"), Path::Field("eventHeader.uuid"))?,
        Path::Field("eventHeader.uuid"),
    )?;
    let path = Path::Field("eventHeader.eventName");
    write_str(&mut out, &required(h, intern!(py, "eventName"), path)?, path)?;
    let path = Path::Field("eventHeader.createdDate");
    write_long_obj(&mut out, &required(h, intern!(py, "createdDate"), path)?, path)?;
    let path = Path::Field("eventHeader.savedDate");
    write_long_obj(&mut out, &required(h, intern!(py, "savedDate"), path)?, path)?;
    write_opt_str(
        &mut out,
        h.get_item(intern!(py, "eventType"))?,
        Path::Field("eventHeader.eventType"),
    )?;

    let body = required(event, intern!(py, "eventBody"), Path::Field("eventBody"))?;
    let body = as_dict(&body, Path::Field("eventBody"))?;
    let entities = required(body, intern!(py, "entities"), Path::Field("eventBody.entities"))?;
    if let Ok(list) = entities.cast::<PyList>() {
        write_len(&mut out, list.len());
        for (i, ent) in list.iter().enumerate() {
            write_entity(py, &mut out, &ent, i)?;
        }
    } else if let Ok(tuple) = entities.cast::<PyTuple>() {
        write_len(&mut out, tuple.len());
        for (i, ent) in tuple.iter().enumerate() {
            write_entity(py, &mut out, &ent, i)?;
        }
    } else {
        return Err(type_err(Path::Field("eventBody.entities"), "a list", &entities));
    }
    out.push(0); // end of the entities array

    let sm = required(
        event,
        intern!(py, "sourceMetadata"),
        Path::Field("sourceMetadata"),
    )?;
    let sm = as_dict(&sm, Path::Field("sourceMetadata"))?;
    write_opt_str(
        &mut out,
        sm.get_item(intern!(py, "table"))?,
        Path::Field("sourceMetadata.table"),
    )?;
    write_opt_str(
        &mut out,
        sm.get_item(intern!(py, "operation"))?,
        Path::Field("sourceMetadata.operation"),
    )?;
    match sm.get_item(intern!(py, "timestamp"))? {
        Some(ts) if !ts.is_none() => {
            out.push(2);
            write_long_obj(&mut out, &ts, Path::Field("sourceMetadata.timestamp"))?;
        }
        _ => out.push(0),
    }
    Ok(PyBytes::new(py, &out))
}

fn write_entity(py: Python<'_>, out: &mut Vec<u8>, ent: &Bound<'_, PyAny>, i: usize) -> PyResult<()> {
    let ent = as_dict(ent, Path::Entity(i, ""))?;
    let path = Path::Entity(i, ".entityType");
    write_str(out, &required(ent, intern!(py, "entityType"), path)?, path)?;
    let path = Path::Entity(i, ".entityId");
    write_str(out, &required(ent, intern!(py, "entityId"), path)?, path)?;
    let path = Path::Entity(i, ".updatedAttributes");
    if let Some(attrs) = ent.get_item(intern!(py, "updatedAttributes"))? {
        if !attrs.is_none() {
            let attrs = as_dict(&attrs, path)?;
            write_len(out, attrs.len());
            for (k, v) in attrs.iter() {
                let Ok(k) = k.cast::<PyString>() else {
                    return Err(type_err(path, "a dict with str keys", &k));
                };
                write_text(out, k.to_str()?);
                if v.is_none() {
                    out.push(0);
                } else if let Ok(s) = v.cast::<PyString>() {
                    out.push(2);
                    write_text(out, s.to_str()?);
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "BusinessEvent {path}[{k:?}] must be str or None, got {}",
                        type_name(&v)
                    )));
                }
            }
        }
    }
    out.push(0); // end of the map (also the whole of an empty one)
    Ok(())
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn type_err(path: Path, expected: &str, got: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "BusinessEvent {path} must be {expected}, got {}",
        type_name(got)
    ))
}

fn as_dict<'a, 'py>(v: &'a Bound<'py, PyAny>, path: Path) -> PyResult<&'a Bound<'py, PyDict>> {
    v.cast::<PyDict>().map_err(|_| type_err(path, "a dict", v))
}

fn required<'py>(
    d: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    path: Path,
) -> PyResult<Bound<'py, PyAny>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(v),
        _ => Err(PyValueError::new_err(format!(
            "BusinessEvent {path} is required (missing or None)"
        ))),
    }
}

#[inline]
fn write_varint(out: &mut Vec<u8>, mut z: u64) {
    while z > 0x7F {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn write_long(out: &mut Vec<u8>, n: i64) {
    write_varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

#[inline]
fn write_len(out: &mut Vec<u8>, n: usize) {
    if n > 0 {
        write_long(out, n as i64);
    }
}

#[inline]
fn write_text(out: &mut Vec<u8>, s: &str) {
    write_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn write_str(out: &mut Vec<u8>, v: &Bound<'_, PyAny>, path: Path) -> PyResult<()> {
    let s = v.cast::<PyString>().map_err(|_| type_err(path, "str", v))?;
    write_text(out, s.to_str()?);
    Ok(())
}

fn write_opt_str(out: &mut Vec<u8>, v: Option<Bound<'_, PyAny>>, path: Path) -> PyResult<()> {
    match v {
        Some(v) if !v.is_none() => {
            let s = v
                .cast::<PyString>()
                .map_err(|_| type_err(path, "str or None", &v))?;
            out.push(2);
            write_text(out, s.to_str()?);
        }
        _ => out.push(0),
    }
    Ok(())
}

fn write_long_obj(out: &mut Vec<u8>, v: &Bound<'_, PyAny>, path: Path) -> PyResult<()> {
    if v.cast::<pyo3::types::PyInt>().is_err() {
        return Err(type_err(path, "int", v));
    }
    let n: i64 = v.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "BusinessEvent {path} = {v} does not fit an Avro long (64 bits)"
        ))
    })?;
    write_long(out, n);
    Ok(())
}
