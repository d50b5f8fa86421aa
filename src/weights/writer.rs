//! Writing safetensors files atomically: a temporary file beside the target,
//! fsync, rename. A crash or an interrupt leaves either the old file or the
//! new one, never a partial one; an existing target is kept unless forced.

use super::file::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One tensor to write.
pub struct OutTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OutTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> OutTensor {
        OutTensor {
            name: name.into(),
            dtype: DType::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Refuses to replace `path` unless `force`.
pub fn check_clobber(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::Other(format!(
            "{} exists; pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(
    path: &Path,
    force: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    check_clobber(path, force)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// The safetensors bytes of `tensors`, in the order given, with header
/// `metadata`. The header is padded with spaces so the data section starts
/// 8-aligned; safetensors allows no gaps between tensors, so a tensor stays
/// aligned for zero-copy views when every tensor before it has a size that is
/// a multiple of its alignment (callers order them so).
pub fn serialize(tensors: &[OutTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut off = 0usize;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [off, off + t.data.len()],
            }),
        );
        off += t.data.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap_or_default();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// Serializes and writes atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[OutTensor],
    metadata: &BTreeMap<String, String>,
    force: bool,
) -> Result<()> {
    let bytes = serialize(tensors, metadata);
    write_atomic(path, force, |w| w.write_all(&bytes))
}
