//! The `t5edge` Python module: a thin layer over the t5edge library. Every
//! request goes to the library's own types and rules (`LoadSpec`,
//! `GenerateOptions::overlay`, `Prompt::ids`, `generate`, ...); this crate only
//! converts between Python objects and those, releases the GIL around the
//! work, and turns errors (and panics) into Python exceptions.

mod convert;
mod errors;
mod model;
mod stream;
mod tokenizer;
mod tools;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "t5edge")]
fn t5edge_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<model::T5>()?;
    m.add_class::<model::Generation>()?;
    m.add_class::<model::Score>()?;
    m.add_class::<stream::GenerateStream>()?;
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_function(wrap_pyfunction!(tools::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(tools::synth, m)?)?;
    m.add_function(wrap_pyfunction!(tools::isa, m)?)?;
    m.add_function(wrap_pyfunction!(tools::panic_for_test, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
