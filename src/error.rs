//! The library's one error type. Every failure that input can cause (files,
//! configs, token ids, requests) ends here with a message naming the file, tensor
//! or field; the CLI prints it as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: invalid safetensors file: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: tensor {name:?} is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has dtype {found}, expected one of {expected}")]
    Dtype {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("invalid request: {0}")]
    Request(String),
    /// A decoder path (generate, score, forward) on a checkpoint without a
    /// decoder.
    #[error(
        "{path} is an encoder-only checkpoint ({class}): no decoder tensors; use encode or embed"
    )]
    EncoderOnly { path: PathBuf, class: String },
    #[error("{0}")]
    Cpu(#[from] t5edge_kernels::dispatch::IsaError),
    /// An environment variable the library reads (`runtime`) has a bad value.
    #[error("{var}={msg}")]
    Env { var: &'static str, msg: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
