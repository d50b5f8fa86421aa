//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;

use std::path::{Path, PathBuf};
use t5edge::weights::{DType, TensorFile};

/// Where the reference material should be: `T5EDGE_SHARED`, else `../shared`
/// beside the repository.
pub fn shared_root() -> PathBuf {
    std::env::var_os("T5EDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("shared")
        })
}

/// `../shared` beside the repository (or `T5EDGE_SHARED`), if present. Tests
/// that need it print why they skip when it is absent.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let p = shared_root();
    if p.join("goldens").is_dir() && p.join("models").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: {} not found (the reference material lives beside the repo; set T5EDGE_SHARED)", p.display());
        None
    }
}

/// Arrays read from a goldens/fixtures safetensors file.
pub struct Arrays(pub TensorFile);

impl Arrays {
    pub fn open(path: &Path) -> Arrays {
        Arrays(TensorFile::open(path, true).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.0.tensors[name].shape.clone()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let info = self
            .0
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no array {name}"));
        assert_eq!(info.dtype, DType::F32, "{name}");
        self.0
            .tensor_bytes(info)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let info = self
            .0
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no array {name}"));
        let b = self.0.tensor_bytes(info);
        match info.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect(),
            d => panic!("{name}: dtype {d:?} is not an id array"),
        }
    }
}

/// Max |a - b| and the largest |b|, for relative statements.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let m = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
    (d, m)
}

/// Asserts `a` matches `b` to `rel` of b's largest magnitude.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    let (d, m) = max_abs_diff(a, b);
    assert!(
        d <= rel * m.max(1e-6),
        "{what}: max abs diff {d:e} exceeds {rel:e} x max |ref| {m:e}"
    );
}

/// `tests/fixtures/decode_refs.json`: HF decoding references
/// (tools/refs/make_beam_refs.py).
pub fn decode_refs() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode_refs.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Regenerates the synthetic checkpoint the decoding references were made on
/// (`t5edge synth --preset t5-efficient-tiny-nl2 --seed 1 --norm-jitter 0.2
/// --set feed_forward_proj=gated-gelu --set tie_word_embeddings=false --set
/// vocab_size=1000`) into a temp dir.
pub fn decode_synth_model() -> (tempfile::TempDir, t5edge::T5Model) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    let cfg = t5edge::synth::with_overrides(
        &cfg,
        &[
            "feed_forward_proj=gated-gelu".into(),
            "tie_word_embeddings=false".into(),
            "vocab_size=1000".into(),
        ],
    )
    .unwrap();
    t5edge::synth::write_checkpoint(
        dir.path(),
        &cfg,
        &t5edge::synth::SynthOptions {
            seed: 1,
            norm_jitter: 0.2,
            ..Default::default()
        },
        false,
    )
    .unwrap();
    let model = t5edge::T5Model::load(dir.path()).unwrap();
    (dir, model)
}

/// HF `generate` keyword arguments (as recorded in the fixture) as options.
pub fn options_from_hf(o: &serde_json::Value) -> t5edge::GenerateOptions {
    use t5edge::generate::EarlyStopping;
    let mut g = t5edge::GenerateOptions::default();
    for (k, v) in o.as_object().unwrap() {
        let u = || v.as_u64().unwrap() as usize;
        let f = || v.as_f64().unwrap() as f32;
        g = match k.as_str() {
            "num_beams" => g.num_beams(u()),
            "max_new_tokens" => g.max_new_tokens(u()),
            "min_new_tokens" => g.min_new_tokens(u()),
            "num_return_sequences" => g.num_return_sequences(u()),
            "length_penalty" => g.length_penalty(f()),
            "no_repeat_ngram_size" => g.no_repeat_ngram_size(u()),
            "repetition_penalty" => g.repetition_penalty(f()),
            "temperature" => g.temperature(f()),
            "top_k" => g.top_k(u()),
            "top_p" => g.top_p(f()),
            "do_sample" => g.do_sample(v.as_bool().unwrap()),
            "eos_token_id" => g.eos_token_id(Some(v.as_u64().unwrap() as u32)),
            "early_stopping" => g.early_stopping(match v {
                serde_json::Value::Bool(true) => EarlyStopping::Finished,
                serde_json::Value::Bool(false) => EarlyStopping::Heuristic,
                _ => EarlyStopping::Never,
            }),
            other => panic!("option {other} not mapped"),
        };
    }
    g
}

/// Deterministic prompts of different lengths (4-26 ids, ending with EOS),
/// for the batch tests.
pub fn varied_prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n as u32)
        .map(|r| {
            let mut p: Vec<u32> = (0..3 + (r * 7) % 23)
                .map(|i| 5 + (r * 131 + i * 17) % 900)
                .collect();
            p.push(1);
            p
        })
        .collect()
}
