//! `cdcrouter._native`: a native Avro codec for the BusinessEvent record.
//!
//! Decoding and encoding are specialised to `raw-business-event.avsc` and checked byte for byte
//! against fastavro by `tests/test_native_codec.py`. Any schema change must update both the .avsc
//! and this crate.
//!
//! `projection.rs` lets the decoder read an evolved raw schema (the contract's fields with fields
//! added between them) into the same dict.
//!
//! It also holds the embedded filter engine's `TRY_CAST(s AS DECIMAL(38, 10))` (`decimal.rs`),
//! the one per-event cost of numeric filters.

use pyo3::prelude::*;

mod decimal;
mod decode;
mod encode;
mod projection;
mod reader;
mod rows;
mod strings;

/// What this build of the codec is, for `cdcrouter version`: the crate version, the Cargo profile
/// (an unoptimised debug build is ~10x slower, worth seeing at once) and the target it was built for.
#[pyfunction]
fn build_info() -> std::collections::HashMap<&'static str, &'static str> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    std::collections::HashMap::from([
        ("crate", env!("CARGO_PKG_NAME")),
        ("version", env!("CARGO_PKG_VERSION")),
        ("profile", profile),
        ("arch", std::env::consts::ARCH),
        ("os", std::env::consts::OS),
    ])
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(decode::decode_business_event, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_business_event, m)?)?;
    m.add_function(wrap_pyfunction!(decimal::try_cast_decimal, m)?)?;
    m.add_class::<projection::Projection>()?;
    m.add_class::<rows::RowPlan>()?;
    Ok(())
}
