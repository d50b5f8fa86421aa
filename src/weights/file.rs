//! One safetensors file, mapped (or read) and validated.
//!
//! The `safetensors` crate checks the header (size bound, JSON, offsets that tile
//! the data section exactly, dtype x shape = byte length, no overflow); we add
//! what a loader needs on top: the path in every message, dtypes we can use, and
//! typed zero-copy views with an alignment check.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use t5edge_kernels::aligned::AlignedBuf;

/// Element types the engine reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    I8,
    I32,
    U8,
    I64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I8 => "I8",
            DType::I32 => "I32",
            DType::U8 => "U8",
            DType::I64 => "I64",
        }
    }

    fn from_st(d: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as D;
        Some(match d {
            D::F32 => DType::F32,
            D::F16 => DType::F16,
            D::BF16 => DType::BF16,
            D::I8 => DType::I8,
            D::I32 => DType::I32,
            D::U8 => DType::U8,
            D::I64 => DType::I64,
            _ => return None,
        })
    }
}

/// Where a file's bytes live: a read-only map, or (for files that may change
/// under us, see the README's robustness section) a private heap copy.
pub enum Backing {
    Mmap(Mmap),
    /// On a cache line, as a map is: every tensor offset the file allows is
    /// then aligned for its views, and a written file's int8 matrices for
    /// the kernels' 64-byte reads.
    Heap(AlignedBuf<u8>),
    /// Not a file's: a stack's matrices gathered into one buffer by the
    /// engine ([`super::gather`]).
    Gathered(AlignedBuf<u8>),
}

impl Backing {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Heap(b) | Backing::Gathered(b) => b,
        }
    }

    /// Whether these are a file's bytes (mapped or read), not a copy the
    /// engine made.
    pub fn is_file(&self) -> bool {
        !matches!(self, Backing::Gathered(_))
    }
}

impl Backing {
    /// Lets the kernel drop the resident pages of `range` of a mapped file
    /// (they are read again from the file if touched later): what a pass
    /// that reads each tensor once (`quantize`) does behind itself, so its
    /// resident memory stays that of one tensor. A no-op for heap copies
    /// and off Unix.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = self {
            let page = 4096;
            let start = range.start.div_ceil(page) * page;
            let end = range.end.min(m.len()) / page * page;
            if end > start {
                // A file in the page cache in 2 MB folios is mapped 2 MB at
                // a time (the map is advised `HugePage`), so one touch of a
                // tensor beside the range (a norm's weights, a re-scored
                // row of a head) would map the dropped pages back with it:
                // the 2 MB around the range go back to small pages first.
                #[cfg(target_os = "linux")]
                {
                    use t5edge_kernels::aligned::HUGE_PAGE;
                    let base = m.as_ptr() as usize;
                    let s2 = ((base + start) & !(HUGE_PAGE - 1)).saturating_sub(base);
                    let e2 = ((base + end).div_ceil(HUGE_PAGE) * HUGE_PAGE - base)
                        .min(m.len() / page * page);
                    let _ = m.advise_range(memmap2::Advice::NoHugePage, s2, e2 - s2);
                }
                // SAFETY: the map is read-only and we never write its file,
                // so dropping its pages only makes a later read fault them in
                // again from the file with the same bytes: no slice anyone
                // holds can observe a change.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// [`Backing::release`] of every 2 MB piece of the map that `range`
    /// touches, its neighbours' bytes in them included: for a range whose
    /// neighbours are dropped too or not read again (a conversion at load
    /// releasing what it converted, whose small tensors it has copied).
    /// Why whole pieces: on Linux 6.18 one touch of a file's page maps its
    /// whole folio (up to 2 MB, however the map is advised; a probe on the
    /// Intel Xeon VM, kernels/BENCH.md), so converting a tensor mapped back
    /// the part of the 2 MB it shares with the tensor released before it:
    /// a converted large model kept 570 MB of its f32 file resident.
    pub fn release_around(&self, range: std::ops::Range<usize>) {
        use t5edge_kernels::aligned::HUGE_PAGE;
        let base = self.bytes().as_ptr() as usize;
        let start = ((base + range.start) & !(HUGE_PAGE - 1)).saturating_sub(base);
        let end =
            ((base + range.end).div_ceil(HUGE_PAGE) * HUGE_PAGE - base).min(self.bytes().len());
        self.release(start..end.max(start));
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A validated safetensors file.
pub struct TensorFile {
    pub path: PathBuf,
    pub backing: Arc<Backing>,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Opens and validates `path`, mapping it unless `mmap` is false.
    pub fn open(path: &Path, mmap: bool) -> Result<TensorFile> {
        // Checked before opening: opening a FIFO would block, and a directory or
        // device opens fine but cannot be mapped or has no meaningful length.
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: "not a regular file".into(),
            });
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let backing = if mmap {
            // SAFETY: the map is read-only and private to this process. Another
            // process truncating or rewriting the file while it is mapped would
            // make reads fault (SIGBUS) or change under us; that is the documented
            // cost of mapping (README, robustness), and `LoadOptions::mmap = false`
            // avoids it by reading into the heap instead.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            // Read from disk, the file then fills the page cache in 2 MB
            // folios (where the filesystem makes large ones), and a pass
            // walks its weights on 2 MB pages: W1 int8 11% faster on the
            // Intel Xeon, the load's page faults fewer (kernels/BENCH.md).
            // Advice only: a kernel without it changes nothing.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            Backing::Mmap(map)
        } else {
            use std::io::Read;
            let len = usize::try_from(file.metadata().map_err(|e| Error::io(path, e))?.len())
                .map_err(|_| Error::Format {
                    path: path.to_path_buf(),
                    msg: "file is larger than this platform can address".into(),
                })?;
            crate::memory::check_fits(
                path,
                "reading the file into memory instead of mapping it",
                len as u64,
                "map it instead (the default; --no-mmap turns it off)",
            )?;
            let mut buf = AlignedBuf::<u8>::zeroed(len);
            (&file)
                .read_exact(&mut buf)
                .map_err(|e| Error::io(path, e))?;
            Backing::Heap(buf)
        };
        Self::from_backing(path, Arc::new(backing))
    }

    /// Validates bytes already in memory (tests and fuzzing use this).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
        let buf = AlignedBuf::from_slice(bytes);
        Self::from_backing(path, Arc::new(Backing::Heap(buf)))
    }

    fn from_backing(path: &Path, backing: Arc<Backing>) -> Result<TensorFile> {
        let fmt = |msg: String| Error::Format {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = backing.bytes();
        if bytes.len() < 8 {
            return Err(fmt(format!(
                "file is {} bytes, shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        let (n, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(describe(e, bytes)))?;
        let data_start = 8 + n;
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = DType::from_st(info.dtype).ok_or_else(|| {
                fmt(format!(
                    "tensor {name:?} has dtype {:?}, which t5edge does not read",
                    info.dtype
                ))
            })?;
            let (b, e) = info.data_offsets;
            tensors.insert(
                name.clone(),
                TensorInfo {
                    dtype,
                    shape: info.shape.clone(),
                    start: data_start + b,
                    end: data_start + e,
                },
            );
        }
        let metadata = meta
            .metadata()
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        Ok(TensorFile {
            path: path.to_path_buf(),
            backing,
            tensors,
            metadata,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// The raw bytes of one tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes()[info.start..info.end]
    }
}

/// Turns the safetensors crate's errors into sentences.
fn describe(e: safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let file_len = bytes.len();
    match e {
        E::HeaderTooLarge => "header length is larger than the 100 MB safetensors allows".into(),
        E::HeaderTooSmall => "file is too short to hold a header".into(),
        E::InvalidHeaderLength => {
            format!("header length points past the end of the {file_len}-byte file")
        }
        E::InvalidHeader(e) => format!("header is not UTF-8: {e}"),
        E::InvalidHeaderDeserialization(e) => format!("header is not valid safetensors JSON: {e}"),
        E::InvalidOffset(name) => {
            format!("tensor {name:?} has data offsets that overlap, leave gaps or run past the end of the file")
        }
        E::TensorInvalidInfo | E::MisalignedSlice => match first_bad_size(bytes) {
            Some((name, want, got)) => {
                format!("tensor {name:?} has dtype x shape = {want} bytes but its data offsets span {got}")
            }
            None => "a tensor's dtype x shape does not match its byte length".into(),
        },
        E::ValidationOverflow => "a tensor's shape overflows when multiplied out".into(),
        E::MetadataIncompleteBuffer => match data_extent(bytes) {
            Some((name, end, have)) if end > have => format!(
                "tensor {name:?} ends at data offset {end} but the file holds only {have} data bytes (truncated?)"
            ),
            Some((_, end, have)) => format!(
                "the tensors end at data offset {end} but the file holds {have} data bytes: {} trailing bytes belong to no tensor",
                have - end
            ),
            None => format!("tensor data does not fill the {file_len}-byte file exactly"),
        },
        other => other.to_string(),
    }
}

/// The tensor with the largest end offset, that offset, and the size of the
/// data section, to say how a file and its header disagree.
fn data_extent(bytes: &[u8]) -> Option<(String, u128, u128)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let have = (bytes.len() - 8 - n) as u128;
    header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(name, t)| {
            let end = t.get("data_offsets")?.as_array()?.get(1)?.as_u64()?;
            Some((name.clone(), end as u128))
        })
        .max_by_key(|t| t.1)
        .map(|(name, end)| (name, end, have))
}

/// Finds the tensor whose dtype x shape disagrees with its offsets, to name it
/// (the safetensors crate reports only that one does). The header was already
/// parsed once, so it is known to be bounded, UTF-8 JSON.
fn first_bad_size(bytes: &[u8]) -> Option<(String, u128, u128)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    for (name, t) in header {
        if name == "__metadata__" {
            continue;
        }
        let bits: u128 = match t.get("dtype")?.as_str()? {
            "F4" => 4,
            "F6_E3M2" | "F6_E2M3" => 6,
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "F8_E4M3FNUZ"
            | "F8_E5M2FNUZ" => 8,
            "F16" | "BF16" | "I16" | "U16" => 16,
            "F32" | "I32" | "U32" => 32,
            "F64" | "I64" | "U64" | "C64" => 64,
            _ => continue,
        };
        let elems = t
            .get("shape")?
            .as_array()?
            .iter()
            .try_fold(1u128, |a, d| a.checked_mul(d.as_u64()? as u128))?;
        let offs = t.get("data_offsets")?.as_array()?;
        let span = (offs.get(1)?.as_u64()? as u128).checked_sub(offs.first()?.as_u64()? as u128)?;
        let want = elems.checked_mul(bits)?.div_ceil(8);
        if want != span || !(elems * bits).is_multiple_of(8) {
            return Some((name, want, span));
        }
    }
    None
}
