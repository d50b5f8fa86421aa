//! What several subcommands share: finding the model, threads, reading input.

use crate::model::{LoadSpec, WeightFormat};
use crate::weights::LoadOptions;
use crate::{Error, Result, T5Model, Tokenizer};
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};

/// The preset of the embedded default model.
pub use crate::synth::DEFAULT_PRESET;

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
    /// With --dtype int8: the FFN output projections (wo) with int8
    /// activations too, instead of 16-bit ones (the whole model in int8;
    /// less accurate where wo's inputs carry outliers, docs/QUANTIZATION.md).
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

/// The synthetic checkpoint of `preset` in the cache ([`crate::synth::cached`]).
pub fn synth_model(preset: &str, demo: bool) -> Result<PathBuf> {
    crate::synth::cached(preset, demo)
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

/// The lines of a text file (a JSONL batch, a list of documents), without
/// their line ends; a line that is not UTF-8 is refused with its number.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            String::from_utf8(l.to_vec()).map_err(|e| {
                at_line(
                    path,
                    i,
                    Error::Request(format!(
                        "not valid UTF-8 (byte {})",
                        e.utf8_error().valid_up_to()
                    )),
                )
            })
        })
        .collect()
}

/// The ids of a JSONL file of encoder inputs, one per line, `{"text": ...}`
/// (tokenized with `dir`'s tokenizer) or `{"input_ids": [...]}` (`encode
/// --input`, `embed --input`), each checked against the model and at most
/// `max_input_tokens` long; a bad or blank line, or none at all, stops with
/// an error naming the file and line.
pub fn jsonl_inputs(
    path: &Path,
    dir: &Path,
    model: &crate::T5Model,
    max_input_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    let tok = crate::Tokenizer::from_dir(dir, model.config.vocab_size).ok();
    let mut opts = crate::generate::GenerateOptions::default();
    opts.limits.max_input_tokens = max_input_tokens;
    let (tok, opts) = (tok.as_ref(), &opts);
    let lines = read_lines(path)?;
    if lines.is_empty() {
        return Err(Error::Request(format!(
            "{}: no inputs (one JSON object per line)",
            path.display()
        )));
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let ids = if line.trim().is_empty() {
                Err(Error::Request(
                    "blank line: no input (each line is one JSON object)".into(),
                ))
            } else {
                crate::generate::Prompt::from_json(line).and_then(|p| p.ids(model, tok, opts))
            };
            ids.map_err(|e| at_line(path, i, e))
        })
        .collect()
}

/// `e` as the error of line `i` (0-based) of `file`.
pub fn at_line(file: &Path, i: usize, e: Error) -> Error {
    let msg = match e {
        Error::Request(m) => m,
        other => other.to_string(),
    };
    Error::Request(format!("{} line {}: {msg}", file.display(), i + 1))
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
