//! A bounds-checked cursor over an Avro binary body.
//!
//! Every read checks the remaining length first, so no input can make it index out of bounds or
//! panic; a failure is a [`DecodeError`] naming what was being read and the byte offset (into the
//! buffer the caller passed, header included) where it started.

use std::fmt;

/// What went wrong, without the location.
#[derive(Debug)]
pub enum Problem {
    /// The input ended inside a value.
    Truncated { needed: u64, left: usize },
    /// A varint longer than 10 bytes, or one whose 10th byte overflows 64 bits.
    BadVarint,
    /// A string or bytes length below zero.
    NegativeLength(i64),
    /// A union branch index the schema does not have.
    BadUnionIndex(i64),
    /// A string whose bytes are not UTF-8.
    BadUtf8 { valid_up_to: usize },
    /// Bytes left over after the record.
    Trailing(usize),
    /// The caller's offset is outside the buffer.
    BadOffset { offset: i64, len: usize },
}

/// A decoding failure: what, while reading which field, at which byte offset.
#[derive(Debug)]
pub struct DecodeError {
    pub problem: Problem,
    pub field: &'static str,
    pub at: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, at) = (self.field, self.at);
        match &self.problem {
            Problem::Truncated { needed, left } => write!(
                f,
                "truncated BusinessEvent: {field} at byte offset {at} needs {needed} byte(s), only {left} left"
            ),
            Problem::BadVarint => write!(
                f,
                "invalid varint for {field} at byte offset {at} (longer than 10 bytes or beyond 64 bits)"
            ),
            Problem::NegativeLength(n) => {
                write!(f, "negative length {n} for {field} at byte offset {at}")
            }
            Problem::BadUnionIndex(i) => write!(
                f,
                "bad union index {i} for {field} at byte offset {at} (not a branch of the schema's union)"
            ),
            Problem::BadUtf8 { valid_up_to } => write!(
                f,
                "invalid UTF-8 in {field}: the string at byte offset {at} is valid only up to its byte {valid_up_to}"
            ),
            Problem::Trailing(n) => write!(
                f,
                "{n} trailing bytes after the BusinessEvent record ending at byte offset {at}: \
                 the writer used another schema than the one its id names"
            ),
            Problem::BadOffset { offset, len } => {
                write!(f, "offset {offset} is outside the buffer of {len} bytes")
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, DecodeError>;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn err(&self, problem: Problem, field: &'static str, at: usize) -> DecodeError {
        DecodeError { problem, field, at }
    }

    /// An unsigned LEB128 varint of at most 10 bytes (a 64-bit value).
    #[inline]
    fn varint(&mut self, field: &'static str) -> Result<u64> {
        let start = self.pos;
        // Fast path: one byte (small lengths, union indexes, counts).
        if let Some(&b) = self.buf.get(start) {
            if b < 0x80 {
                self.pos = start + 1;
                return Ok(u64::from(b));
            }
        }
        let mut value: u64 = 0;
        let mut shift = 0u32;
        let mut i = start;
        loop {
            let Some(&b) = self.buf.get(i) else {
                let left = self.buf.len().saturating_sub(start);
                return Err(self.err(
                    Problem::Truncated {
                        needed: (left + 1) as u64,
                        left,
                    },
                    field,
                    start,
                ));
            };
            i += 1;
            if shift == 63 && b > 1 {
                return Err(self.err(Problem::BadVarint, field, start));
            }
            value |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                self.pos = i;
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err(Problem::BadVarint, field, start));
            }
        }
    }

    /// An Avro long (zig-zag varint).
    #[inline]
    pub fn long(&mut self, field: &'static str) -> Result<i64> {
        let z = self.varint(field)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// The bytes of an Avro string (length-prefixed), not yet checked to be UTF-8.
    #[inline]
    pub fn string_bytes(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let start = self.pos;
        let n = self.long(field)?;
        if n < 0 {
            return Err(self.err(Problem::NegativeLength(n), field, start));
        }
        let from = self.pos;
        self.skip(n as u64, field)?;
        // In bounds: skip checked n <= remaining.
        Ok(&self.buf[from..self.pos])
    }

    /// An Avro string as `&str`.
    #[inline]
    pub fn str(&mut self, field: &'static str) -> Result<&'a str> {
        let start = self.pos;
        let bytes = self.string_bytes(field)?;
        std::str::from_utf8(bytes).map_err(|e| {
            self.err(
                Problem::BadUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
                field,
                start,
            )
        })
    }

    /// The branch of a two-branch `["null", X]` union: false for null, true for X.
    #[inline]
    pub fn union_present(&mut self, field: &'static str) -> Result<bool> {
        let start = self.pos;
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(self.err(Problem::BadUnionIndex(i), field, start)),
        }
    }

    /// The item count of the next array/map block; 0 ends the array/map.
    ///
    /// A negative count means `|count|` items preceded by the block's size in bytes, which is
    /// read and ignored (as fastavro does).
    #[inline]
    pub fn block_count(&mut self, field: &'static str) -> Result<u64> {
        let count = self.long(field)?;
        if count < 0 {
            self.long(field)?;
        }
        Ok(count.unsigned_abs())
    }

    /// Reads past `n` bytes (a string's, a fixed's, a float's...).
    #[inline]
    pub fn skip(&mut self, n: u64, field: &'static str) -> Result<()> {
        let left = self.remaining();
        if n > left as u64 {
            return Err(self.err(Problem::Truncated { needed: n, left }, field, self.pos));
        }
        self.pos += n as usize; // <= remaining: fits
        Ok(())
    }

    /// The error for a union branch index `i` (read at `at`) the schema does not have.
    pub fn bad_union(&self, i: i64, field: &'static str, at: usize) -> DecodeError {
        self.err(Problem::BadUnionIndex(i), field, at)
    }

    /// Fails unless the whole buffer was consumed.
    pub fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.err(Problem::Trailing(n), "record end", self.pos)),
        }
    }
}
