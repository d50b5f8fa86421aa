//! Fused T5 attention: `softmax(q kᵀ + bias + mask) v` per head, with a streaming
//! (online) softmax so no score matrix is ever materialised.
//!
//! T5 does not scale scores by 1/sqrt(d_kv): its initialisation folds that in.
//! The relative-position bias depends only on `j - i`, so callers pass one row per
//! head covering every distance that occurs ([`RelBias`]), O(heads · (tq + tk))
//! memory instead of O(heads · tq · tk).
//!
//! Laid out like the linear kernels: the API and dispatch here, the blocked
//! algorithm shared by every level in `blocked.rs`, and one file per ISA
//! (`scalar.rs`, `avx2.rs`, `avx512.rs`, `neon.rs`) supplying its vector kernels.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blocked;
mod neon;
mod scalar;

use crate::aligned::AlignedBuf;
use crate::dispatch::{active, Isa};
use crate::par::ColBlock;
use blocked::{HeadKv, BLOCK_Q};
use std::cell::RefCell;

/// Queries from which a call packs each head's keys and values first
/// ([`blocked::head_rows`]): below it the copy costs about as much as the
/// scores it would speed up.
const PACK_MIN_Q: usize = 2 * BLOCK_Q;

/// Packed keys and values and a task's output rows ([`blocked::head_rows`]),
/// kept per thread so a prefill does not allocate; dropped when a call needed
/// more than [`SCRATCH_KEEP`] floats.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    /// On a cache line ([`crate::aligned`]), so the packed rows (whole lines
    /// at every `d_kv` a multiple of 16) are too.
    static SCRATCH: RefCell<AlignedBuf<f32>> = const { RefCell::new(AlignedBuf::new()) };
}

/// Relative-position bias: `bias(h, i, j) = values[h * span + (j - i + offset)]`.
#[derive(Clone, Copy, Debug)]
pub struct RelBias<'a> {
    /// `[heads, span]`: head `h`'s bias for each relative distance.
    pub values: &'a [f32],
    /// Distances per head: the row length of `values`.
    pub span: usize,
    /// Added to `key - query` to index a row: the distance stored first is
    /// `-offset`.
    pub offset: isize,
}

impl RelBias<'_> {
    /// The bias of head `h` for query `i` and key `j`.
    #[inline]
    pub fn get(&self, h: usize, i: usize, j: usize) -> f32 {
        let idx = j as isize - i as isize + self.offset;
        debug_assert!(idx >= 0 && (idx as usize) < self.span);
        self.values[h * self.span + idx as usize]
    }
}

/// One attention call. `q` is `[tq, heads * d_kv]`, `k` and `v` are
/// `[tk, heads * d_kv]`, `out` is `[tq, heads * d_kv]`, all row-major.
pub struct Attention<'a> {
    /// Attention heads.
    pub heads: usize,
    /// Width of one head's query, key and value.
    pub d_kv: usize,
    /// Queries (rows of `q`).
    pub tq: usize,
    /// Keys and values (rows of `k` and `v` that take part).
    pub tk: usize,
    /// `[tq, heads * d_kv]`, heads side by side in a row.
    pub q: &'a [f32],
    /// `[>= tk, heads * d_kv]`: only the first `tk` rows are read (a KV cache
    /// may hold room for more).
    pub k: &'a [f32],
    /// Laid out as `k`.
    pub v: &'a [f32],
    /// T5's relative-position bias, added to the scores (no `1/sqrt(d)`
    /// scaling: T5 has none).
    pub bias: Option<RelBias<'a>>,
    /// `key_mask[j] == false` hides key `j` from every query (padding).
    pub key_mask: Option<&'a [bool]>,
    /// `Some(off)`: query `i` sees keys `j <= i + off` only (decoder self-attention,
    /// where `off` is the number of cached positions before this call).
    pub causal: Option<usize>,
}

impl Attention<'_> {
    fn check(&self, out: &[f32]) {
        let inner = self.heads * self.d_kv;
        assert_eq!(self.q.len(), self.tq * inner, "attention: q shape");
        assert!(self.k.len() >= self.tk * inner, "attention: k shape");
        assert!(self.v.len() >= self.tk * inner, "attention: v shape");
        assert_eq!(out.len(), self.tq * inner, "attention: out shape");
        if let Some(m) = self.key_mask {
            assert!(m.len() >= self.tk, "attention: key mask shape");
        }
        if let Some(b) = self.bias {
            assert!(
                b.values.len() >= self.heads * b.span,
                "attention: bias shape"
            );
            if self.tq > 0 && self.tk > 0 {
                let lo = -(self.tq as isize - 1) + b.offset;
                let hi = self.tk as isize - 1 + b.offset;
                assert!(
                    lo >= 0 && (hi as usize) < b.span,
                    "attention: bias span too short"
                );
            }
        }
    }

    /// Runs at the active ISA level, writing `out`.
    pub fn run(&self, out: &mut [f32]) {
        self.run_with(active(), out)
    }

    /// Runs the blocked kernel at a chosen level. Each output row of a head
    /// is computed by one task, in its block of `BLOCK_Q` (8) queries, in an
    /// order fixed by the shapes, so the bits do not depend on the number of
    /// threads or the pool backend. A decoder step (`tq == 1`) runs a task per
    /// head, a short prefill one per block of queries (all heads), and from
    /// `PACK_MIN_Q` queries a task per head (and range of queries, when there
    /// are fewer heads than twice the threads) packs that head's keys and
    /// values first. Panics if the CPU cannot run `isa` (`Isa::Neon` off
    /// aarch64 runs the emulated NEON intrinsics).
    pub fn run_with(&self, isa: Isa, out: &mut [f32]) {
        self.check(out);
        crate::f32::check_isa(isa);
        let d = self.d_kv;
        if d == 0 || self.tq == 0 || self.heads == 0 {
            return;
        }
        if self.tq >= PACK_MIN_Q && self.tk > 0 {
            return self.run_packed(isa, out);
        }
        let inner = self.heads * d;
        let one = |h: usize, i0: usize, nq: usize, o: &mut [f32]| {
            let kv = HeadKv::strided(self, h);
            match isa {
                // SAFETY: check_isa verified AVX-512 F/BW/VL (+ AVX2/FMA).
                #[cfg(target_arch = "x86_64")]
                _ if isa.has_avx512() => unsafe { avx512::block(self, h, i0, nq, kv, o, inner) },
                // SAFETY: check_isa verified AVX2 + FMA.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::block(self, h, i0, nq, kv, o, inner) },
                Isa::Neon => blocked::block::<neon::NeonOps>(self, h, i0, nq, kv, o, inner),
                _ => blocked::block::<scalar::ScalarOps>(self, h, i0, nq, kv, o, inner),
            }
        };
        // A decoder step has one query: split it by head instead.
        let chunk = if self.tq == 1 { d } else { BLOCK_Q * inner };
        let body = |b: usize, o: &mut [f32]| {
            if self.tq == 1 {
                one(b, 0, 1, o)
            } else {
                let nq = o.len() / inner;
                for h in 0..self.heads {
                    one(h, b * BLOCK_Q, nq, &mut o[h * d..]);
                }
            }
        };
        let work = self.tq * self.heads * self.tk * d;
        let parallel = crate::par::worth_parallel_macs(work);
        crate::par::for_chunks_mut(out, chunk, parallel, body);
    }

    /// The prefill path: one task per head and range of queries, each packing
    /// its head's keys and values ([`blocked::head_rows`]).
    fn run_packed(&self, isa: Isa, out: &mut [f32]) {
        let d = self.d_kv;
        let parallel = crate::par::worth_parallel_macs(self.tq * self.heads * self.tk * d);
        // Whole heads when there are at least four times as many as threads
        // (each head packed once); otherwise each head's queries in a few
        // ranges: at twice as many, the end of a W3 layer's attention waited
        // on one of four tasks (four ranges a thread measured 1-6% faster
        // there, kernels/BENCH.md). Ranges are whole blocks, so the split
        // never changes the bits.
        let threads = if parallel {
            crate::pool::current_threads()
        } else {
            1
        };
        let ranges = (4 * threads).div_ceil(self.heads);
        let rows = self.tq.div_ceil(ranges).next_multiple_of(BLOCK_Q);
        let inner = self.heads * d;
        let task = |i0: usize, j0: usize, _: usize, o: &mut ColBlock<'_>| {
            let h = j0 / d;
            SCRATCH.with_borrow_mut(|scratch| {
                match isa {
                    // SAFETY: check_isa verified AVX-512 F/BW/VL (+ AVX2/FMA).
                    #[cfg(target_arch = "x86_64")]
                    _ if isa.has_avx512() => unsafe { avx512::head_rows(self, h, i0, scratch, o) },
                    // SAFETY: check_isa verified AVX2 + FMA.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::head_rows(self, h, i0, scratch, o) },
                    Isa::Neon => blocked::head_rows::<neon::NeonOps>(self, h, i0, scratch, o),
                    _ => blocked::head_rows::<scalar::ScalarOps>(self, h, i0, scratch, o),
                }
                if scratch.len() > SCRATCH_KEEP {
                    *scratch = AlignedBuf::new();
                }
            })
        };
        crate::par::for_blocks(out, self.tq, inner, rows, d, parallel, task);
    }

    /// The original per-key online-softmax kernel in plain scalar Rust: the twin
    /// the blocked kernels are checked against (both against the f64 reference).
    pub fn run_scalar(&self, out: &mut [f32]) {
        self.check(out);
        let inner = self.heads * self.d_kv;
        let d = self.d_kv;
        let mut acc = vec![0.0f32; d];
        for h in 0..self.heads {
            for i in 0..self.tq {
                let qi = &self.q[i * inner + h * d..i * inner + (h + 1) * d];
                let last = match self.causal {
                    Some(off) => (i + off + 1).min(self.tk),
                    None => self.tk,
                };
                let mut m = f32::NEG_INFINITY;
                let mut l = 0.0f32;
                acc.iter_mut().for_each(|a| *a = 0.0);
                for j in 0..last {
                    if let Some(mask) = self.key_mask {
                        if !mask[j] {
                            continue;
                        }
                    }
                    let kj = &self.k[j * inner + h * d..j * inner + (h + 1) * d];
                    let mut s: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                    if let Some(b) = &self.bias {
                        s += b.get(h, i, j);
                    }
                    let vj = &self.v[j * inner + h * d..j * inner + (h + 1) * d];
                    if s > m {
                        let c = (m - s).exp();
                        l = l * c + 1.0;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a = *a * c + vv;
                        }
                        m = s;
                    } else {
                        let p = (s - m).exp();
                        l += p;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a += p * vv;
                        }
                    }
                }
                let o = &mut out[i * inner + h * d..i * inner + (h + 1) * d];
                let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                for (ov, &a) in o.iter_mut().zip(&acc) {
                    *ov = a * inv;
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::{avx2, avx512};
    use std::arch::x86_64::*;

    /// The vector exp is within 2 ulp (relative 2.5e-7) of the true value on the
    /// range attention uses (and a little beyond).
    #[test]
    fn vector_exp_is_accurate() {
        let xs: Vec<f32> = (0..20000).map(|i| -87.0 + i as f32 * 0.0044).collect();
        let check = |x: f32, got: f32| {
            let want = (x as f64).exp();
            let rel = ((got as f64 - want) / want).abs();
            assert!(rel <= 2.5e-7, "exp({x}) = {got}, want {want}, rel {rel:e}");
        };
        for chunk in xs.chunks_exact(16) {
            let mut out = [0.0f32; 16];
            if crate::Isa::Avx512.supported() {
                // SAFETY: AVX-512 checked just above; the loads/stores are 16
                // floats within `chunk` and `out`.
                unsafe {
                    let v = avx512::exp512(_mm512_loadu_ps(chunk.as_ptr()));
                    _mm512_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk.iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
            if crate::Isa::Avx2.supported() {
                // SAFETY: AVX2 + FMA checked just above; 8 floats within bounds.
                unsafe {
                    let v = avx2::exp256(_mm256_loadu_ps(chunk.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk[..8].iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
        }
    }
}
