//! `T5.tokenizer`: the checkpoint's tokenizer (the library's `Tokenizer`).

use crate::errors::{guarded, Failure};
use crate::model::Inner;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::sync::Arc;

/// The checkpoint's tokenizer: `encode` appends `</s>` as Hugging Face's
/// T5 tokenizer does; `decode` skips special tokens.
#[pyclass(frozen, module = "t5edge")]
pub struct Tokenizer {
    pub inner: Arc<Inner>,
}

impl Tokenizer {
    fn tok(&self) -> &t5edge::Tokenizer {
        // A Tokenizer object is only made for a model that has one.
        self.inner.tok.as_ref().expect("tokenizer present")
    }
}

#[pymethods]
impl Tokenizer {
    /// Token ids of a str (a list of ints), or of each str of a list.
    #[pyo3(signature = (text, /))]
    fn encode(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(s) = text.cast::<PyString>() {
            let s = s.to_str()?.to_owned();
            let ids = py.detach(|| guarded(|| Ok(self.tok().encode(&s)?)))?;
            return Ok(ids.into_pyobject(py)?.into_any().unbind());
        }
        let texts: Vec<String> = text
            .extract()
            .map_err(|_| Failure::request("encode takes a str or a list of str"))?;
        let ids = py.detach(|| guarded(|| Ok(self.tok().encode_batch(&texts)?)))?;
        Ok(ids.into_pyobject(py)?.into_any().unbind())
    }

    /// Text of a sequence of ids, or of each sequence of a list.
    #[pyo3(signature = (ids, /))]
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(one) = ids.extract::<Vec<u32>>() {
            let text = py.detach(|| guarded(|| Ok(self.tok().decode(&one)?)))?;
            return Ok(text.into_pyobject(py)?.into_any().unbind());
        }
        let many: Vec<Vec<u32>> = ids.extract().map_err(|_| {
            Failure::request(
                "decode takes a sequence of token ids (ints from 0 to 2^32-1) or a list of them",
            )
        })?;
        let texts = py.detach(|| {
            guarded(|| {
                many.iter()
                    .map(|s| Ok(self.tok().decode(s)?))
                    .collect::<Result<Vec<_>, _>>()
            })
        })?;
        Ok(texts.into_pyobject(py)?.into_any().unbind())
    }

    /// The piece of one id (`None` for an id the vocabulary lacks).
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tok().id_to_token(id)
    }

    /// Number of entries in the tokenizer's vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.tok().vocab_size()
    }

    fn __repr__(&self) -> String {
        format!("t5edge.Tokenizer(vocab_size={})", self.vocab_size())
    }
}
