//! What several subcommands share: finding the model, threads, reading input.

use crate::weights::LoadOptions;
use crate::{Error, Result, T5Model, Tokenizer};
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};

/// The preset and seed of the embedded default model.
pub const DEFAULT_PRESET: &str = "t5-efficient-tiny-nl2";

#[derive(ClapArgs, Clone, Debug)]
pub struct ModelArgs {
    /// A Hugging Face T5 checkpoint directory, or a model id such as
    /// google/t5-efficient-tiny-nl2 found in the local Hugging Face cache
    /// ($HF_HOME/hub). Without it, a synthetic t5-efficient-tiny-nl2 (random
    /// weights, seed 0) is generated once and used.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Read weights into memory instead of mapping them (safe against the file
    /// being truncated while in use, at the cost of start-up time and memory).
    #[arg(long)]
    pub no_mmap: bool,
}

impl ModelArgs {
    /// Sets up threads and the ISA check, then resolves and loads the model.
    pub fn load(&self) -> Result<(T5Model, PathBuf)> {
        setup(self.threads)?;
        let dir = self.dir()?;
        let model = T5Model::load_with(
            &dir,
            LoadOptions {
                mmap: !self.no_mmap,
            },
        )?;
        Ok((model, dir))
    }

    pub fn dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(d) => {
                let as_str = d.to_str().unwrap_or("");
                if !d.is_dir() && crate::hub::looks_like_model_id(as_str) {
                    return crate::hub::resolve(as_str);
                }
                if !d.is_dir() {
                    return Err(Error::Other(format!(
                        "{}: not a directory (expected a T5 checkpoint directory)",
                        d.display()
                    )));
                }
                Ok(d.clone())
            }
            None => default_model(),
        }
    }
}

/// Validates `T5EDGE_ISA` and sizes the thread pool.
pub fn setup(threads: Option<usize>) -> Result<()> {
    t5edge_kernels::dispatch::from_env()?;
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Request("--threads must be at least 1".into()));
        }
        // A second call (tests driving the CLI in-process) keeps the first pool.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    Ok(())
}

/// The synthetic default checkpoint, generated on first use into the cache.
pub fn default_model() -> Result<PathBuf> {
    let base = std::env::var_os("T5EDGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("t5edge")))
        .or_else(|| {
            std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("t5edge"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("t5edge"));
    let dir = base.join(format!("synth-{DEFAULT_PRESET}-seed0"));
    if !dir.join("model.safetensors").is_file() {
        eprintln!("no --model given: writing the synthetic {DEFAULT_PRESET} (random weights, seed 0) to {}", dir.display());
        let cfg = crate::synth::preset(DEFAULT_PRESET).map_err(Error::Other)?;
        crate::synth::write_checkpoint(
            &dir,
            &cfg,
            &crate::synth::SynthOptions {
                seed: 0,
                norm_jitter: 0.0,
            },
            true,
        )?;
    } else {
        eprintln!(
            "no --model given: using the synthetic {DEFAULT_PRESET} (random weights, seed 0) at {}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Parses `1,2,3` into ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| Error::Request(format!("{t:?} is not a token id")))
        })
        .collect()
}

/// The prompt's ids: from `--input-ids`, or the tokenized TEXT (`-` reads stdin).
pub fn prompt_ids(
    input_ids: &Option<String>,
    text: &Option<String>,
    dir: &Path,
    vocab: usize,
) -> Result<(Vec<u32>, Option<Tokenizer>)> {
    match (input_ids, text) {
        (Some(_), Some(_)) => Err(Error::Request(
            "give either --input-ids or TEXT, not both".into(),
        )),
        (Some(ids), None) => {
            let ids = parse_ids(ids)?;
            let tok = Tokenizer::from_dir(dir, vocab).ok();
            Ok((ids, tok))
        }
        (None, t) => {
            let text = match t.as_deref() {
                Some("-") | None => read_stdin()?,
                Some(t) => t.to_string(),
            };
            let tok = Tokenizer::from_dir(dir, vocab)?;
            Ok((tok.encode(&text)?, Some(tok)))
        }
    }
}

fn read_stdin() -> Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("<stdin>", e))?;
    String::from_utf8(buf).map_err(|e| {
        Error::Request(format!(
            "stdin is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Only f32 runs until the quantized kernels are wired in.
pub fn check_dtype(dtype: &str) -> Result<()> {
    match dtype {
        "f32" => Ok(()),
        other => Err(Error::Request(format!(
            "--dtype {other} is not supported; use f32"
        ))),
    }
}
