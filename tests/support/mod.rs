//! Helpers for the robustness tests: tiny synthetic checkpoints in temporary
//! directories, safetensors surgery, and running the built CLI.
#![allow(dead_code)]

// tests/tokenizer_parity.rs also loads it through `mod common`: one definition, two modules.
#[allow(clippy::duplicate_mod)]
#[path = "../common/cli.rs"]
mod cli;
pub use cli::t5edge_command;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use t5edge::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
use t5edge::weights::writer::{serialize, OutTensor};
use t5edge::weights::TensorFile;
use t5edge::T5Config;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "t5edge-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny shape every robustness test uses: 2+2 layers, d_model 64, 4 heads of
/// 16, vocab 512 (room for the synthetic tokenizer).
pub fn tiny_config() -> T5Config {
    let base = preset("t5-efficient-tiny-nl2").unwrap();
    with_overrides(
        &base,
        &[
            "vocab_size=512".into(),
            "d_model=64".into(),
            "d_ff=128".into(),
            "d_kv=16".into(),
            "num_heads=4".into(),
        ],
    )
    .unwrap()
}

/// A pristine tiny checkpoint, written once per test binary; copy it before
/// corrupting anything.
pub fn base_checkpoint() -> &'static Path {
    static BASE: OnceLock<TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let d = TempDir::new("base");
        write_checkpoint(
            d.path(),
            &tiny_config(),
            &SynthOptions {
                seed: 7,
                norm_jitter: 0.1,
                ..Default::default()
            },
            true,
        )
        .unwrap();
        d
    })
    .path()
}

/// A private copy of the base checkpoint.
pub fn checkpoint_copy(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(base_checkpoint().join(f), d.join(f)).unwrap();
    }
    d
}

/// The base checkpoint's model.safetensors bytes.
pub fn base_weights() -> Vec<u8> {
    std::fs::read(base_checkpoint().join("model.safetensors")).unwrap()
}

/// Splits safetensors bytes into (header JSON object, data section).
pub fn split(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Joins a header (serialized as given, no padding) and a data section.
pub fn join_raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// Joins a header object and a data section, padding the header to 8 bytes.
pub fn join(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let mut h = serde_json::to_vec(header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    join_raw(&h, data)
}

/// The tensors of a safetensors file, in offset order, as writable tensors.
pub fn tensors_of(bytes: &[u8]) -> (Vec<OutTensor>, BTreeMap<String, String>) {
    let f = TensorFile::from_bytes(Path::new("mem"), bytes).unwrap();
    let mut v: Vec<_> = f
        .tensors
        .iter()
        .map(|(name, info)| {
            (
                info.start,
                OutTensor {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    data: f.tensor_bytes(info).to_vec(),
                },
            )
        })
        .collect();
    v.sort_by_key(|t| t.0);
    (v.into_iter().map(|t| t.1).collect(), f.metadata.clone())
}

/// Rewrites `dir/model.safetensors` through `edit` on its tensor list.
pub fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<OutTensor>)) {
    let p = dir.join("model.safetensors");
    let (mut t, meta) = tensors_of(&std::fs::read(&p).unwrap());
    edit(&mut t);
    std::fs::write(&p, serialize(&t, &meta)).unwrap();
}

/// Rewrites `dir/config.json` through `edit` on its JSON object.
pub fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Runs the built `t5edge` with `args`, optional stdin bytes and extra env.
pub fn run_cli(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let cache = std::env::temp_dir().join(format!("t5edge-test-cache-{}", std::process::id()));
    let mut cmd = t5edge_command();
    cmd.args(args)
        .env_remove("T5EDGE_ISA")
        .env("T5EDGE_CACHE", cache)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn t5edge");
    if let Some(bytes) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        // The process may exit before reading everything; that is not our failure.
        let _ = s.write_all(bytes);
    }
    child.wait_with_output().unwrap()
}

/// Asserts the CLI failed the way every failure must: non-zero exit, exactly one
/// stderr line starting with `error:` that contains each of `needles`, no panic.
pub fn assert_one_line_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "{what}: panicked:\n{stderr}"
    );
    assert!(
        !out.status.success(),
        "{what}: exit status {:?}, stdout {stdout:?}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: stderr is not one line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{what}: error line does not mention {n:?}: {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

/// Asserts `out` is the argument parser's refusal: exit 2, clap's whole
/// message (its first line `error: ...` naming each of `needles`, then the
/// usage or a pointer to --help), no panic. Returns the first line.
pub fn assert_usage_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error: "), "{what}: {stderr}");
    for n in needles {
        assert!(
            first.contains(n),
            "{what}: {first:?} does not mention {n:?}"
        );
    }
    assert!(
        stderr.contains("Usage: t5edge") || stderr.contains("try '--help'"),
        "{what}: neither usage nor a pointer to --help:\n{stderr}"
    );
    first.to_string()
}

/// Our own error (one line, exit 1) or the argument parser's (exit 2, with
/// the usage), whichever `out` is, naming each of `needles`.
pub fn assert_cli_error(what: &str, out: &Output, needles: &[&str]) -> String {
    if out.status.code() == Some(2) {
        assert_usage_error(what, out, needles)
    } else {
        assert_one_line_error(what, out, needles)
    }
}

/// A library error as text, asserting it contains each of `needles`.
pub fn err_contains<T>(what: &str, r: t5edge::Result<T>, needles: &[&str]) -> String {
    let e = match r {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "{what}: multi-line error: {e}");
    for n in needles {
        assert!(e.contains(n), "{what}: error does not mention {n:?}: {e}");
    }
    e
}
