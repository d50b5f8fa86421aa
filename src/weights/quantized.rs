//! The quantized checkpoint format `t5edge quantize` writes (docs/FORMAT.md).
//!
//! A plain safetensors file whose header metadata says it is ours. A linear
//! layer `X` quantized to int8 is four tensors in the kernels' packed layout,
//! so loading maps them with no repacking:
//! `X.weight.i8` (I8 `[padded_n * padded_k]`), `X.weight.scales` (F32
//! `[groups, padded_n]`), `X.weight.row_sums` (I32 `[groups, padded_n]`),
//! `X.weight.err_norms` (F32 `[n]`). An f16 layer is `X.weight` in F16; norms
//! and the position-bias tables stay F32 under their HF names.

use super::file::{DType, TensorFile};
use super::store::WeightStore;
use super::tensor::{Int8Data, MappedInt8};
use crate::error::{Error, Result};
use std::sync::Arc;

pub const FORMAT_KEY: &str = "t5edge.format";
pub const FORMAT_NAME: &str = "t5edge-quantized";
pub const VERSION_KEY: &str = "t5edge.format_version";
pub const FORMAT_VERSION: u32 = 1;
pub const DTYPE_KEY: &str = "t5edge.dtype";
pub const GROUP_KEY: &str = "t5edge.group_size";
pub const SCHEME_KEY: &str = "t5edge.scheme";
pub const SOURCE_KEY: &str = "t5edge.source_sha256";
pub const TOOL_KEY: &str = "t5edge.tool_version";

pub const I8_SUFFIX: &str = ".weight.i8";

/// What a quantized file's header says about itself.
#[derive(Clone, Debug)]
pub struct QuantizedInfo {
    pub version: u32,
    pub dtype: String,
    pub group_size: usize,
    pub source_sha256: String,
    pub tool_version: String,
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
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "quantized format version {version} is not one this t5edge ({}) reads (version {FORMAT_VERSION}); re-run `t5edge quantize` or upgrade",
            env!("CARGO_PKG_VERSION")
        )));
    }
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
