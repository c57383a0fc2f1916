//! Python strs for values that repeat across events: event names, entity types, table and
//! operation names, and above all the attribute map keys (column names).
//!
//! Reusing one str object per distinct value skips an allocation, a UTF-8 decode and the str's
//! hash (cached in the object, so the dict insert does not rehash it) for most strings of an
//! event, and keeps the decoded events small in memory. The cache is process-wide, bounded in
//! entries and in key length, and filled only while it is not full.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3::types::PyString;

/// Distinct strings kept at most (column names, event names... are a bounded set in practice).
const MAX_ENTRIES: usize = 16_384;
/// Longer strings are not worth caching (and are unlikely to repeat).
const MAX_LEN: usize = 64;

type Map = HashMap<Box<[u8]>, Py<PyString>, BuildHasherDefault<WordHasher>>;

static CACHE: LazyLock<Mutex<Map>> =
    LazyLock::new(|| Mutex::new(HashMap::with_capacity_and_hasher(256, Default::default())));

/// A multiply-rotate hash over 8-byte words: the keys are short, and std's SipHash showed up as
/// ~8% of a decode. Not DoS-resistant, which the bounded size of the cache makes acceptable.
#[derive(Default)]
struct WordHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl WordHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The cache, locked for one decode call (every decode holds the GIL, so the lock is never
/// contended; `try_lock` only fails on re-entry, e.g. a finalizer that decodes during a decode,
/// and then the call simply goes without the cache instead of deadlocking).
pub struct StrCache<'py> {
    py: Python<'py>,
    map: Option<MutexGuard<'static, Map>>,
}

impl<'py> StrCache<'py> {
    pub fn new(py: Python<'py>) -> Self {
        let map = match CACHE.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        StrCache { py, map }
    }

    /// The str for `bytes`; `Err(valid_up_to)` when they are not UTF-8.
    #[inline]
    pub fn get(&mut self, bytes: &[u8]) -> Result<Bound<'py, PyString>, usize> {
        let py = self.py;
        let Some(map) = self.map.as_mut().filter(|_| bytes.len() <= MAX_LEN) else {
            return new_str(py, bytes);
        };
        if let Some(s) = map.get(bytes) {
            return Ok(s.bind(py).clone());
        }
        let s = new_str(py, bytes)?;
        if map.len() < MAX_ENTRIES {
            map.insert(bytes.into(), s.clone().unbind());
        }
        Ok(s)
    }
}

#[inline]
fn new_str<'py>(py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyString>, usize> {
    let s = std::str::from_utf8(bytes).map_err(|e| e.valid_up_to())?;
    Ok(PyString::new(py, s))
}
