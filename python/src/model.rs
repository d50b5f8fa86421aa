//! `t5edge.T5`: one loaded checkpoint, shared by every call and thread.

use crate::convert::{self, Prompts};
use crate::errors::{guarded, Failure, Kind, Outcome};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyUserWarning;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use t5edge::generate::{GenerateOptions, Prompt};
use t5edge::model::{LoadSpec, WeightFormat};
use t5edge::weights::LoadOptions;
use t5edge::{T5Model, Tokenizer};
use t5edge_kernels::pool::{self, Pool};

/// What every call reads; never written after loading, so calls from
/// several threads share it without a lock.
pub struct Inner {
    pub model: T5Model,
    pub tok: Option<Tokenizer>,
    pub dir: PathBuf,
    pub exact: bool,
    /// With `threads=N`: this model's own pool; otherwise the process's.
    pool: Option<Pool>,
}

impl Inner {
    /// Runs `f` with parallel regions on this model's pool, if it has one.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The request's options: the library's defaults with the caller's
    /// keyword options over them (HF's names; validated by the library).
    pub fn options(
        &self,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Outcome<GenerateOptions> {
        Ok(GenerateOptions::default()
            .exact(self.exact)
            .overlay(fields)?)
    }

    /// The prompts' ids, tokenized and checked by the library.
    pub fn ids(&self, prompts: &[Prompt], opts: &GenerateOptions) -> Outcome<Vec<Vec<u32>>> {
        Ok(Prompt::ids_of_all(
            prompts,
            &self.model,
            self.tok.as_ref(),
            opts,
        )?)
    }

    /// The tokenizer, or the error that says why text is unavailable.
    pub fn tokenizer(&self, what: &str) -> Outcome<&Tokenizer> {
        self.tok.as_ref().ok_or_else(|| {
            Failure::request(format!(
                "{} has no tokenizer.json, so {what}",
                self.dir.display()
            ))
        })
    }

    fn threads(&self) -> usize {
        self.run(pool::current_threads)
    }
}

/// Where `model`/`preset` point: a checkpoint directory, a hub id in the
/// local cache, or a cached synthetic preset.
fn resolve(model: Option<&Path>, preset: Option<&str>) -> Outcome<PathBuf> {
    match (model, preset) {
        (Some(_), Some(_)) => Err(Failure::request("give model or preset, not both")),
        (Some(m), None) => t5edge::hub::locate(m).map_err(|e| {
            // The library's message; the class says it is missing.
            let kind = if m.exists() {
                Kind::File
            } else {
                Kind::NotFound
            };
            Failure::new(kind, e.to_string())
        }),
        (None, Some(p)) => Ok(t5edge::synth::cached(p, false)?),
        (None, None) => Ok(t5edge::synth::cached(t5edge::synth::DEFAULT_PRESET, true)?),
    }
}

fn parse_dtype(dtype: Option<&str>) -> Outcome<Option<WeightFormat>> {
    dtype
        .map(|d| {
            WeightFormat::parse(d).ok_or_else(|| {
                Failure::request(format!("dtype {d:?}: use \"f32\", \"f16\" or \"int8\""))
            })
        })
        .transpose()
}

/// A T5 checkpoint loaded for inference.
///
/// `model` is a Hugging Face T5 checkpoint directory (config.json,
/// model.safetensors or a sharded index, tokenizer.json), a directory written
/// by `t5edge.quantize`, or a hub id such as `google/t5-efficient-tiny-nl2`
/// found in the local Hugging Face cache. Without `model` (or `preset`), a
/// synthetic t5-efficient-tiny-nl2 with random weights is written to the cache
/// and loaded: its text is gibberish, but every call works.
///
/// `dtype`: "f32", "f16" or "int8" (default: as stored). `exact=True` with
/// dtype "int8" keeps the body in f32 and certifies every greedy pick of the
/// int8 LM head (docs/EXACT.md). `threads=N` gives this model a pool of its
/// own with N threads (1: every call runs on its caller's thread alone, the
/// best use of cores when several Python threads call at once); `None` uses
/// the process-wide pool ($T5EDGE_THREADS, else all cores). `mmap=False`
/// reads the weights into memory instead of mapping them.
///
/// Every method releases the GIL while it computes; one model can be used
/// from several threads at once, each call getting what it would get alone.
#[pyclass(frozen, module = "t5edge")]
pub struct T5 {
    pub inner: Arc<Inner>,
}

#[pymethods]
impl T5 {
    #[new]
    #[pyo3(signature = (model=None, *, dtype=None, exact=false, int8_ffn_out=false, threads=None, mmap=true, preset=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        dtype: Option<String>,
        exact: bool,
        int8_ffn_out: bool,
        threads: Option<i64>,
        mmap: bool,
        preset: Option<String>,
    ) -> PyResult<T5> {
        let threads = match threads {
            Some(n) if n < 1 => {
                return Err(Failure::request(format!(
                    "threads {n}: use a whole number of at least 1 (or None)"
                ))
                .into())
            }
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        let default = model.is_none() && preset.is_none();
        let inner = py.detach(|| {
            guarded(|| {
                let spec = LoadSpec {
                    dtype: parse_dtype(dtype.as_deref())?,
                    exact,
                    int8_ffn_out,
                    files: LoadOptions { mmap },
                };
                spec.validate()?;
                let dir = resolve(model.as_deref(), preset.as_deref())?;
                let model = T5Model::load_spec(&dir, &spec)?;
                let tok = if dir.join("tokenizer.json").exists() {
                    Some(Tokenizer::from_dir(&dir, model.config.vocab_size)?)
                } else {
                    None
                };
                Ok(Inner {
                    model,
                    tok,
                    dir,
                    exact,
                    pool: threads.map(Pool::new),
                })
            })
        })?;
        if default {
            PyErr::warn(
                py,
                &py.get_type::<PyUserWarning>(),
                c"t5edge.T5() without a model runs a synthetic t5-efficient-tiny-nl2 with random weights: its text is gibberish. Pass a checkpoint directory or a hub id in the local cache for real text.",
                1,
            )?;
        }
        Ok(T5 {
            inner: Arc::new(inner),
        })
    }

    /// Generates for one input or a list of inputs (batched together).
    ///
    /// An input is a str (tokenized with the checkpoint's tokenizer) or a
    /// sequence of token ids. Options take Hugging Face's names and defaults
    /// (`GenerationConfig`): max_new_tokens=32, min_new_tokens=0, num_beams=1,
    /// length_penalty=1.0, early_stopping=False (True or "never"),
    /// no_repeat_ngram_size=0, num_return_sequences=1, do_sample=False,
    /// temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, seed=0,
    /// eos_token_id=None. An unknown option or a bad value raises
    /// `t5edge.RequestError` (a `ValueError`).
    ///
    /// Returns the text of each input's best sequence (a list of texts per
    /// input with num_return_sequences > 1); with `return_ids=True` or
    /// `return_scores=True`, a `t5edge.Generation` per input (ids, texts,
    /// every sequence, beam scores). One input gives one result, a list a list.
    #[pyo3(
        signature = (inputs, /, *, return_ids=false, return_scores=false, **options),
        text_signature = "($self, inputs, /, *, max_new_tokens=32, min_new_tokens=0, num_beams=1, length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0, num_return_sequences=1, do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, seed=0, eos_token_id=None, return_ids=False, return_scores=False)"
    )]
    fn generate(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
        return_ids: bool,
        return_scores: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let Prompts { prompts, single } = convert::prompts(inputs)?;
        let fields = convert::options(options)?;
        let full = return_ids || return_scores;
        let inner = &*self.inner;
        let (results, many) = py.detach(|| {
            guarded(|| {
                let opts = inner.options(fields)?;
                let ids = inner.ids(&prompts, &opts)?;
                let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                let gens = inner.run(|| t5edge::generate(&inner.model, &refs, &opts))?;
                let tok = if full {
                    inner.tok.as_ref()
                } else {
                    Some(inner.tokenizer("generate returns ids only: pass return_ids=True")?)
                };
                let results = gens
                    .into_iter()
                    .zip(ids)
                    .map(|(g, input_ids)| {
                        let texts = tok
                            .map(|t| g.sequences.iter().map(|s| t.decode(s)).collect())
                            .transpose()?;
                        Ok(Generation {
                            text: texts
                                .as_ref()
                                .and_then(|t: &Vec<String>| t.first().cloned()),
                            ids: g.best().to_vec(),
                            texts,
                            sequences: g.sequences,
                            scores: g.scores,
                            input_ids,
                        })
                    })
                    .collect::<Outcome<Vec<_>>>()?;
                Ok((results, opts.num_return_sequences > 1))
            })
        })?;
        let one = |g: Generation| -> PyResult<Py<PyAny>> {
            Ok(match (full, many, g.texts) {
                (true, _, texts) => Py::new(py, Generation { texts, ..g })?.into_any(),
                (false, true, Some(texts)) => texts.into_pyobject(py)?.into_any().unbind(),
                (false, _, _) => g.text.into_pyobject(py)?.into_any().unbind(),
            })
        };
        answer(py, single, results, one)
    }

    /// Generates for one input, yielding text pieces as tokens are chosen
    /// (options as for `generate`). Greedy and sampling stream token by
    /// token; beam search yields its best sequence once the search ends.
    /// The work runs on a thread of its own; dropping or closing the
    /// iterator stops it at the next token.
    #[pyo3(
        signature = (input, /, **options),
        text_signature = "($self, input, /, *, max_new_tokens=32, min_new_tokens=0, num_beams=1, length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0, do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, seed=0, eos_token_id=None)"
    )]
    fn generate_stream(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<crate::stream::GenerateStream> {
        let prompt = convert::prompt(input)?;
        let fields = convert::options(options)?;
        crate::stream::GenerateStream::start(py, Arc::clone(&self.inner), prompt, fields)
    }

    /// Mean-pooled encoder embeddings (mask-aware: each input's own tokens).
    /// One input gives a float32 array [d_model], a list [n, d_model];
    /// `normalize=True` scales each to unit L2 norm.
    #[pyo3(signature = (inputs, /, *, normalize=false))]
    fn embed(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
        normalize: bool,
    ) -> PyResult<Py<PyAny>> {
        let Prompts { prompts, single } = convert::prompts(inputs)?;
        let inner = &*self.inner;
        let rows = py.detach(|| {
            guarded(|| {
                let ids = inner.ids(&prompts, &GenerateOptions::default())?;
                let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                Ok(inner.run(|| t5edge::embed(&inner.model, &refs, normalize))?)
            })
        })?;
        let (n, d) = (rows.len(), inner.model.config.d_model);
        let flat = PyArray1::from_vec(py, rows.concat());
        Ok(if single {
            flat.into_any().unbind()
        } else {
            flat.reshape([n, d])?.into_any().unbind()
        })
    }

    /// The encoder's last hidden states (HF's `last_hidden_state`, final
    /// layer norm applied) and the attention mask. One input gives
    /// (float32 [len, d_model], int64 [len]); a list gives
    /// (float32 [n, max_len, d_model], int64 [n, max_len]), each row padded
    /// with zeros after its own tokens, the mask 1 on them and 0 after.
    #[pyo3(signature = (inputs, /))]
    fn encode(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let Prompts { prompts, single } = convert::prompts(inputs)?;
        let inner = &*self.inner;
        let d = inner.model.config.d_model;
        let (states, mask, n, len) = py.detach(|| {
            guarded(|| {
                let ids = inner.ids(&prompts, &GenerateOptions::default())?;
                let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                let enc = inner.run(|| inner.model.encode_batch(&refs))?;
                let len = ids.iter().map(Vec::len).max().unwrap_or(0);
                let n = enc.len();
                if n == 1 {
                    // One sequence: its states as they are, no padded copy.
                    let states = enc.into_iter().next().unwrap_or_default();
                    return Ok((states, vec![1i64; len], 1, len));
                }
                let mut states = vec![0f32; n * len * d];
                let mut mask = vec![0i64; n * len];
                for (i, rows) in enc.iter().enumerate() {
                    states[i * len * d..][..rows.len()].copy_from_slice(rows);
                    mask[i * len..][..rows.len() / d].fill(1);
                }
                Ok((states, mask, n, len))
            })
        })?;
        let (states, mask) = (PyArray1::from_vec(py, states), PyArray1::from_vec(py, mask));
        Ok(if single {
            (
                states.reshape([len, d])?.into_any().unbind(),
                mask.into_any().unbind(),
            )
        } else {
            (
                states.reshape([n, len, d])?.into_any().unbind(),
                mask.reshape([n, len])?.into_any().unbind(),
            )
        })
    }

    /// log p(target | source) under teacher forcing: a `t5edge.Score` with
    /// one log-probability per target token and their sum. Source and
    /// target are a str or ids each (a text target is scored without the
    /// `</s>` its tokenization ends with, as `t5edge score --target` does),
    /// or two lists of equal length, giving a list of scores.
    #[pyo3(signature = (source, target, /))]
    fn score(
        &self,
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let src = convert::prompts(source)?;
        let tgt = convert::prompts(target)?;
        if src.single != tgt.single || src.prompts.len() != tgt.prompts.len() {
            return Err(Failure::request(format!(
                "score takes one source and one target, or two lists of equal length (here {} and {})",
                if src.single { "one".into() } else { format!("a list of {}", src.prompts.len()) },
                if tgt.single { "one".into() } else { format!("a list of {}", tgt.prompts.len()) }
            ))
            .into());
        }
        let inner = &*self.inner;
        let scores = py.detach(|| {
            guarded(|| {
                let ids = inner.ids(&src.prompts, &GenerateOptions::default())?;
                tgt.prompts
                    .iter()
                    .map(|t| {
                        // The library's rule for a score target (text without
                        // its closing `</s>`, as `t5edge score --target`).
                        Ok(t.target_ids(&inner.model, inner.tok.as_ref(), false)?)
                    })
                    .collect::<Outcome<Vec<_>>>()
                    .and_then(|targets| {
                        // One batched pass over every pair (sources packed
                        // through the encoder, targets through the decoder).
                        let pairs: Vec<(&[u32], &[u32])> = ids
                            .iter()
                            .zip(&targets)
                            .map(|(s, t)| (s.as_slice(), t.as_slice()))
                            .collect();
                        Ok(inner.run(|| t5edge::score::score_batch(&inner.model, &pairs))?)
                    })
            })
        })?;
        answer(py, src.single, scores, |s| {
            Ok(Py::new(
                py,
                Score {
                    token_logprobs: PyArray1::from_vec(py, s.token_logprobs).unbind(),
                    logprob: s.logprob,
                },
            )?
            .into_any())
        })
    }

    /// Sorts `documents` (a list of str) by relevance to `query`, as monoT5
    /// does: the model reads `template` with both filled in ("Query: {query}
    /// Document: {document} Relevant:" by default) and the score is
    /// p(`true_token`) against p(`false_token`) at the first decoder step.
    /// Returns a list of dicts `{"index", "score", "text"}`, best first; all
    /// documents run as one batch.
    #[pyo3(signature = (query, documents, /, *, template=None, true_token=None, false_token=None))]
    fn rerank(
        &self,
        py: Python<'_>,
        query: String,
        documents: Vec<String>,
        template: Option<String>,
        true_token: Option<String>,
        false_token: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let mut opts = t5edge::rerank::RerankOptions::default();
        if let Some(t) = template {
            opts.template = t;
        }
        if let Some(t) = true_token {
            opts.true_token = t;
        }
        if let Some(t) = false_token {
            opts.false_token = t;
        }
        let inner = &*self.inner;
        let ranked = py.detach(|| {
            guarded(|| {
                let tok =
                    inner.tokenizer("rerank needs text: the checkpoint has no tokenizer.json")?;
                Ok(inner
                    .run(|| t5edge::rerank::rerank(&inner.model, tok, &query, &documents, &opts))?)
            })
        })?;
        let out = PyList::empty(py);
        for r in ranked {
            let d = PyDict::new(py);
            d.set_item("index", r.index)?;
            d.set_item("score", r.score)?;
            d.set_item("text", &documents[r.index])?;
            out.append(d)?;
        }
        Ok(out.into_any().unbind())
    }

    /// The checkpoint's tokenizer (`None` when the directory has no
    /// tokenizer.json: pass token ids then).
    #[getter]
    fn tokenizer(&self) -> Option<crate::tokenizer::Tokenizer> {
        self.inner
            .tok
            .as_ref()
            .map(|_| crate::tokenizer::Tokenizer {
                inner: Arc::clone(&self.inner),
            })
    }

    /// The model's config as a dict (Hugging Face's config.json fields).
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = serde_json::to_value(&self.inner.model.config)
            .map_err(|e| Failure::new(Kind::Error, e.to_string()))?;
        convert::from_json(py, &v)
    }

    /// Number of parameters (the tied embedding counted once), as HF's
    /// `num_parameters()` reports it.
    fn num_parameters(&self) -> usize {
        self.inner.model.num_parameters()
    }

    /// The checkpoint directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir.clone()
    }

    /// The weight format the body runs in: "f32", "f16" or "int8".
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.model.body_format().name()
    }

    /// Whether greedy picks are certified (loaded with exact=True).
    #[getter]
    fn exact(&self) -> bool {
        self.inner.exact
    }

    /// Threads a call of this model computes with.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// What is loaded and how it runs: path, config, parameters, weight
    /// formats, the kernels' ISA level and threads (as `t5edge inspect`).
    fn inspect(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let m = &self.inner.model;
        let v = serde_json::json!({
            "model": self.inner.dir,
            "config": m.config,
            "parameters": m.num_parameters(),
            "dtype": m.body_format().name(),
            // None for an encoder-only checkpoint, which has no head.
            "lm_head": m.lm_head.as_ref().map(|h| h.linear.format().name()),
            "encoder_only": m.decoder.is_none(),
            "exact": self.inner.exact,
            "tokenizer": self.inner.tok.is_some(),
            "isa": t5edge_kernels::dispatch::active().name(),
            "threads": self.inner.threads(),
        });
        convert::from_json(py, &v)
    }

    fn __repr__(&self) -> String {
        format!(
            "t5edge.T5({:?}, dtype={:?}, exact={})",
            self.inner.dir.display().to_string(),
            self.dtype(),
            if self.inner.exact { "True" } else { "False" }
        )
    }
}

/// One result for one input, a list for a list.
fn answer<T>(
    py: Python<'_>,
    single: bool,
    results: Vec<T>,
    mut one: impl FnMut(T) -> PyResult<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    if single {
        return match results.into_iter().next() {
            Some(r) => one(r),
            None => Ok(py.None()),
        };
    }
    let items = results.into_iter().map(one).collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any().unbind())
}

/// What `generate` made for one input, with `return_ids=True` or
/// `return_scores=True`.
#[pyclass(frozen, get_all, module = "t5edge")]
#[derive(Clone)]
pub struct Generation {
    /// Text of the best sequence (None without a tokenizer).
    pub text: Option<String>,
    /// Ids of the best sequence, without the decoder start token.
    pub ids: Vec<u32>,
    /// Text of every returned sequence (None without a tokenizer).
    pub texts: Option<Vec<String>>,
    /// Ids of every returned sequence, best first.
    pub sequences: Vec<Vec<u32>>,
    /// Beam search only: HF's `sequences_scores`, one per sequence.
    pub scores: Option<Vec<f32>>,
    /// The input's token ids.
    pub input_ids: Vec<u32>,
}

#[pymethods]
impl Generation {
    fn __repr__(&self) -> String {
        let text = self
            .text
            .as_ref()
            .map_or("None".into(), |t| format!("{t:?}"));
        let scores = self
            .scores
            .as_ref()
            .map_or("None".into(), |s| format!("{s:?}"));
        format!(
            "Generation(text={text}, ids={:?}, scores={scores})",
            self.ids
        )
    }
}

/// log p(target | source): one value per target token and their sum.
#[pyclass(frozen, get_all, module = "t5edge")]
pub struct Score {
    /// float32 [target_len]: log-probability of each target token.
    pub token_logprobs: Py<PyArray1<f32>>,
    /// Their sum (accumulated in float64).
    pub logprob: f64,
}

#[pymethods]
impl Score {
    fn __repr__(&self) -> String {
        format!("Score(logprob={})", self.logprob)
    }
}
