//! Text to token ids and back, with the checkpoint's own `tokenizer.json`.
//!
//! Encoding appends `</s>` (the tokenizer's post-processor does, as HF's
//! `T5TokenizerFast` does); decoding skips special tokens. Sentinels
//! `<extra_id_N>` are added tokens and come through whole.
//!
//! ByT5 checkpoints ship no `tokenizer.json` (HF's `ByT5Tokenizer` is
//! Python code): [`byt5::ByT5`] is it, chosen when the directory's
//! `tokenizer_config.json` or `config.json` names it.
//!
//! T5's own pipeline goes through [`fast::T5Fast`] (loads in about a
//! millisecond from the `tokenizer.t5edge` cache, exact to the `tokenizers`
//! crate on printable-ASCII text, tested against it in
//! `tests/tokenizer_parity.rs`); other text and other pipelines go through the
//! `tokenizers` crate, loaded only when first needed.

pub mod byt5;
pub mod fast;
mod stream;

use crate::error::{Error, Result};
use fast::T5Fast;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use fast::CACHE_NAME;
pub use stream::TextStream;

pub struct Tokenizer {
    /// ByT5's byte tokenizer; when set, nothing else is used.
    byt5: Option<byt5::ByT5>,
    fast: Option<T5Fast>,
    /// The crate's tokenizer: loaded at once without a fast path, else lazily.
    slow: OnceLock<std::result::Result<tokenizers::Tokenizer, String>>,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `tokenizer.json`, refusing one whose ids do not fit a model with
    /// `vocab_size` rows.
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let err = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        if std::env::var_os("T5EDGE_SLOW_TOKENIZER").is_none() {
            if let Some(fast) = T5Fast::load(path) {
                // Every id (added tokens included) is a piece of the model's
                // vocabulary, so its size bounds them all.
                let n = fast.len();
                if n > vocab_size {
                    return Err(err(format!(
                        "its vocabulary has {n} tokens but the model has only {vocab_size} rows"
                    )));
                }
                return Ok(Tokenizer {
                    byt5: None,
                    fast: Some(fast),
                    slow: OnceLock::new(),
                    path: path.to_path_buf(),
                });
            }
        }
        let inner = load_crate(path).map_err(err)?;
        let n = inner.get_vocab_size(true);
        if n == 0 {
            return Err(err("its vocabulary is empty".into()));
        }
        if n > vocab_size {
            return Err(err(format!(
                "its vocabulary has {n} tokens but the model has only {vocab_size} rows"
            )));
        }
        // Ids need not be dense (an added token may claim any id): the largest
        // one must also have a row in the embedding.
        let vocab = inner.get_vocab(true);
        if let Some((tok, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id as usize >= vocab_size {
                return Err(err(format!(
                    "token {tok:?} has id {id}, not below the model's vocab_size {vocab_size}"
                )));
            }
        }
        let slow = OnceLock::new();
        let _ = slow.set(Ok(inner));
        Ok(Tokenizer {
            byt5: None,
            fast: None,
            slow,
            path: path.to_path_buf(),
        })
    }

    /// Finds `tokenizer.json` in a model directory.
    pub fn from_dir(dir: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let p = dir.join("tokenizer.json");
        if !p.is_file() {
            if let Some(extra) = byt5::detect(dir) {
                let t = byt5::ByT5::new(extra);
                let path = dir.join("tokenizer_config.json");
                if t.len() > vocab_size {
                    return Err(Error::Tokenizer {
                        path,
                        msg: format!(
                            "ByT5Tokenizer with {extra} extra ids has {} tokens but the model has only {vocab_size} rows",
                            t.len()
                        ),
                    });
                }
                return Ok(Tokenizer {
                    byt5: Some(t),
                    fast: None,
                    slow: OnceLock::new(),
                    path,
                });
            }
            return Err(Error::Tokenizer {
                path: p,
                msg: "not found: text input needs the checkpoint's tokenizer.json (or pass --input-ids)".into(),
            });
        }
        Self::from_file(&p, vocab_size)
    }

    /// Whether the fast T5 path serves this tokenizer (else the crate does).
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    fn err(&self, msg: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            msg,
        }
    }

    fn slow(&self) -> Result<&tokenizers::Tokenizer> {
        self.slow
            .get_or_init(|| load_crate(&self.path))
            .as_ref()
            .map_err(|e| self.err(e.clone()))
    }

    /// Token ids of `text`, ending with `</s>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(ids) = self.encode_fast(text) {
            return Ok(ids);
        }
        let enc = self
            .slow()?
            .encode(text, true)
            .map_err(|e| self.err(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Tokenizer::encode`] of each text, in order; the first text's error
    /// in input order ([`Tokenizer::encode_each`]).
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.encode_each(texts).into_iter().collect()
    }

    /// [`Tokenizer::encode`] of each text, in order, the texts spread over
    /// the pool's threads when there are enough of them (a reranker's
    /// documents, a batch to embed): 110 µs a 276-character document on
    /// the Intel Xeon was a fifth of a 256-document rerank of tiny-nl2. The
    /// same ids as one at a time.
    pub fn encode_each<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Result<Vec<u32>>> {
        // Below this much text a second thread costs more than it saves.
        const PARALLEL_BYTES: usize = 8 << 10;
        // Texts a task takes: small, as texts differ in length.
        const GRAIN: usize = 4;
        let bytes: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        t5edge_kernels::pool::map(texts.len(), GRAIN, bytes >= PARALLEL_BYTES, |i| {
            self.encode(texts[i].as_ref())
        })
    }

    /// The fast path's ids, `None` when it does not cover `text` (or there is
    /// no fast path).
    pub fn encode_fast(&self, text: &str) -> Option<Vec<u32>> {
        if let Some(b) = &self.byt5 {
            return Some(b.encode(text));
        }
        self.fast.as_ref()?.encode(text)
    }

    /// Text of `ids`, special tokens skipped. Ids the vocabulary lacks are skipped too.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(b) = &self.byt5 {
            return Ok(b.decode(ids));
        }
        if let Some(f) = &self.fast {
            return Ok(f.decode(ids));
        }
        let inner = self.slow()?;
        let n = inner.get_vocab_size(true) as u32;
        let known: Vec<u32> = ids.iter().copied().filter(|&i| i < n).collect();
        inner
            .decode(&known, true)
            .map_err(|e| self.err(e.to_string()))
    }

    /// The piece of one id, for streaming and debugging.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        if let Some(b) = &self.byt5 {
            return b.piece(id);
        }
        match &self.fast {
            Some(f) => f.piece(id).map(str::to_owned),
            None => self.slow().ok()?.id_to_token(id),
        }
    }

    /// The id of a vocabulary piece as the vocabulary spells it (`▁true`).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        match &self.fast {
            Some(f) => f.token_id(piece),
            None => self.slow().ok()?.token_to_id(piece),
        }
    }

    pub fn vocab_size(&self) -> usize {
        if let Some(b) = &self.byt5 {
            return b.len();
        }
        match &self.fast {
            Some(f) => f.len(),
            None => self.slow().map_or(0, |t| t.get_vocab_size(true)),
        }
    }
}

fn load_crate(path: &Path) -> std::result::Result<tokenizers::Tokenizer, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// Writes the fast path's cache for `json` (a `tokenizer.json`) to `out`.
/// Returns whether the pipeline is T5's and so the cache was written; the
/// crate must accept the file and agree with the fast path on a few texts.
pub fn write_cache(json: &Path, out: &Path) -> Result<bool> {
    let bytes = std::fs::read(json).map_err(|e| Error::io(json, e))?;
    let Some(fast) = T5Fast::from_json(&bytes) else {
        return Ok(false);
    };
    let Ok(inner) = tokenizers::Tokenizer::from_bytes(&bytes) else {
        return Ok(false);
    };
    for text in [
        "",
        "translate English to German: The quick brown fox.",
        "Hello  world!\t<extra_id_0> x<extra_id_1>y 1234 (a, b) </s>",
    ] {
        let theirs = inner.encode(text, true).map(|e| e.get_ids().to_vec()).ok();
        if fast.encode(text) != theirs {
            return Ok(false);
        }
    }
    crate::weights::writer::write_atomic(out, true, |w| w.write_all(&fast.to_cache()))?;
    Ok(true)
}
