//! Text to token ids and back, with the checkpoint's own `tokenizer.json`.
//!
//! Encoding appends `</s>` (the tokenizer's post-processor does, as HF's
//! `T5TokenizerFast` does); decoding skips special tokens. Sentinels
//! `<extra_id_N>` are added tokens and come through whole.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
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
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
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
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Finds `tokenizer.json` in a model directory.
    pub fn from_dir(dir: &Path, vocab_size: usize) -> Result<Tokenizer> {
        let p = dir.join("tokenizer.json");
        if !p.is_file() {
            return Err(Error::Tokenizer {
                path: p,
                msg: "not found: text input needs the checkpoint's tokenizer.json (or pass --input-ids)".into(),
            });
        }
        Self::from_file(&p, vocab_size)
    }

    /// Token ids of `text`, ending with `</s>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped. Ids the vocabulary lacks are skipped too.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.inner.get_vocab_size(true) as u32;
        let known: Vec<u32> = ids.iter().copied().filter(|&i| i < n).collect();
        self.inner
            .decode(&known, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })
    }

    /// The piece of one id, for streaming and debugging.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
