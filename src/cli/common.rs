//! What several subcommands share: finding the model, threads, reading input.

use crate::model::{LoadSpec, WeightFormat};
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
    /// ($HF_HOME/hub). Default: a synthetic t5-efficient-tiny-nl2 (random
    /// weights: its text is gibberish), written once into $T5EDGE_CACHE.
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Instead of --model: the synthetic checkpoint of a `t5edge synth` preset
    /// (random weights, seed 0), e.g. t5-efficient-base; written into the
    /// cache on first use and reused after.
    #[arg(long)]
    pub preset: Option<String>,
    /// Worker threads (default: $T5EDGE_THREADS, else all cores).
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Read weights into memory instead of mapping them (safe against the file
    /// being truncated while in use, at the cost of start-up time and memory).
    #[arg(long)]
    pub no_mmap: bool,
}

/// The weight format to run in: what `generate`, `forward` and `bench` take.
#[derive(ClapArgs, Clone, Debug)]
pub struct WeightArgs {
    /// Weight format to run in: f32, f16, bf16 or int8 (default: as stored: a
    /// Hugging Face checkpoint in its dtype, f16 and bf16 weights used
    /// straight from the mapped file; a quantized directory in its own).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<WeightFormat>,
    /// With --dtype int8: the FFN output projections (wo) in int8 too, instead
    /// of f16 (faster prefill; less accurate where wo's inputs carry
    /// outliers, docs/QUANTIZATION.md).
    #[arg(long)]
    pub int8_ffn_out: bool,
}

impl WeightArgs {
    /// The load spec these flags (and `--exact`, where a command has it) ask for.
    pub fn spec(&self, exact: bool) -> LoadSpec {
        LoadSpec {
            dtype: self.dtype,
            exact,
            int8_ffn_out: self.int8_ffn_out,
            ..LoadSpec::default()
        }
    }
}

impl ModelArgs {
    /// Sets up threads and the ISA check, then resolves the model and loads
    /// it as `spec` says (the library's rules: [`LoadSpec`]).
    pub fn load(&self, spec: LoadSpec) -> Result<(T5Model, PathBuf)> {
        spec.validate_named(&flag_names)?;
        setup(self.threads)?;
        let dir = self.dir()?;
        let spec = LoadSpec {
            files: LoadOptions {
                mmap: !self.no_mmap,
            },
            ..spec
        };
        let model = T5Model::load_spec_named(&dir, &spec, &flag_names)?;
        Ok((model, dir))
    }

    pub fn dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(d) => crate::hub::locate(d),
            None => match &self.preset {
                Some(p) => synth_model(p, false),
                None => default_model(),
            },
        }
    }
}

/// A load option as its flag: `int8_ffn_out` is `--int8-ffn-out`.
fn flag_names(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number of threads".into()),
    }
}

/// Validates `T5EDGE_ISA` and `T5EDGE_POOL` and sizes the thread pools.
pub fn setup(threads: Option<usize>) -> Result<()> {
    crate::runtime::configure_from_env()?;
    if let Some(n) = threads {
        // A second call (tests driving the CLI in-process) keeps the first pools.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        t5edge_kernels::pool::set_global_threads(n);
    }
    Ok(())
}

/// The model used when no --model or --preset is given: the synthetic
/// t5-efficient-tiny-nl2 with a zero `<pad>` row, so that its greedy text
/// shows words (gibberish, the weights being random) instead of padding.
fn default_model() -> Result<PathBuf> {
    let dir = synth_model(DEFAULT_PRESET, true)?;
    eprintln!(
        "note: no --model given: this is a synthetic model with random weights, so its text is gibberish.\n      For real text, download a checkpoint (e.g. `huggingface-cli download google/flan-t5-small --local-dir flan-t5-small`) and pass --model flan-t5-small"
    );
    Ok(dir)
}

/// The synthetic checkpoint of `preset` (seed 0; `demo`: with a zero `<pad>`
/// embedding row) in the cache ($T5EDGE_CACHE, else $XDG_CACHE_HOME/t5edge,
/// else ~/.cache/t5edge), written on first use.
pub fn synth_model(preset: &str, demo: bool) -> Result<PathBuf> {
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
    let dir = base.join(format!(
        "synth-{preset}-seed0{}",
        if demo { "-demo" } else { "" }
    ));
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
                zero_pad_row: demo,
                ..Default::default()
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

/// Parses `1,2,3` into ids (`flag` names the option in errors). Every entry
/// must be an id: `1,,2` is refused rather than read as `1,2`.
pub fn parse_ids(flag: &str, s: &str) -> Result<Vec<u32>> {
    if s.trim().is_empty() {
        return Err(Error::Request(format!("{flag} is empty")));
    }
    s.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                return Err(Error::Request(format!(
                    "{flag}: entry {} of {s:?} is empty (ids are separated by single commas)",
                    i + 1
                )));
            }
            t.parse::<u32>().map_err(|_| {
                Error::Request(format!(
                    "{flag}: {t:?} is not a token id (a non-negative integer below 2^32)"
                ))
            })
        })
        .collect()
}

/// The encoder input every prompt-taking command reads.
#[derive(ClapArgs, Clone, Debug)]
pub struct PromptArgs {
    /// Comma-separated encoder input ids (instead of TEXT).
    #[arg(long)]
    pub input_ids: Option<String>,
    /// The prompt; `-` (or nothing) reads stdin.
    pub text: Option<String>,
}

impl PromptArgs {
    /// The prompt's ids: from `--input-ids`, or the tokenized TEXT (`-` reads
    /// stdin), with the checkpoint's tokenizer when there is one.
    pub fn ids(&self, dir: &Path, vocab: usize) -> Result<(Vec<u32>, Option<Tokenizer>)> {
        match (&self.input_ids, &self.text) {
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
}

fn read_stdin() -> Result<String> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!(
            "reading the prompt from the terminal: type it, then press Ctrl-D (or pass TEXT or --input-ids)"
        );
    }
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

/// Parses `--dtype` (clap reports the error with the flag and its value).
pub fn parse_dtype(dtype: &str) -> std::result::Result<WeightFormat, String> {
    WeightFormat::parse(dtype)
        .ok_or_else(|| "not a weight format; use f32, f16, bf16 or int8".into())
}
