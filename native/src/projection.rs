//! Reading an evolved raw writer schema's records into the contract's dict, natively.
//!
//! Capture upgrades first, so the router meets records written with a newer raw schema than its
//! contract: typically the contract's fields, in the contract's order, with fields added between
//! them. A [`Projection`] lists, for each contract record (the event, EventHeader, EventBody,
//! Entity, SourceMetadata), which added fields to read past before each contract field and after
//! the last one (Avro schema resolution, reader = the contract). The decoder then fills exactly the
//! dict it fills for the contract's own schema. The Python side (`cdcrouter.route.codec`) builds a
//! projection only for writer schemas of that shape and leaves any other to fastavro.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::reader::{Reader, Result};

const ADDED: &str = "a field the contract does not have";

/// The Avro type of an added field, reduced to what it takes to read past it.
#[derive(Debug, Clone)]
pub enum Skip {
    Null,
    Boolean,
    /// int and long (zig-zag varints), and enum indexes
    Varint,
    Float,
    Double,
    /// bytes and string
    Bytes,
    Fixed(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Vec<Skip>),
    Record(Vec<Skip>),
}

impl Skip {
    fn from_py(spec: &Bound<'_, PyAny>) -> PyResult<Skip> {
        if let Ok(name) = spec.cast::<PyString>() {
            return Ok(match name.to_str()? {
                "null" => Skip::Null,
                "boolean" => Skip::Boolean,
                "int" | "long" | "enum" => Skip::Varint,
                "float" => Skip::Float,
                "double" => Skip::Double,
                "bytes" | "string" => Skip::Bytes,
                other => return Err(PyValueError::new_err(format!("unknown Avro type {other:?}"))),
            });
        }
        let pair = spec
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("a skip spec is a type name or a (kind, argument) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("a skip spec tuple has two items"));
        }
        let kind: String = pair.get_item(0)?.extract()?;
        let arg = pair.get_item(1)?;
        Ok(match kind.as_str() {
            "fixed" => Skip::Fixed(arg.extract()?),
            "array" => Skip::Array(Box::new(Skip::from_py(&arg)?)),
            "map" => Skip::Map(Box::new(Skip::from_py(&arg)?)),
            "union" => Skip::Union(specs(&arg)?),
            "record" => Skip::Record(specs(&arg)?),
            other => return Err(PyValueError::new_err(format!("unknown skip kind {other:?}"))),
        })
    }

    fn skip(&self, r: &mut Reader<'_>) -> Result<()> {
        match self {
            Skip::Null => Ok(()),
            Skip::Boolean => r.skip(1, ADDED),
            Skip::Varint => r.long(ADDED).map(|_| ()),
            Skip::Float => r.skip(4, ADDED),
            Skip::Double => r.skip(8, ADDED),
            Skip::Bytes => r.string_bytes(ADDED).map(|_| ()),
            Skip::Fixed(n) => r.skip(*n as u64, ADDED),
            Skip::Array(items) => loop {
                let n = r.block_count(ADDED)?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    items.skip(r)?;
                }
            },
            Skip::Map(values) => loop {
                let n = r.block_count(ADDED)?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    r.string_bytes(ADDED)?;
                    values.skip(r)?;
                }
            },
            Skip::Union(branches) => {
                let at = r.pos();
                let i = r.long(ADDED)?;
                match usize::try_from(i).ok().and_then(|i| branches.get(i)) {
                    Some(branch) => branch.skip(r),
                    None => Err(r.bad_union(i, ADDED, at)),
                }
            }
            Skip::Record(fields) => fields.iter().try_for_each(|f| f.skip(r)),
        }
    }
}

fn specs(list: &Bound<'_, PyAny>) -> PyResult<Vec<Skip>> {
    let list = list
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("expected a list of skip specs"))?;
    list.iter().map(|s| Skip::from_py(&s)).collect()
}

/// Added fields of one contract record: `gaps[i]` precede its i-th field, the last follow it.
#[derive(Debug, Default)]
pub struct Gaps(Vec<Vec<Skip>>);

impl Gaps {
    fn from_py(gaps: &Bound<'_, PyAny>, fields: usize) -> PyResult<Gaps> {
        let list = gaps
            .cast::<PyList>()
            .map_err(|_| PyTypeError::new_err("gaps are a list of lists of skip specs"))?;
        if list.len() != fields + 1 {
            return Err(PyValueError::new_err(format!(
                "a record with {fields} contract fields has {} gaps, got {}",
                fields + 1,
                list.len()
            )));
        }
        Ok(Gaps(list.iter().map(|g| specs(&g)).collect::<PyResult<_>>()?))
    }

    /// Reads past the added fields before contract field `i` (or after the last one).
    #[inline]
    pub fn skip(&self, r: &mut Reader<'_>, i: usize) -> Result<()> {
        match self.0.get(i) {
            Some(fields) if !fields.is_empty() => fields.iter().try_for_each(|f| f.skip(r)),
            _ => Ok(()),
        }
    }
}

/// Where an evolved writer schema's added fields are, per contract record.
#[pyclass(frozen, module = "cdcrouter._native")]
#[derive(Debug, Default)]
pub struct Projection {
    pub event: Gaps,
    pub header: Gaps,
    pub body: Gaps,
    pub entity: Gaps,
    pub source: Gaps,
}

#[pymethods]
impl Projection {
    /// Each argument is a list of gaps (one more than the record's contract fields); a gap is a
    /// list of skip specs: a type name (`"string"`, `"long"`, `"enum"`...) or `("fixed", size)`,
    /// `("array", spec)`, `("map", spec)`, `("union", [specs])`, `("record", [specs])`.
    #[new]
    fn new(
        event: &Bound<'_, PyAny>,
        header: &Bound<'_, PyAny>,
        body: &Bound<'_, PyAny>,
        entity: &Bound<'_, PyAny>,
        source: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(Projection {
            event: Gaps::from_py(event, 3)?,
            header: Gaps::from_py(header, 5)?,
            body: Gaps::from_py(body, 1)?,
            entity: Gaps::from_py(entity, 3)?,
            source: Gaps::from_py(source, 3)?,
        })
    }
}
