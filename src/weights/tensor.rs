//! Typed weight data: a zero-copy view into a mapped file when the bytes are
//! aligned and already the type the kernels want, an owned copy otherwise.

use super::file::Backing;
use half::f16;
use std::sync::Arc;

/// f32 values, mapped or owned.
#[derive(Clone)]
pub enum F32Data {
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<f32>>),
}

impl F32Data {
    /// A zero-copy view if `bytes[start..]` is 4-byte aligned; `None` otherwise.
    pub fn mapped(backing: &Arc<Backing>, start: usize, len: usize) -> Option<F32Data> {
        let bytes = backing
            .bytes()
            .get(start..start.checked_add(len.checked_mul(4)?)?)?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(std::mem::align_of::<f32>())
            .then(|| F32Data::Mapped {
                backing: backing.clone(),
                start,
                len,
            })
    }

    pub fn as_slice(&self) -> &[f32] {
        match self {
            F32Data::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 4];
                // SAFETY: `mapped` checked the range and 4-byte alignment of this
                // exact slice at construction, and the backing is immutable; every
                // bit pattern is a valid f32.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
            F32Data::Owned(v) => v,
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, F32Data::Mapped { .. })
    }
}

impl From<Vec<f32>> for F32Data {
    fn from(v: Vec<f32>) -> Self {
        F32Data::Owned(Arc::new(v))
    }
}

/// f16 values, mapped or owned.
#[derive(Clone)]
pub enum F16Data {
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<f16>>),
}

impl F16Data {
    pub fn mapped(backing: &Arc<Backing>, start: usize, len: usize) -> Option<F16Data> {
        let bytes = backing
            .bytes()
            .get(start..start.checked_add(len.checked_mul(2)?)?)?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(std::mem::align_of::<f16>())
            .then(|| F16Data::Mapped {
                backing: backing.clone(),
                start,
                len,
            })
    }

    pub fn as_slice(&self) -> &[f16] {
        match self {
            F16Data::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 2];
                // SAFETY: range and 2-byte alignment checked in `mapped`; the
                // backing is immutable; every bit pattern is a valid f16.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f16, *len) }
            }
            F16Data::Owned(v) => v,
        }
    }
}

impl From<Vec<f16>> for F16Data {
    fn from(v: Vec<f16>) -> Self {
        F16Data::Owned(Arc::new(v))
    }
}

/// A packed int8 matrix: quantized at load (owned) or mapped from a file that
/// `t5edge quantize` wrote in the kernels' layout.
#[derive(Clone)]
pub enum Int8Data {
    Owned(Arc<t5edge_kernels::int8::PackedInt8>),
    Mapped(Arc<MappedInt8>),
}

/// Data, scales, row sums and error norms of an int8 matrix, borrowed.
type Int8Parts<'a> = (&'a [i8], &'a [f32], &'a [i32], &'a [f32]);

/// The byte ranges of a mapped int8 matrix's parts, validated once at load.
pub struct MappedInt8 {
    pub backing: Arc<Backing>,
    pub n: usize,
    pub k: usize,
    pub group_size: usize,
    pub data: std::ops::Range<usize>,
    pub scales: std::ops::Range<usize>,
    pub row_sums: std::ops::Range<usize>,
    pub err_norms: std::ops::Range<usize>,
}

impl MappedInt8 {
    fn parts(&self) -> Option<Int8Parts<'_>> {
        let b = self.backing.bytes();
        Some((
            t5edge_kernels::int8::i8_from_bytes(b.get(self.data.clone())?),
            cast_slice::<f32>(b.get(self.scales.clone())?)?,
            cast_slice::<i32>(b.get(self.row_sums.clone())?)?,
            cast_slice::<f32>(b.get(self.err_norms.clone())?)?,
        ))
    }

    /// Validates the parts fully (every byte scanned: -128 values, padding,
    /// row sums against the data) and returns the matrix.
    pub fn validate(self) -> Result<MappedInt8, String> {
        let (d, s, r, e) = self
            .parts()
            .ok_or("int8 parts are out of range or misaligned")?;
        validate_int8(self.n, self.k, self.group_size, d, s, r, e)?;
        Ok(self)
    }
}

/// The checks of the kernels' `Int8View::from_parts` (same errors, found in
/// the same order), but scanning the packed data a 64-byte k-block at a time
/// with no per-byte index arithmetic: several times faster, which is most of
/// a quantized model's start-up.
pub fn validate_int8(
    n: usize,
    k: usize,
    group_size: usize,
    data: &[i8],
    scales: &[f32],
    row_sums: &[i32],
    err_norms: &[f32],
) -> Result<(), String> {
    use t5edge_kernels::int8::{group_count, padded_k, padded_n, Int8View, K_BLOCK, TILE_N};
    // Dimensions and part lengths (cheap), with the kernels' messages.
    if let Err(e) =
        Int8View::from_validated_parts(n, k, group_size, data, scales, row_sums, err_norms)
    {
        // The full check words length errors part by part: let it speak.
        Int8View::from_parts(n, k, group_size, data, scales, row_sums, err_norms)?;
        return Err(e);
    }
    if let Some(i) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
        return Err(format!(
            "int8: scale {i} is {} (must be finite and >= 0)",
            scales[i]
        ));
    }
    if let Some(i) = err_norms.iter().position(|s| !s.is_finite() || *s < 0.0) {
        return Err(format!("int8: err_norm {i} is {}", err_norms[i]));
    }
    let (kp, np) = (padded_k(k), padded_n(n));
    let gs = if group_size == 0 { kp } else { group_size };
    let groups = group_count(k, group_size);
    const BLK: usize = TILE_N * K_BLOCK;
    let mut sums = vec![0i32; groups * np];
    for (t, tile) in data.chunks_exact(TILE_N * kp).enumerate() {
        let mut acc = [0i32; TILE_N];
        let mut g = 0;
        let flush = |acc: &mut [i32; TILE_N], g: usize, sums: &mut [i32]| {
            for (r, a) in acc.iter_mut().enumerate() {
                sums[g * np + t * TILE_N + r] += *a;
                *a = 0;
            }
        };
        let pad_rows = (t + 1) * TILE_N > n;
        for (kb, blk) in tile.chunks_exact(BLK).enumerate() {
            let bg = kb * K_BLOCK / gs;
            if bg != g {
                flush(&mut acc, g, &mut sums);
                g = bg;
            }
            let mut min = i8::MAX;
            for (r, q) in blk.chunks_exact(K_BLOCK).enumerate() {
                acc[r] += q.iter().map(|&v| v as i32).sum::<i32>();
                min = min.min(q.iter().copied().min().unwrap_or(0));
            }
            let has_pad = pad_rows || (kb + 1) * K_BLOCK > k;
            if min == i8::MIN || has_pad {
                // Rare (padding edges, or an error): the exact per-byte rule.
                for (w, &v) in blk.iter().enumerate() {
                    let (j, kk) = (t * TILE_N + w / K_BLOCK, kb * K_BLOCK + w % K_BLOCK);
                    if v == i8::MIN {
                        return Err(format!(
                            "int8: weight ({j}, {kk}) is -128 (range is [-127, 127])"
                        ));
                    }
                    if (j >= n || kk >= k) && v != 0 {
                        return Err(format!(
                            "int8: padding weight ({j}, {kk}) is {v}, must be 0"
                        ));
                    }
                }
            }
        }
        flush(&mut acc, g, &mut sums);
    }
    if let Some(i) = (0..sums.len()).find(|&i| sums[i] != row_sums[i]) {
        return Err(format!(
            "int8: row_sums[{i}] is {} but the data sums to {}",
            row_sums[i], sums[i]
        ));
    }
    Ok(())
}

impl Int8Data {
    pub fn view(&self) -> t5edge_kernels::int8::Int8View<'_> {
        match self {
            Int8Data::Owned(p) => p.view(),
            Int8Data::Mapped(m) => {
                // `validate` ran at construction on these same immutable bytes.
                let (d, s, r, e) = m.parts().expect("int8 parts validated at load");
                t5edge_kernels::int8::Int8View::from_validated_parts(
                    m.n,
                    m.k,
                    m.group_size,
                    d,
                    s,
                    r,
                    e,
                )
                .expect("int8 parts validated at load")
            }
        }
    }
}

/// Reinterprets aligned little-endian bytes as `T` (f32 or i32); `None` when
/// misaligned or not a whole number of elements.
pub fn cast_slice<T: Plain>(b: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !b.len().is_multiple_of(size)
        || !(b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: alignment and length were checked just above; `T: Plain` is only
    // implemented for f32 and i32, for which every bit pattern is valid; the
    // result borrows `b`, so it cannot outlive the bytes.
    Some(unsafe { std::slice::from_raw_parts(b.as_ptr() as *const T, b.len() / size) })
}

/// Types for which any bytes are a valid value.
pub trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for i32 {}

#[cfg(test)]
mod int8_validation_tests {
    use super::validate_int8;
    use t5edge_kernels::int8::{Int8View, PackedInt8};

    /// The fast scan says exactly what the kernels' scan says, on valid
    /// matrices and on every kind of corruption.
    #[test]
    fn fast_scan_agrees_with_the_kernels() {
        let mut seed = 7u64;
        let mut rnd = move |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        for &(n, k, gs) in &[
            (1, 1, 0),
            (17, 9, 0),
            (33, 70, 8),
            (16, 64, 32),
            (50, 130, 4),
            (5, 3, 0),
        ] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
            let v = p.view();
            let (d, s, r, e) = (
                v.data().to_vec(),
                v.scales().to_vec(),
                v.row_sums().to_vec(),
                v.err_norms().to_vec(),
            );
            let both = |d: &[i8], s: &[f32], r: &[i32], e: &[f32]| {
                let want = Int8View::from_parts(n, k, gs, d, s, r, e).map(|_| ());
                assert_eq!(validate_int8(n, k, gs, d, s, r, e), want, "{n}x{k}/{gs}");
            };
            both(&d, &s, &r, &e);
            for _ in 0..300 {
                let (mut d2, mut s2, mut r2, mut e2) = (d.clone(), s.clone(), r.clone(), e.clone());
                match rnd(6) {
                    0 => {
                        let i = rnd(d2.len());
                        d2[i] = i8::MIN;
                    }
                    1 => {
                        let i = rnd(d2.len());
                        d2[i] = d2[i].wrapping_add(1 + rnd(3) as i8);
                    }
                    2 => {
                        let i = rnd(r2.len());
                        r2[i] += 1;
                    }
                    3 => {
                        let i = rnd(s2.len());
                        s2[i] = if rnd(2) == 0 { f32::NAN } else { -1.0 };
                    }
                    4 => {
                        let i = rnd(e2.len());
                        e2[i] = f32::INFINITY;
                    }
                    _ => {
                        d2.pop();
                    }
                }
                both(&d2, &s2, &r2, &e2);
            }
        }
    }
}
