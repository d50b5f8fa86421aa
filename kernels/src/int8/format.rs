//! Validation of packed int8 parts from untrusted bytes (a file): what
//! [`Int8View::from_parts`](super::Int8View::from_parts) and
//! [`Int8View::from_bytes`](super::Int8View::from_bytes) check beyond the
//! lengths. The layout itself is documented in the module above.

use super::{group_count, padded_k, padded_n, K_BLOCK, TILE_N};
use crate::dispatch::Isa;

/// The value checks of parts whose lengths are already right: finite
/// non-negative scales and error norms, no -128, zero padding, and row sums
/// equal to the data's. Scans the data a 64-byte k-block at a time with no
/// per-byte index arithmetic (the exact per-byte rule runs only on blocks
/// that hold padding or a -128), which is most of a quantized model's
/// start-up. The first problem found is reported. `isa` picks the block
/// sums' kernel (the tests run every level against the per-block rules).
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    isa: Isa,
    n: usize,
    k: usize,
    group_size: usize,
    data: &[i8],
    scales: &[f32],
    row_sums: &[i32],
    err_norms: &[f32],
) -> Result<(), String> {
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
    let sums_of = |blocks: &[i8]| -> ([i32; TILE_N], i8) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level is only active (or forced) on a CPU that has
            // it, and every AVX-512 level implies AVX2.
            _ if isa.has_avx2() => unsafe { super::avx2::block_sums(blocks) },
            _ => super::scalar::block_sums(blocks),
        }
    };
    // One tile's checks; the first problem in it, if any.
    let check_tile = |t: usize, tile: &[i8]| -> Result<(), String> {
        let pad_rows = (t + 1) * TILE_N > n;
        for g in 0..groups {
            let (kb0, kb1) = (g * gs / K_BLOCK, ((g * gs + gs).min(kp)) / K_BLOCK);
            let (s, min) = sums_of(&tile[kb0 * BLK..kb1 * BLK]);
            if min == i8::MIN || pad_rows || kb1 * K_BLOCK > k {
                // Rare (padding edges, or an error): the exact per-byte rule
                // on the blocks that may break it, in order.
                for kb in kb0..kb1 {
                    let has_pad = pad_rows || (kb + 1) * K_BLOCK > k;
                    if min != i8::MIN && !has_pad {
                        continue;
                    }
                    for (w, &v) in tile[kb * BLK..(kb + 1) * BLK].iter().enumerate() {
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
            for (r, v) in s.iter().enumerate() {
                let i = g * np + t * TILE_N + r;
                if *v != row_sums[i] {
                    return Err(mismatch(i, row_sums[i], *v));
                }
            }
        }
        Ok(())
    };
    // The caller checked n, k > 0 and data.len() == np * kp.
    let tile_bytes = TILE_N * kp;
    let tiles = data.len() / tile_bytes;
    if data.len() < SCAN_PAR_BYTES {
        for (t, tile) in data.chunks_exact(tile_bytes).enumerate() {
            check_tile(t, tile)?;
        }
        return Ok(());
    }
    // A big matrix (an LM head) is scanned on the pool, a range of tiles a
    // task: the scan was a fifth of a quantized tiny model's cold start on
    // the Intel Xeon. Each task keeps its range's first problem; the
    // earliest range's is the first problem of the matrix.
    let per = (SCAN_TASK_BYTES / tile_bytes).max(1);
    let ranges = tiles.div_ceil(per);
    let found: Vec<std::sync::Mutex<Option<String>>> =
        (0..ranges).map(|_| std::sync::Mutex::new(None)).collect();
    crate::pool::for_each(ranges, true, |r| {
        for t in r * per..((r + 1) * per).min(tiles) {
            if let Err(e) = check_tile(t, &data[t * tile_bytes..(t + 1) * tile_bytes]) {
                *found[r].lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return;
            }
        }
    });
    match found
        .into_iter()
        .find_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// From this many bytes of packed data a matrix is scanned on the pool.
const SCAN_PAR_BYTES: usize = 1 << 20;

/// Bytes of packed data a scan task takes.
const SCAN_TASK_BYTES: usize = 1 << 18;

fn mismatch(i: usize, stored: i32, actual: i32) -> String {
    format!("int8: row_sums[{i}] is {stored} but the data sums to {actual}")
}

/// The message for parts whose bytes cannot be read as their element type.
pub(super) const BAD_BYTES: &str = "int8 parts are out of range or misaligned";

/// Raw little-endian bytes as `(data, scales, row_sums, err_norms)`; `None`
/// when the f32/i32 parts are misaligned or not a whole number of elements.
#[allow(clippy::type_complexity)]
pub(super) fn cast_parts<'a>(
    data: &'a [u8],
    scales: &'a [u8],
    row_sums: &'a [u8],
    err_norms: &'a [u8],
) -> Option<(&'a [i8], &'a [f32], &'a [i32], &'a [f32])> {
    Some((
        super::i8_from_bytes(data),
        cast_slice::<f32>(scales)?,
        cast_slice::<i32>(row_sums)?,
        cast_slice::<f32>(err_norms)?,
    ))
}

/// Reinterprets aligned little-endian bytes as `T` (f32 or i32); `None` when
/// misaligned or not a whole number of elements.
fn cast_slice<T: Plain>(b: &[u8]) -> Option<&[T]> {
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
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for i32 {}

#[cfg(test)]
mod tests {
    use super::super::{Int8View, PackedInt8};
    use super::*;

    /// The straightforward per-block statement of the data rules (a k-block's
    /// -128 before its padding), the oracle [`scan`] is checked against.
    fn scan_by_blocks(
        n: usize,
        k: usize,
        group_size: usize,
        data: &[i8],
        row_sums: &[i32],
    ) -> Result<(), String> {
        let (kp, np, groups) = (padded_k(k), padded_n(n), group_count(k, group_size));
        let gs = if group_size == 0 { kp } else { group_size };
        let mut sums = vec![0i32; groups * np];
        let kbc = kp / K_BLOCK;
        for (b, blk) in data.chunks_exact(TILE_N * K_BLOCK).enumerate() {
            let (t, kb) = (b / kbc, b % kbc);
            if let Some(at) = blk.iter().position(|&v| v == i8::MIN) {
                let (j, kk) = (t * TILE_N + at / K_BLOCK, kb * K_BLOCK + at % K_BLOCK);
                return Err(format!(
                    "int8: weight ({j}, {kk}) is -128 (range is [-127, 127])"
                ));
            }
            let g = kb * K_BLOCK / gs;
            for (r, quad) in blk.chunks_exact(K_BLOCK).enumerate() {
                let j = t * TILE_N + r;
                let real = if j < n {
                    k.saturating_sub(kb * K_BLOCK).min(K_BLOCK)
                } else {
                    0
                };
                if let Some(pos) = quad[real..].iter().position(|&v| v != 0) {
                    let kk = kb * K_BLOCK + real + pos;
                    return Err(format!(
                        "int8: padding weight ({j}, {kk}) is {}, must be 0",
                        quad[real + pos]
                    ));
                }
                sums[g * np + j] += quad.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
        if let Some(i) = (0..sums.len()).find(|&i| sums[i] != row_sums[i]) {
            return Err(format!(
                "int8: row_sums[{i}] is {} but the data sums to {}",
                row_sums[i], sums[i]
            ));
        }
        Ok(())
    }

    /// The fast scan says exactly what the per-block statement says, on valid
    /// matrices and on every kind of (single) corruption.
    #[test]
    fn fast_scan_agrees_with_the_block_rules() {
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
            (48, 256, 64),
            (35, 260, 0),
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
                let got = Int8View::from_parts(n, k, gs, d, s, r, e).map(|_| ());
                let want = Int8View::from_validated_parts(n, k, gs, d, s, r, e).and_then(|_| {
                    if let Some(i) = s.iter().position(|s| !s.is_finite() || *s < 0.0) {
                        return Err(format!(
                            "int8: scale {i} is {} (must be finite and >= 0)",
                            s[i]
                        ));
                    }
                    if let Some(i) = e.iter().position(|s| !s.is_finite() || *s < 0.0) {
                        return Err(format!("int8: err_norm {i} is {}", e[i]));
                    }
                    scan_by_blocks(n, k, gs, d, r)
                });
                assert_eq!(got, want, "{n}x{k}/{gs}");
                // Every level's block sums, not only the active one's.
                for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                    let got = Int8View::from_validated_parts(n, k, gs, d, s, r, e)
                        .and_then(|_| scan(isa, n, k, gs, d, s, r, e));
                    assert_eq!(got, want, "{n}x{k}/{gs} at {isa}");
                }
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

    #[test]
    fn bytes_are_cast_only_when_aligned_and_whole() {
        let f = [1.0f32, 2.0];
        // SAFETY: viewing two f32 as their 8 bytes; u8 has no alignment needs.
        let b = unsafe { std::slice::from_raw_parts(f.as_ptr() as *const u8, 8) };
        assert_eq!(cast_slice::<f32>(b), Some(&f[..]));
        assert!(cast_slice::<f32>(&b[..7]).is_none());
        assert!(cast_slice::<f32>(&b[1..5]).is_none());
    }
}
