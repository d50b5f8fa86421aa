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
use crate::weights::writer::{self, PlannedTensor};
use crate::weights::{Bf16Data, DType, F16Data, LoadOptions, WeightStore};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use t5edge_kernels::int8::{PackedInt8, Source};

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
    } else if is_ffn_out(name) {
        p.ffn_out
    } else if name == "lm_head.weight" || name == "shared.weight" || dup_embed {
        p.lm_head
    } else {
        p.body
    })
}

/// sha256 over the source's weight files, in name order. Read in 64 MB
/// pieces, each released behind the hash, so hashing a large checkpoint
/// does not leave it all resident.
fn source_hash(store: &WeightStore) -> String {
    const PIECE: usize = 64 << 20;
    let mut h = Sha256::new();
    for f in &store.files {
        let bytes = f.bytes();
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + PIECE).min(bytes.len());
            h.update(&bytes[at..end]);
            f.backing.release(at..end);
            at = end;
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One output tensor: a source tensor in a format, or a part of an int8 one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Plain,
    Half,
    /// An int8 matrix's data; `a16`: of `w` with its columns divided by the
    /// input scales (`PackedInt8::quantize_a16`), which follow as a fifth part.
    Int8Data {
        a16: bool,
    },
    Int8Scales,
    Int8RowSums,
    Int8ErrNorms,
    Int8InScales,
}

/// Which source tensor and part each output tensor is, with its header entry.
struct Plan {
    tensors: Vec<PlannedTensor>,
    parts: Vec<(String, Part)>,
}

/// The output's tensors in file order: per source tensor in name order, an
/// f32 tensor or an int8 matrix's data (a multiple of 64 bytes) and its f32/i32
/// parts, so every f32/i32 part stays 4-aligned; the f16 tensors last (their
/// sizes may be odd multiples of 2).
fn plan(store: &WeightStore, cfg: &T5Config, opts: &QuantizeOptions) -> Plan {
    use t5edge_kernels::int8::{group_count, padded_k, padded_n};
    let has_shared = store.contains("shared.weight");
    let mut p = Plan {
        tensors: Vec::new(),
        parts: Vec::new(),
    };
    let mut halves = Vec::new();
    for name in store.names() {
        let Some((_, info)) = store.get(name) else {
            continue;
        };
        let shape = info.shape.clone();
        let Some(fmt) = format_for(name, &shape, cfg, &opts.policy, has_shared) else {
            continue;
        };
        let count: usize = shape.iter().product();
        let push = |p: &mut Plan, out: String, dtype, shape, bytes, part| {
            p.tensors.push(PlannedTensor {
                name: out,
                dtype,
                shape,
                bytes,
            });
            p.parts.push((name.to_string(), part));
        };
        match fmt {
            WeightFormat::F32 => push(
                &mut p,
                name.into(),
                DType::F32,
                shape,
                count * 4,
                Part::Plain,
            ),
            WeightFormat::F16 | WeightFormat::Bf16 => halves.push((name.to_string(), shape, count)),
            // The same four parts: 16-bit activations are the header's word.
            WeightFormat::Int8 | WeightFormat::Int8A16 => {
                let a16 = fmt == WeightFormat::Int8A16;
                let (n, k) = (shape[0], shape[1]);
                let (np, g) = (padded_n(n), group_count(k, opts.group_size));
                let base = name.trim_end_matches(".weight");
                let data = np * padded_k(k);
                push(
                    &mut p,
                    format!("{base}{I8_SUFFIX}"),
                    DType::I8,
                    vec![data],
                    data,
                    Part::Int8Data { a16 },
                );
                push(
                    &mut p,
                    format!("{base}.weight.scales"),
                    DType::F32,
                    vec![g, np],
                    g * np * 4,
                    Part::Int8Scales,
                );
                push(
                    &mut p,
                    format!("{base}.weight.row_sums"),
                    DType::I32,
                    vec![g, np],
                    g * np * 4,
                    Part::Int8RowSums,
                );
                push(
                    &mut p,
                    format!("{base}.weight.err_norms"),
                    DType::F32,
                    vec![n],
                    n * 4,
                    Part::Int8ErrNorms,
                );
                if a16 {
                    push(
                        &mut p,
                        format!("{base}{IN_SCALES_SUFFIX}"),
                        DType::F32,
                        vec![k],
                        k * 4,
                        Part::Int8InScales,
                    );
                }
            }
        }
    }
    for (name, shape, count) in halves {
        p.tensors.push(PlannedTensor {
            name: name.clone(),
            dtype: DType::F16,
            shape,
            bytes: count * 2,
        });
        p.parts.push((name, Part::Half));
    }
    p
}

/// Quantizes `src` into `out`, one tensor at a time: each source tensor is
/// read (widened to f32 if stored in half precision), converted and written
/// before the next, and its mapped pages are released behind it, so memory
/// stays that of the largest tensor whatever the model's size. `progress` is
/// told each tensor's name as it goes.
pub fn quantize(
    src: &Path,
    out: &Path,
    opts: QuantizeOptions,
    force: bool,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Written> {
    if opts.dtype == WeightFormat::F32 || opts.dtype == WeightFormat::Bf16 {
        return Err(Error::Request(format!(
            "quantize writes int8 or f16, not {}",
            opts.dtype.name()
        )));
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
    // Checks every tensor the model needs, with the usual errors, before any
    // work (the layers are views of the map: nothing is widened here).
    crate::model::T5Model::from_store(cfg.clone(), &store)?;
    let plan = plan(&store, &cfg, &opts);
    let mut meta = BTreeMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT_NAME.to_string());
    meta.insert(VERSION_KEY.to_string(), FORMAT_VERSION.to_string());
    meta.insert(DTYPE_KEY.to_string(), opts.dtype.name().to_string());
    meta.insert(GROUP_KEY.to_string(), opts.group_size.to_string());
    meta.insert(
        FFN_OUT_KEY.to_string(),
        opts.policy.ffn_out.name().to_string(),
    );
    meta.insert(
        SCHEME_KEY.to_string(),
        format!(
            "body {}, ffn wo {}, lm head {}; int8 = symmetric per output row{}, packed 16x4 tiles, dynamic per-token int8 activations (w8a16: 16-bit)",
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
    let source_bytes: u64 = store.files.iter().map(|f| f.bytes().len() as u64).sum();
    let out_bytes = writer::file_size(&plan.tensors, &meta);
    let sources: Vec<&String> = {
        let mut v: Vec<&String> = plan.parts.iter().map(|(s, _)| s).collect();
        v.dedup();
        v
    };
    let total = sources.len();
    // The int8 matrix of the source tensor being written (and its input
    // scales, for W8A16): its data and its three or four f32/i32 parts are
    // consecutive output tensors.
    let mut packed: Option<(String, PackedInt8, Vec<f32>)> = None;
    let mut done = 0;
    let write_model = |path: &Path| {
        writer::write_streaming(path, false, &plan.tensors, &meta, |i, w| {
            let (name, part) = (&plan.parts[i].0, plan.parts[i].1);
            let io = |e| Error::io(path, e);
            if matches!(part, Part::Plain | Part::Half | Part::Int8Data { .. }) {
                progress(done.min(total.saturating_sub(1)), total, name);
                done += 1;
            }
            match part {
                Part::Plain | Part::Half => {
                    let v = source_values(&store, name)?;
                    let bytes: Vec<u8> = if part == Part::Plain {
                        v.iter().flat_map(|x| x.to_le_bytes()).collect()
                    } else {
                        v.iter()
                            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                            .collect()
                    };
                    w.write_all(&bytes).map_err(io)?;
                }
                Part::Int8Data { a16 } => {
                    let (n, k) = match store.get(name) {
                        Some((_, info)) => (info.shape[0], info.shape[1]),
                        None => return Err(Error::Other(format!("quantize: {name:?} vanished"))),
                    };
                    let quantized = |w: &dyn Source| {
                        if a16 {
                            PackedInt8::quantize_a16(w, n, k, opts.group_size)
                        } else {
                            PackedInt8::quantize(w, n, k, opts.group_size).map(|p| (p, Vec::new()))
                        }
                    };
                    let (p, t) = int8_source(&store, name, &[n, k], quantized)?.map_err(|e| {
                        Error::Format {
                            path: store.path(),
                            msg: format!("tensor {name:?}: {e}"),
                        }
                    })?;
                    w.write_all(p.view().data_bytes()).map_err(io)?;
                    packed = Some((name.clone(), p, t));
                }
                Part::Int8Scales | Part::Int8RowSums | Part::Int8ErrNorms | Part::Int8InScales => {
                    let (p, t) = match &packed {
                        Some((n, p, t)) if n == name => (p.view(), t),
                        _ => {
                            return Err(Error::Other(format!(
                                "quantize: {name:?} parts out of order"
                            )))
                        }
                    };
                    let bytes: Vec<u8> = match part {
                        Part::Int8Scales => {
                            p.scales().iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                        Part::Int8RowSums => {
                            p.row_sums().iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                        Part::Int8ErrNorms => {
                            p.err_norms().iter().flat_map(|x| x.to_le_bytes()).collect()
                        }
                        _ => t.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    };
                    w.write_all(&bytes).map_err(io)?;
                    // The last part of the matrix: err_norms, or the input
                    // scales after them.
                    if part == Part::Int8InScales || (part == Part::Int8ErrNorms && t.is_empty()) {
                        packed = None;
                    }
                }
            }
            Ok(())
        })
    };
    write_dir(src, out, force, write_model)?;
    Ok(Written {
        out: out.to_path_buf(),
        source_bytes,
        out_bytes,
        tensors: plan.tensors.len(),
    })
}

/// `f` on a source matrix as the int8 quantizer reads it (`int8::Source`):
/// a view of the map in its own format (f16 and bf16 widened a row at a
/// time by the quantizer, never a whole f32 copy); the mapped pages are
/// released once read. The quantizer refuses non-finite weights itself.
fn int8_source<R>(
    store: &WeightStore,
    name: &str,
    shape: &[usize],
    f: impl FnOnce(&dyn Source) -> R,
) -> Result<R> {
    let (file, info) = store.info(name, shape)?;
    let bytes = file.tensor_bytes(info);
    let r = match info.dtype {
        DType::F16 => f(&F16Data::mapped_or_copied(&file.backing, info.start, bytes).as_slice()),
        DType::BF16 => f(&Bf16Data::mapped_or_copied(&file.backing, info.start, bytes).as_slice()),
        _ => f(&store.f32(name, shape)?.as_slice()),
    };
    file.backing.release(info.start..info.end);
    Ok(r)
}

/// A source tensor's values as f32 (a view of the map for f32, a widened copy
/// for f16/bf16), refused if any is not finite; its mapped pages are released
/// once read, so a pass over the model keeps one tensor resident.
fn source_values(store: &WeightStore, name: &str) -> Result<Vec<f32>> {
    let (f, info) = store.get(name).ok_or_else(|| Error::MissingTensor {
        path: store.path(),
        name: name.to_string(),
    })?;
    let shape = info.shape.clone();
    let range = info.start..info.end;
    let vals = store.f32(name, &shape)?;
    let v = vals.as_slice();
    if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Format {
            path: store.path(),
            msg: format!(
                "tensor {name:?} holds {} at index {bad}; refusing to quantize non-finite weights",
                v[bad]
            ),
        });
    }
    let out = v.to_vec();
    drop(vals);
    f.backing.release(range);
    Ok(out)
}

/// Builds OUT as a sibling temporary directory, then renames it into place.
fn write_dir(
    src: &Path,
    out: &Path,
    force: bool,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
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
        write_model(&tmp.join("model.safetensors"))?;
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
