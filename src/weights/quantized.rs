//! The quantized checkpoint format `t5edge quantize` writes (docs/FORMAT.md).
//!
//! A plain safetensors file whose header metadata says it is ours. A linear
//! layer `X` quantized to int8 is four tensors in the kernels' packed layout,
//! so loading maps them with no repacking:
//! `X.weight.i8` (I8 `[padded_n * padded_k]`), `X.weight.scales` (F32
//! `[groups, padded_n]`), `X.weight.row_sums` (I32 `[groups, padded_n]`),
//! `X.weight.err_norms` (F32 `[n]`). An f16 layer is `X.weight` in F16; norms
//! and the position-bias tables stay F32 under their HF names. Version 2 adds
//! `t5edge.ffn_out`, the FFN output projections' format: `w8a16` says their
//! int8 matrices run with 16-bit activations, each with a fifth part
//! `X.weight.in_scales` (F32 `[k]`, powers of two).

use super::file::{DType, TensorFile};
use super::store::WeightStore;
use super::tensor::{Int8Data, MappedInt8, W8A16Data};
use crate::error::{Error, Result};
use std::sync::Arc;

pub const FORMAT_KEY: &str = "t5edge.format";
pub const FORMAT_NAME: &str = "t5edge-quantized";
pub const VERSION_KEY: &str = "t5edge.format_version";
pub const FORMAT_VERSION: u32 = 2;
/// Versions this build reads: 1 lacks `FFN_OUT_KEY` (its int8 `wo`
/// matrices, written by `--int8-ffn-out`, run with int8 activations).
pub const READS_VERSIONS: [u32; 2] = [1, 2];
pub const FFN_OUT_KEY: &str = "t5edge.ffn_out";
/// `FFN_OUT_KEY`'s value when the FFN output projections are int8 weights
/// with 16-bit activations.
pub const FFN_OUT_W8A16: &str = "w8a16";
pub const DTYPE_KEY: &str = "t5edge.dtype";
pub const GROUP_KEY: &str = "t5edge.group_size";
pub const SCHEME_KEY: &str = "t5edge.scheme";
pub const SOURCE_KEY: &str = "t5edge.source_sha256";
pub const TOOL_KEY: &str = "t5edge.tool_version";

pub const I8_SUFFIX: &str = ".weight.i8";
pub const IN_SCALES_SUFFIX: &str = ".weight.in_scales";

/// What a quantized file's header says about itself.
#[derive(Clone, Debug)]
pub struct QuantizedInfo {
    pub version: u32,
    pub dtype: String,
    pub group_size: usize,
    pub source_sha256: String,
    pub tool_version: String,
    /// The FFN output projections' int8 matrices run with 16-bit activations.
    pub ffn_out_a16: bool,
}

/// Whether HF tensor `name` belongs to an FFN output projection (`wo`), the
/// layer the int8 policy treats apart: one rule for `quantize`, which
/// writes it, and the loader, which reads it back.
pub fn is_ffn_out(name: &str) -> bool {
    name.contains("DenseReluDense.wo.") || name.ends_with("DenseReluDense.wo")
}

/// `Some` for a file t5edge quantized (checking that this build reads its
/// version), `None` for an ordinary checkpoint.
pub fn info(file: &TensorFile) -> Result<Option<QuantizedInfo>> {
    let m = &file.metadata;
    if m.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT_NAME) {
        return Ok(None);
    }
    let bad = |msg: String| Error::Format {
        path: file.path.clone(),
        msg,
    };
    let version: u32 = m
        .get(VERSION_KEY)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("{VERSION_KEY} is missing or not a number")))?;
    if !READS_VERSIONS.contains(&version) {
        return Err(bad(format!(
            "quantized format version {version} is not one this t5edge ({}) reads (versions 1 and {FORMAT_VERSION}); re-run `t5edge quantize` or upgrade",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let ffn_out_a16 = match m.get(FFN_OUT_KEY).map(String::as_str) {
        Some(FFN_OUT_W8A16) => true,
        Some("int8" | "f16") | None => false,
        Some(other) => {
            return Err(bad(format!(
                "{FFN_OUT_KEY} is {other:?}; this t5edge knows w8a16, int8 and f16"
            )))
        }
    };
    let group_size: usize = m
        .get(GROUP_KEY)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("{GROUP_KEY} is missing or not a number")))?;
    Ok(Some(QuantizedInfo {
        version,
        dtype: m.get(DTYPE_KEY).cloned().unwrap_or_default(),
        group_size,
        source_sha256: m.get(SOURCE_KEY).cloned().unwrap_or_default(),
        tool_version: m.get(TOOL_KEY).cloned().unwrap_or_default(),
        ffn_out_a16,
    }))
}

/// The int8 matrix `name` (`X.weight` without the suffix parts) of shape
/// `[n, k]`, if the store holds one; every part checked against the shape,
/// then the bytes handed to the kernels (`Int8View::from_bytes`, the format's
/// owner) to be scanned once, with the tensor named in their error.
pub fn int8(
    store: &WeightStore,
    name: &str,
    n: usize,
    k: usize,
    group_size: usize,
) -> Result<Option<Int8Data>> {
    use t5edge_kernels::int8::{group_count, padded_k, padded_n};
    let data_name = format!("{name}{I8_SUFFIX}");
    let Some((file, _)) = store.get(&data_name) else {
        return Ok(None);
    };
    let (np, kp, groups) = (padded_n(n), padded_k(k), group_count(k, group_size));
    let part = |suffix: &str, dtype: DType, shape: &[usize]| -> Result<std::ops::Range<usize>> {
        let pname = format!("{name}.weight.{suffix}");
        let (f, info) = store.info(&pname, shape)?;
        if info.dtype != dtype {
            return Err(Error::Dtype {
                path: f.path.clone(),
                name: pname,
                expected: dtype.name().into(),
                found: info.dtype.name().into(),
            });
        }
        if !Arc::ptr_eq(&f.backing, &file.backing) {
            return Err(Error::Format {
                path: f.path.clone(),
                msg: format!("{pname} is not in the same file as {data_name}"),
            });
        }
        Ok(info.start..info.end)
    };
    let m = MappedInt8 {
        backing: file.backing.clone(),
        n,
        k,
        group_size,
        data: part("i8", DType::I8, &[np * kp])?,
        scales: part("scales", DType::F32, &[groups, np])?,
        row_sums: part("row_sums", DType::I32, &[groups, np])?,
        err_norms: part("err_norms", DType::F32, &[n])?,
    };
    let m = m.validate().map_err(|msg| Error::Format {
        path: file.path.clone(),
        msg: format!("int8 tensor {name}: {msg}"),
    })?;
    Ok(Some(Int8Data::Mapped(Arc::new(m))))
}

/// How many of `f`'s int8 matrices start off a 64-byte line, of how many.
/// The writer puts them on lines (`writer::DATA_ALIGN`); a file written
/// before it did has them all off, and its products read each 64-byte piece
/// from two lines: the same results, prefill up to ~1.2x slower on the
/// Intel Xeon (kernels/BENCH.md). Used in place all the same: a copy onto
/// lines would move a large model from the page cache into the heap.
/// A mapped file starts on a page and a file read into memory on a line, so
/// the offset in the file is the offset in memory.
pub fn int8_off_lines(f: &TensorFile) -> (usize, usize) {
    let mut off = 0;
    let mut all = 0;
    for (name, info) in &f.tensors {
        if info.dtype == DType::I8 && name.ends_with(I8_SUFFIX) {
            all += 1;
            off += usize::from(!info.start.is_multiple_of(super::writer::DATA_ALIGN));
        }
    }
    (off, all)
}

/// The W8A16 matrix `name`: its int8 parts ([`int8`]) and its input scales,
/// checked (`k` positive powers of two) with the tensor named in the error.
/// `None` when the store holds no int8 matrix of that name.
pub fn w8a16(
    store: &WeightStore,
    name: &str,
    n: usize,
    k: usize,
    group_size: usize,
) -> Result<Option<W8A16Data>> {
    let Some(w) = int8(store, name, n, k, group_size)? else {
        return Ok(None);
    };
    let tname = format!("{name}{IN_SCALES_SUFFIX}");
    let (f, info) = store.info(&tname, &[k])?;
    if info.dtype != DType::F32 {
        return Err(Error::Dtype {
            path: f.path.clone(),
            name: tname,
            expected: DType::F32.name().into(),
            found: info.dtype.name().into(),
        });
    }
    let in_scales = store.f32(&tname, &[k])?;
    t5edge_kernels::int8::check_input_scales(in_scales.as_slice(), k).map_err(|msg| {
        Error::Format {
            path: f.path.clone(),
            msg: format!("tensor {tname}: {msg}"),
        }
    })?;
    Ok(Some(W8A16Data { w, in_scales }))
}
