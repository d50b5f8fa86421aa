//! Python values in and out: prompts (one or a batch, text or ids), keyword
//! options as the JSON object `GenerateOptions::overlay` takes, JSON values
//! (the config) as Python objects.

use crate::errors::Failure;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use t5edge::generate::Prompt;

/// The prompts of a call and whether the caller gave one (answered with one
/// result) or a list (answered with a list).
pub struct Prompts {
    pub prompts: Vec<Prompt>,
    pub single: bool,
}

/// One input: a `str`, or a sequence of token ids (a list, tuple or NumPy
/// array of ints).
pub fn prompt(obj: &Bound<'_, PyAny>) -> PyResult<Prompt> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Prompt::Text(s.to_str()?.to_owned()));
    }
    obj.extract::<Vec<u32>>().map(Prompt::Ids).map_err(|_| {
        Failure::request(format!(
            "an input is a str or a sequence of token ids (ints from 0 to 2^32-1), not {}",
            type_name(obj)
        ))
        .into()
    })
}

/// `inputs` as the generate/embed/encode methods take it: a `str`, one
/// sequence of ids, or a list of either.
pub fn prompts(inputs: &Bound<'_, PyAny>) -> PyResult<Prompts> {
    if inputs.is_instance_of::<PyString>() {
        return Ok(Prompts {
            prompts: vec![prompt(inputs)?],
            single: true,
        });
    }
    let items: Vec<Bound<'_, PyAny>> = match inputs.try_iter() {
        Ok(it) => it.collect::<PyResult<_>>()?,
        Err(_) => {
            return Err(Failure::request(format!(
                "inputs are a str, a sequence of token ids, or a list of those, not {}",
                type_name(inputs)
            ))
            .into())
        }
    };
    let Some(first) = items.first() else {
        return Err(Failure::request("no inputs: the list is empty").into());
    };
    // A flat sequence of ints is one prompt of ids.
    if !first.is_instance_of::<PyString>() && first.extract::<u32>().is_ok() {
        return Ok(Prompts {
            prompts: vec![prompt(inputs)?],
            single: true,
        });
    }
    Ok(Prompts {
        prompts: items.iter().map(prompt).collect::<PyResult<_>>()?,
        single: false,
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Keyword options as a JSON object (HF's names, checked by the library).
pub fn options(
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let key: String = k.extract()?;
            let value = to_json(&v).ok_or_else(|| {
                Failure::request(format!(
                    "{key}: a {} is not an option value (use a bool, int, float, str or None)",
                    type_name(&v)
                ))
            })?;
            map.insert(key, value);
        }
    }
    Ok(map)
}

/// A scalar option value as JSON; `None` for a type options never take.
fn to_json(v: &Bound<'_, PyAny>) -> Option<serde_json::Value> {
    use serde_json::Value;
    if v.is_none() {
        Some(Value::Null)
    } else if let Ok(b) = v.cast::<PyBool>() {
        Some(Value::Bool(b.is_true()))
    } else if v.is_instance_of::<PyInt>() {
        // Negative or huge ints reach serde as they are and are refused
        // there, naming the field.
        v.extract::<i64>()
            .map(Value::from)
            .or_else(|_| v.extract::<u64>().map(Value::from))
            .ok()
    } else if v.is_instance_of::<PyFloat>() {
        v.extract::<f64>().ok().map(Value::from)
    } else if let Ok(s) = v.cast::<PyString>() {
        s.to_str().ok().map(|s| Value::String(s.to_owned()))
    } else {
        None
    }
}

/// A JSON value as the Python object `json.loads` would make.
pub fn from_json(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n
                .as_f64()
                .unwrap_or(f64::NAN)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        },
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| from_json(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, from_json(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}
