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
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Instead of --model: the synthetic checkpoint of a `t5edge synth` preset
    /// (random weights, seed 0), e.g. t5-efficient-base; written into the
    /// cache on first use and reused after.
    #[arg(long)]
    pub preset: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// With --dtype int8: the FFN output projections (wo) in int8 too, instead
    /// of f16 (faster prefill; less accurate where wo's inputs carry
    /// outliers, docs/QUANTIZATION.md).
    #[arg(long)]
    pub int8_ffn_out: bool,
    /// Read weights into memory instead of mapping them (safe against the file
    /// being truncated while in use, at the cost of start-up time and memory).
    #[arg(long)]
    pub no_mmap: bool,
}

impl ModelArgs {
    /// Sets up threads and the ISA check, then resolves and loads the model,
    /// converting it to the weight format `dtype` names.
    ///
    /// With `exact` (`--dtype int8 --exact`), everything upstream of the logits
    /// stays in full precision and the head becomes the certified int8 head.
    /// A quantized directory carries its own format: `dtype` must then be its
    /// dtype or the default f32.
    pub fn load(&self, dtype: &str, exact: bool) -> Result<(T5Model, PathBuf)> {
        use crate::model::WeightFormat;
        let fmt = parse_dtype(dtype)?;
        if exact && fmt != WeightFormat::Int8 {
            return Err(Error::Request("--exact goes with --dtype int8".into()));
        }
        setup(self.threads)?;
        let dir = self.dir()?;
        let mut model = T5Model::load_with(
            &dir,
            LoadOptions {
                mmap: !self.no_mmap,
            },
        )?;
        let stored = model.lm_head.linear.format();
        if stored != WeightFormat::F32 {
            // A quantized directory: its format was chosen at quantize time.
            if exact {
                return Err(Error::Request(format!(
                    "{}: --exact needs the full-precision checkpoint, not a quantized one",
                    dir.display()
                )));
            }
            if self.int8_ffn_out {
                return Err(Error::Request(format!(
                    "{}: a quantized directory keeps the formats it was written with; pass --int8-ffn-out to `t5edge quantize` instead",
                    dir.display()
                )));
            }
            if fmt != WeightFormat::F32 && fmt != stored {
                return Err(Error::Request(format!(
                    "{} holds {} weights; drop --dtype or pass --dtype {}",
                    dir.display(),
                    stored.name(),
                    stored.name()
                )));
            }
        } else if self.int8_ffn_out && (fmt != WeightFormat::Int8 || exact) {
            return Err(Error::Request(
                "--int8-ffn-out goes with --dtype int8 (without --exact)".into(),
            ));
        } else if exact {
            model.enable_certified_head(0)?;
        } else if fmt != WeightFormat::F32 {
            let mut policy = crate::model::FormatPolicy::for_dtype(fmt);
            if self.int8_ffn_out {
                policy.ffn_out = WeightFormat::Int8;
            }
            model.convert(policy)?;
        }
        Ok((model, dir))
    }

    pub fn dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(d) => {
                let as_str = d.to_str().unwrap_or("");
                if !d.is_dir() && crate::hub::looks_like_model_id(as_str) {
                    return crate::hub::resolve(as_str);
                }
                if !d.exists() {
                    return Err(Error::Other(format!(
                        "{}: no such directory (--model expects a T5 checkpoint directory)",
                        d.display()
                    )));
                }
                if !d.is_dir() {
                    return Err(Error::Other(format!(
                        "{}: not a directory (--model expects a T5 checkpoint directory)",
                        d.display()
                    )));
                }
                Ok(d.clone())
            }
            None => synth_model(self.preset.as_deref().unwrap_or(DEFAULT_PRESET)),
        }
    }
}

/// Validates `T5EDGE_ISA` and `T5EDGE_POOL` and sizes the thread pools.
pub fn setup(threads: Option<usize>) -> Result<()> {
    t5edge_kernels::dispatch::from_env()?;
    t5edge_kernels::pool::from_env().map_err(Error::Other)?;
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Request("--threads must be at least 1".into()));
        }
        // A second call (tests driving the CLI in-process) keeps the first pools.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        t5edge_kernels::pool::set_global_threads(n);
    }
    Ok(())
}

/// The synthetic checkpoint of `preset` (seed 0) in the cache ($T5EDGE_CACHE,
/// else $XDG_CACHE_HOME/t5edge, else ~/.cache/t5edge), written on first use.
pub fn synth_model(preset: &str) -> Result<PathBuf> {
    // The name becomes a directory name: keep it to what presets are made of,
    // so nothing like `../` reaches the path.
    if preset.is_empty()
        || !preset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Request(format!(
            "--preset {preset:?} is not a preset name (see t5edge synth --help)"
        )));
    }
    let cfg = crate::synth::preset(preset).map_err(Error::Request)?;
    let base = std::env::var_os("T5EDGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("t5edge")))
        .or_else(|| {
            std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("t5edge"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("t5edge"));
    let dir = base.join(format!("synth-{preset}-seed0"));
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "writing the synthetic {preset} (random weights, seed 0) to {}",
            dir.display()
        );
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
            "using the synthetic {preset} (random weights, seed 0) at {}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Parses `1,2,3` into ids (`flag` names the option in errors).
pub fn parse_ids(flag: &str, s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>().map_err(|_| {
                Error::Request(format!(
                    "{flag}: {t:?} is not a token id (a non-negative integer below 2^32)"
                ))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        return Err(Error::Request(format!("{flag} is empty")));
    }
    Ok(ids)
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
            let ids = parse_ids("--input-ids", ids)?;
            let tok = Tokenizer::from_dir(dir, vocab).ok();
            Ok((ids, tok))
        }
        (None, t) => {
            let text = match t.as_deref() {
                Some("-") | None => read_stdin()?,
                Some(t) => t.to_string(),
            };
            // An empty prompt is a lone `</s>`, as HF's tokenizer makes it.
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

/// Parses `--dtype`.
pub fn parse_dtype(dtype: &str) -> Result<crate::model::WeightFormat> {
    crate::model::WeightFormat::parse(dtype).ok_or_else(|| {
        Error::Request(format!(
            "--dtype {dtype} is not a weight format; use f32, f16 or int8"
        ))
    })
}
