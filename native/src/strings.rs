//! Python strs for values that repeat across events (field values like names, map keys).

use pyo3::prelude::*;
use pyo3::types::PyString;

pub struct StrCache<'py> {
    py: Python<'py>,
}

impl<'py> StrCache<'py> {
    pub fn new(py: Python<'py>) -> Self {
        StrCache { py }
    }

    /// The str for `bytes`; `Err(valid_up_to)` when they are not UTF-8.
    #[inline]
    pub fn get(&mut self, bytes: &[u8]) -> Result<Bound<'py, PyString>, usize> {
        let s = std::str::from_utf8(bytes).map_err(|e| e.valid_up_to())?;
        Ok(PyString::new(self.py, s))
    }
}
