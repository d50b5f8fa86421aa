//! `t5edge quantize`: an HF checkpoint in, a quantized directory out that maps
//! with no repacking (format in `weights::quantized`, docs/FORMAT.md).
//!
//! The output directory is built beside OUT under a temporary name and renamed
//! into place only when complete, so an interrupted run leaves no partial OUT;
//! an existing OUT is replaced only with `force`; the source is only read.

pub mod accuracy;

use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::model::{FormatPolicy, WeightFormat};
use crate::weights::quantized::*;
use crate::weights::writer::{serialize, OutTensor};
use crate::weights::{DType, LoadOptions, WeightStore};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use t5edge_kernels::int8::PackedInt8;

/// Files copied from the source directory when present (tokenizer and generation settings).
const COPIED: [&str; 5] = [
    "tokenizer.json",
    "spiece.model",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "generation_config.json",
];

#[derive(Clone, Copy, Debug)]
pub struct QuantizeOptions {
    pub dtype: WeightFormat,
    pub group_size: usize,
    pub policy: FormatPolicy,
}

impl QuantizeOptions {
    pub fn new(dtype: WeightFormat, group_size: usize) -> QuantizeOptions {
        let mut policy = FormatPolicy::for_dtype(dtype);
        policy.group_size = group_size;
        QuantizeOptions {
            dtype,
            group_size,
            policy,
        }
    }
}

/// What was written.
pub struct Written {
    pub out: PathBuf,
    pub source_bytes: u64,
    pub out_bytes: u64,
    pub tensors: usize,
}

/// Which format a source tensor gets, or `None` to drop it (duplicates of the
/// shared embedding, and a tied model's redundant `lm_head.weight`).
fn format_for(
    name: &str,
    shape: &[usize],
    cfg: &T5Config,
    p: &FormatPolicy,
    has_shared: bool,
) -> Option<WeightFormat> {
    let dup_embed = name == "encoder.embed_tokens.weight" || name == "decoder.embed_tokens.weight";
    if (dup_embed && has_shared) || (name == "lm_head.weight" && cfg.tie_word_embeddings) {
        return None;
    }
    let linear =
        shape.len() == 2 && name.ends_with(".weight") && !name.contains("relative_attention_bias");
    Some(if !linear {
        WeightFormat::F32
    } else if name.contains("DenseReluDense.wo.") {
        p.ffn_out
    } else if name == "lm_head.weight" || name == "shared.weight" || dup_embed {
        p.lm_head
    } else {
        p.body
    })
}

/// sha256 over the source's weight files, in name order.
fn source_hash(store: &WeightStore) -> String {
    let mut h = Sha256::new();
    for f in &store.files {
        h.update(f.bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Quantizes `src` into `out`. `progress` is told each tensor's name as it goes.
pub fn quantize(
    src: &Path,
    out: &Path,
    opts: QuantizeOptions,
    force: bool,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Written> {
    if opts.dtype == WeightFormat::F32 {
        return Err(Error::Request(
            "quantize writes int8 or f16; f32 is the source format".into(),
        ));
    }
    if opts.dtype == WeightFormat::Int8 {
        t5edge_kernels::int8::check_group_size(opts.group_size)
            .map_err(|e| Error::Request(format!("--group-size: {e}")))?;
    }
    if out.exists() && !force {
        return Err(Error::Other(format!(
            "{} exists; pass --force to replace it",
            out.display()
        )));
    }
    let cfg = T5Config::from_file(&src.join("config.json"))?;
    let store = WeightStore::open_dir(src, LoadOptions::default())?;
    if store
        .files
        .first()
        .map(info)
        .transpose()?
        .flatten()
        .is_some()
    {
        return Err(Error::Request(format!(
            "{} is already a t5edge quantized checkpoint; quantize the original",
            src.display()
        )));
    }
    // Checks every tensor the model needs, with the usual errors, before any work.
    crate::model::T5Model::from_store(cfg.clone(), &store)?;
    let has_shared = store.contains("shared.weight");
    let names: Vec<String> = store.names().map(String::from).collect();
    let mut plain = Vec::new(); // F32 and I32: sizes are multiples of 4, keeps alignment
    let mut halves = Vec::new();
    let mut bytes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        progress(i, names.len(), name);
        let (_, info) = store.get(name).ok_or_else(|| Error::MissingTensor {
            path: store.path(),
            name: name.clone(),
        })?;
        let shape = info.shape.clone();
        let Some(fmt) = format_for(name, &shape, &cfg, &opts.policy, has_shared) else {
            continue;
        };
        let vals = store.f32(name, &shape)?;
        let v = vals.as_slice();
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::Format {
                path: store.path(),
                msg: format!("tensor {name:?} holds {} at index {bad}; refusing to quantize non-finite weights", v[bad]),
            });
        }
        match fmt {
            WeightFormat::F32 => plain.push(OutTensor::f32(name.clone(), shape, v)),
            WeightFormat::F16 => halves.push(OutTensor {
                name: name.clone(),
                dtype: DType::F16,
                shape,
                data: v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            }),
            WeightFormat::Int8 => {
                let (n, k) = (shape[0], shape[1]);
                let p =
                    PackedInt8::quantize(v, n, k, opts.group_size).map_err(|e| Error::Format {
                        path: store.path(),
                        msg: format!("tensor {name:?}: {e}"),
                    })?;
                let q = p.view();
                let np = q.padded_n();
                let base = name.trim_end_matches(".weight");
                let groups = q.groups();
                plain.push(OutTensor::f32(
                    format!("{base}.weight.scales"),
                    vec![groups, np],
                    q.scales(),
                ));
                plain.push(OutTensor {
                    name: format!("{base}.weight.row_sums"),
                    dtype: DType::I32,
                    shape: vec![groups, np],
                    data: q.row_sums().iter().flat_map(|x| x.to_le_bytes()).collect(),
                });
                plain.push(OutTensor::f32(
                    format!("{base}.weight.err_norms"),
                    vec![n],
                    q.err_norms(),
                ));
                bytes.push(OutTensor {
                    name: format!("{base}{I8_SUFFIX}"),
                    dtype: DType::I8,
                    shape: vec![q.data_bytes().len()],
                    data: q.data_bytes().to_vec(),
                });
            }
        }
    }
    let count = plain.len() + halves.len() + bytes.len();
    let mut tensors = plain;
    tensors.append(&mut halves);
    tensors.append(&mut bytes);
    let mut meta = BTreeMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT_NAME.to_string());
    meta.insert(VERSION_KEY.to_string(), FORMAT_VERSION.to_string());
    meta.insert(DTYPE_KEY.to_string(), opts.dtype.name().to_string());
    meta.insert(GROUP_KEY.to_string(), opts.group_size.to_string());
    meta.insert(
        SCHEME_KEY.to_string(),
        format!(
            "body {}, ffn wo {}, lm head {}; int8 = symmetric per output row{}, packed 16x4 tiles, dynamic per-token int8 activations",
            opts.policy.body.name(),
            opts.policy.ffn_out.name(),
            opts.policy.lm_head.name(),
            if opts.group_size > 0 { format!(" and group of {}", opts.group_size) } else { String::new() }
        ),
    );
    meta.insert(SOURCE_KEY.to_string(), source_hash(&store));
    meta.insert(
        TOOL_KEY.to_string(),
        format!("t5edge {}", env!("CARGO_PKG_VERSION")),
    );
    meta.insert("format".to_string(), "pt".to_string());
    let blob = serialize(&tensors, &meta);
    let source_bytes: u64 = store.files.iter().map(|f| f.bytes().len() as u64).sum();
    let out_bytes = blob.len() as u64;
    write_dir(src, out, force, &blob)?;
    Ok(Written {
        out: out.to_path_buf(),
        source_bytes,
        out_bytes,
        tensors: count,
    })
}

/// Builds OUT as a sibling temporary directory, then renames it into place.
fn write_dir(src: &Path, out: &Path, force: bool, blob: &[u8]) -> Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Request(format!("{}: not a directory name", out.display())))?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let io = |p: &Path, e| Error::io(p, e);
    let build = || -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        crate::weights::writer::write_atomic(&tmp.join("model.safetensors"), false, |w| {
            w.write_all(blob)
        })?;
        let cfg_src = src.join("config.json");
        std::fs::copy(&cfg_src, tmp.join("config.json")).map_err(|e| io(&cfg_src, e))?;
        for f in COPIED {
            let p = src.join(f);
            if p.is_file() {
                std::fs::copy(&p, tmp.join(f)).map_err(|e| io(&p, e))?;
            }
        }
        // The fast tokenizer's cache (only for T5's own pipeline).
        let tok = tmp.join("tokenizer.json");
        if tok.is_file() {
            crate::tokenizer::write_cache(&tok, &tmp.join(crate::tokenizer::CACHE_NAME))?;
        }
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        if !force {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::Other(format!(
                "{} exists; pass --force to replace it",
                out.display()
            )));
        }
        // Move the old one aside first so OUT is never half old, half new.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| io(out, e))?;
        if let Err(e) = std::fs::rename(&tmp, out) {
            let _ = std::fs::rename(&old, out);
            return Err(io(out, e));
        }
        let _ = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
    } else {
        std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
    }
    Ok(())
}
