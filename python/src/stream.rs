//! `T5.generate_stream`: text pieces from a decode running on a thread of
//! its own. The library calls back per token; the callback sends each new
//! piece down a channel that `__next__` reads with the GIL released. Dropping
//! (or closing) the iterator raises the stop flag and closes the channel, and
//! the next token's callback ends the decode.

use crate::errors::{guarded, Failure, Outcome};
use crate::model::Inner;
use pyo3::prelude::*;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use t5edge::generate::Prompt;
use t5edge::tokenizer::TextStream;

enum Msg {
    Piece(String),
    Failed(Failure),
}

/// An iterator of text pieces (see `T5.generate_stream`).
#[pyclass(module = "t5edge")]
pub struct GenerateStream {
    /// `None` once exhausted or closed.
    rx: Mutex<Option<Receiver<Msg>>>,
    stop: Arc<AtomicBool>,
}

impl GenerateStream {
    /// Checks the request and starts the decode. A bad prompt or option
    /// raises here, before any iteration.
    pub fn start(
        py: Python<'_>,
        inner: Arc<Inner>,
        prompt: Prompt,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> PyResult<GenerateStream> {
        let (opts, ids) = py.detach(|| {
            guarded(|| {
                let opts = inner.options(fields)?;
                let ids = inner.ids(std::slice::from_ref(&prompt), &opts)?.remove(0);
                inner.tokenizer(
                    "generate_stream has no text to give: use generate(..., return_ids=True)",
                )?;
                Ok((opts, ids))
            })
        })?;
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("t5edge-stream".into())
            .spawn(move || {
                let done: Outcome<()> = guarded(|| {
                    let tok = inner.tokenizer("no text")?;
                    let mut text = TextStream::new();
                    let mut failed = None;
                    inner.run(|| {
                        t5edge::generate_stream(&inner.model, &ids, &opts, |id| {
                            if flag.load(Ordering::Relaxed) {
                                return ControlFlow::Break(());
                            }
                            match text.push(id, Some(tok)) {
                                Ok(p) if p.is_empty() => ControlFlow::Continue(()),
                                // A send fails once the iterator is gone.
                                Ok(p) => match tx.send(Msg::Piece(p)) {
                                    Ok(()) => ControlFlow::Continue(()),
                                    Err(_) => ControlFlow::Break(()),
                                },
                                Err(e) => {
                                    failed = Some(e);
                                    ControlFlow::Break(())
                                }
                            }
                        })
                    })?;
                    match failed {
                        Some(e) => Err(e.into()),
                        None => Ok(()),
                    }
                });
                if let Err(f) = done {
                    let _ = tx.send(Msg::Failed(f));
                }
            });
        if let Err(e) = spawned {
            return Err(Failure::new(
                crate::errors::Kind::Error,
                format!("cannot start the decode thread: {e}"),
            )
            .into());
        }
        Ok(GenerateStream {
            rx: Mutex::new(Some(rx)),
            stop,
        })
    }
}

#[pymethods]
impl GenerateStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            // Wait without the GIL, a little at a time so Ctrl-C is seen.
            let got = py.detach(|| {
                let guard = self.rx.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_ref() {
                    None => Err(RecvTimeoutError::Disconnected),
                    Some(rx) => rx.recv_timeout(Duration::from_millis(50)),
                }
            });
            match got {
                Ok(Msg::Piece(p)) => return Ok(Some(p)),
                Ok(Msg::Failed(f)) => {
                    self.finish();
                    return Err(f.into());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            }
        }
    }

    /// Stops the decode (at its next token) and ends the iteration.
    fn close(&self) {
        self.finish();
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.finish();
        false
    }
}

impl GenerateStream {
    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for GenerateStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
