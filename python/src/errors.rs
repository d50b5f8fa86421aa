//! The exception hierarchy and the one place library errors and panics
//! become Python exceptions.
//!
//! ```text
//! t5edge.Error(Exception)                      every failure of the library
//! ├── t5edge.RequestError(Error, ValueError)   a bad argument or request
//! ├── t5edge.FileError(Error, OSError)         a file that cannot be read or is malformed
//! │   ├── t5edge.NotFoundError(FileError, FileNotFoundError)
//! │   └── t5edge.ExistsError(FileError, FileExistsError)
//! └── t5edge.InternalError(Error)              a panic inside t5edge (a bug)
//! ```
//!
//! The classes derive from the builtin exceptions too, so `except ValueError`
//! or `except FileNotFoundError` catch what a Python user expects. They are
//! made with `type(...)` at import because a class with two bases cannot be
//! declared with `create_exception!`.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use std::panic::{catch_unwind, AssertUnwindSafe};

struct Classes {
    error: Py<PyType>,
    request: Py<PyType>,
    file: Py<PyType>,
    not_found: Py<PyType>,
    exists: Py<PyType>,
    internal: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn make(
    py: Python<'_>,
    name: &str,
    bases: &[&Bound<'_, PyAny>],
    doc: &str,
) -> PyResult<Py<PyType>> {
    let type_ = py.import("builtins")?.getattr("type")?;
    let ns = PyDict::new(py);
    ns.set_item("__module__", "t5edge")?;
    ns.set_item("__doc__", doc)?;
    let class = type_.call1((name, PyTuple::new(py, bases)?, ns))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

/// Creates the classes and adds them to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let builtins = py.import("builtins")?;
    let b = |n: &str| builtins.getattr(n);
    let error = make(
        py,
        "Error",
        &[&py.get_type::<PyException>().into_any()],
        "Base class of every error t5edge raises; the message is the library's.",
    )?;
    let e = error.bind(py).clone().into_any();
    let request = make(
        py,
        "RequestError",
        &[&e, &b("ValueError")?],
        "A bad argument or request: an unknown option, a value out of range, a token id the model lacks.",
    )?;
    let file = make(
        py,
        "FileError",
        &[&e, &b("OSError")?],
        "A checkpoint, tokenizer or output file that cannot be read, written or understood.",
    )?;
    let f = file.bind(py).clone().into_any();
    let not_found = make(
        py,
        "NotFoundError",
        &[&f, &b("FileNotFoundError")?],
        "A model directory, hub id or file that does not exist.",
    )?;
    let exists = make(
        py,
        "ExistsError",
        &[&f, &b("FileExistsError")?],
        "An output that exists already (pass force=True to replace it).",
    )?;
    let internal = make(
        py,
        "InternalError",
        &[&e],
        "A panic inside t5edge: a bug, please report it. The interpreter and other models carry on.",
    )?;
    for (name, class) in [
        ("Error", &error),
        ("RequestError", &request),
        ("FileError", &file),
        ("NotFoundError", &not_found),
        ("ExistsError", &exists),
        ("InternalError", &internal),
    ] {
        m.add(name, class.bind(py))?;
    }
    let _ = CLASSES.set(
        py,
        Classes {
            error,
            request,
            file,
            not_found,
            exists,
            internal,
        },
    );
    Ok(())
}

/// Which exception class a failure raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Error,
    Request,
    File,
    NotFound,
    Exists,
    Internal,
}

/// A failure on the Rust side, carried out of `Python::detach` (where no
/// Python object can be made) and raised once the GIL is back.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub msg: String,
}

impl Failure {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Failure {
        Failure {
            kind,
            msg: msg.into(),
        }
    }

    pub fn request(msg: impl Into<String>) -> Failure {
        Failure::new(Kind::Request, msg)
    }
}

impl From<t5edge::Error> for Failure {
    fn from(e: t5edge::Error) -> Failure {
        use t5edge::Error as E;
        let kind = match &e {
            // Asking an encoder-only checkpoint to decode is a bad request of it.
            E::Request(_) | E::Env { .. } | E::EncoderOnly { .. } => Kind::Request,
            E::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Kind::NotFound,
                std::io::ErrorKind::AlreadyExists => Kind::Exists,
                _ => Kind::File,
            },
            E::Config { .. }
            | E::Format { .. }
            | E::MissingTensor { .. }
            | E::Shape { .. }
            | E::Dtype { .. }
            | E::Tokenizer { .. } => Kind::File,
            _ => Kind::Error,
        };
        Failure::new(kind, e.to_string())
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| {
            let Some(c) = CLASSES.get(py) else {
                return PyException::new_err(f.msg);
            };
            let class = match f.kind {
                Kind::Error => &c.error,
                Kind::Request => &c.request,
                Kind::File => &c.file,
                Kind::NotFound => &c.not_found,
                Kind::Exists => &c.exists,
                Kind::Internal => &c.internal,
            };
            PyErr::from_type(class.bind(py).clone(), (f.msg,))
        })
    }
}

pub type Outcome<T> = Result<T, Failure>;

/// Runs `f`, turning a panic into an [`Kind::Internal`] failure: a bug in
/// t5edge raises `t5edge.InternalError` (an `Exception`, so `except
/// t5edge.Error` catches it) instead of PyO3's `PanicException`, which
/// derives from `BaseException` and escapes ordinary handlers. The model is
/// only read during a call, so it stays usable after a panic.
pub fn guarded<T>(f: impl FnOnce() -> Outcome<T>) -> Outcome<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(Failure::new(
                Kind::Internal,
                format!("internal error in t5edge (a bug; please report it): {what}"),
            ))
        }
    }
}
