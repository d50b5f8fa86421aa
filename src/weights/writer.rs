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

/// Bytes written to the file a huge page at a time, each write starting on
/// a 2 MB boundary of the file: the page cache then holds the file in 2 MB
/// folios where the filesystem makes large ones (ext4 on Linux 6.x), which
/// a loader maps with 2 MB pages. W1 int8 read a quantized file mapped so
/// 11% faster than one in small folios on the Intel Xeon (kernels/BENCH.md);
/// a 1 MB `BufWriter` left half of a tiny-nl2 file in small ones.
struct Chunks<W: Write> {
    file: W,
    buf: Vec<u8>,
}

impl<W: Write> Chunks<W> {
    const SIZE: usize = t5edge_kernels::aligned::HUGE_PAGE;

    fn new(file: W) -> Chunks<W> {
        Chunks {
            file,
            buf: Vec::with_capacity(Self::SIZE),
        }
    }

    /// Writes what is left and hands the file back.
    fn finish(mut self) -> std::io::Result<W> {
        self.file.write_all(&self.buf)?;
        Ok(self.file)
    }
}

impl<W: Write> Write for Chunks<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(Self::SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == Self::SIZE {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Only whole chunks go out before `finish`, so every write starts
        // on a chunk boundary.
        Ok(())
    }
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
        let mut w = Chunks::new(std::fs::File::create(&tmp)?);
        write(&mut w)?;
        let f = w.finish()?;
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

/// A tensor to be written by [`write_streaming`]: its header entry, with the
/// byte length its data will have.
pub struct PlannedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

/// Where the data section of a written file starts: a multiple of this, the
/// line the kernels read their operands on (`t5edge_kernels::aligned`).
pub const DATA_ALIGN: usize = t5edge_kernels::aligned::ALIGN;

/// The 8-byte length and the JSON header of a file holding `tensors` in the
/// order given. The header is padded with spaces so the data section starts
/// on a line ([`DATA_ALIGN`]); safetensors allows no gaps between tensors, so
/// a tensor stays aligned for zero-copy views when every tensor before it has
/// a size that is a multiple of its alignment (callers order them so).
fn header(tensors: &[PlannedTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
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
                "data_offsets": [off, off + t.bytes],
            }),
        );
        off += t.bytes;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap_or_default();
    // The data section starts on a cache line (the 8-byte length, then the
    // header padded with spaces): a mapped int8 matrix is then 64-aligned
    // whenever the tensors before it are whole lines long, as every shape of
    // a real T5 checkpoint makes them, and the kernels' 64-byte reads are
    // one line each (kernels/src/aligned.rs).
    while !(8 + h.len()).is_multiple_of(DATA_ALIGN) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out
}

/// The size of the file [`write_streaming`] writes for `tensors`.
pub fn file_size(tensors: &[PlannedTensor], metadata: &BTreeMap<String, String>) -> u64 {
    header(tensors, metadata).len() as u64 + tensors.iter().map(|t| t.bytes as u64).sum::<u64>()
}

/// The safetensors bytes of `tensors`, in the order given, with header
/// `metadata` (see `header` on alignment).
pub fn serialize(tensors: &[OutTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let plan: Vec<PlannedTensor> = tensors
        .iter()
        .map(|t| PlannedTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.data.len(),
        })
        .collect();
    let mut out = header(&plan, metadata);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// Writes a safetensors file atomically one tensor at a time: the header
/// from `tensors` (names, dtypes, shapes and byte lengths known up front),
/// then `data(i, out)` for each tensor in order, which must write exactly
/// `tensors[i].bytes` bytes. Memory stays that of the largest tensor the
/// caller makes, never the file's. An error from `data` (or a wrong length)
/// removes the temporary file and is returned as is.
pub fn write_streaming(
    path: &Path,
    force: bool,
    tensors: &[PlannedTensor],
    metadata: &BTreeMap<String, String>,
    mut data: impl FnMut(usize, &mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut failure: Option<Error> = None;
    let result = write_atomic(path, force, |w| {
        w.write_all(&header(tensors, metadata))?;
        for (i, t) in tensors.iter().enumerate() {
            let mut counted = Counted { inner: w, n: 0 };
            if let Err(e) = data(i, &mut counted) {
                failure = Some(e);
                return Err(std::io::Error::other("tensor data failed"));
            }
            if counted.n != t.bytes {
                failure = Some(Error::Other(format!(
                    "{}: tensor {:?} wrote {} bytes, its header says {}",
                    path.display(),
                    t.name,
                    counted.n,
                    t.bytes
                )));
                return Err(std::io::Error::other("tensor length mismatch"));
            }
        }
        Ok(())
    });
    match failure {
        Some(e) => Err(e),
        None => result,
    }
}

/// A writer that counts the bytes through it.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: usize,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

#[cfg(test)]
mod tests {
    use super::Chunks;
    use std::io::Write;

    /// Each `write` call it gets: its length.
    #[derive(Default)]
    struct Calls {
        lens: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl Write for Calls {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.lens.push(data.len());
            self.bytes.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_but_the_last_is_a_whole_huge_page() {
        const SIZE: usize = Chunks::<Calls>::SIZE;
        // Pieces of every size, one larger than a chunk, as a header and
        // tensors come.
        let data: Vec<u8> = (0..5 * SIZE + 12345)
            .map(|i| (i * 7 + i / 999) as u8)
            .collect();
        let mut w = Chunks::new(Calls::default());
        let mut at = 0;
        let pieces = [8, 70_000, 3 * SIZE + 1, 1, 4096, 3 * SIZE / 5, SIZE - 3];
        for (i, len) in pieces.iter().cycle().enumerate() {
            if at == data.len() {
                break;
            }
            let len = (*len + i).min(data.len() - at);
            w.write_all(&data[at..at + len]).unwrap();
            w.flush().unwrap();
            at += len;
        }
        let calls = w.finish().unwrap();
        assert_eq!(calls.bytes, data);
        let (last, whole) = calls.lens.split_last().unwrap();
        assert!(whole.iter().all(|&n| n == SIZE), "{:?}", calls.lens);
        assert_eq!(*last, data.len() % SIZE);
    }
}
