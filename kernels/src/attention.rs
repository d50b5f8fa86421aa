//! Fused T5 attention: `softmax(q kᵀ + bias + mask) v` per head, with a streaming
//! (online) softmax so no score matrix is ever materialised.
//!
//! T5 does not scale scores by 1/sqrt(d_kv): its initialisation folds that in.
//! The relative-position bias depends only on `j - i`, so callers pass one row per
//! head covering every distance that occurs ([`RelBias`]), O(heads · (tq + tk))
//! memory instead of O(heads · tq · tk).

use crate::dispatch::{active, Isa};

/// Keys scored per block: one max and at most one rescale of the accumulator per
/// block instead of per key, and a score buffer that stays in L1.
const KEY_BLOCK: usize = 64;

/// The vector primitives the blocked kernel needs; each ISA supplies them.
trait VecOps {
    /// # Safety
    /// The CPU must support the implementing ISA; `a.len() == b.len()`.
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `acc += p * v`.
    ///
    /// # Safety
    /// As `dot`; `acc.len() == v.len()`.
    unsafe fn axpy(p: f32, v: &[f32], acc: &mut [f32]);
    /// `p[j] = exp(s[j] - m)` for a block of scores (masked scores are -inf and
    /// their `p` is ignored by the caller).
    ///
    /// # Safety
    /// As `dot`; `p.len() >= s.len()`.
    #[inline(always)]
    unsafe fn exp_shifted(s: &[f32], m: f32, p: &mut [f32]) {
        for (p, &s) in p.iter_mut().zip(s) {
            *p = (s - m).exp();
        }
    }
}

/// Vector `exp` (the Cephes `expf` scheme: `2^n · e^r`, `|r| <= ln2/2`, degree-6
/// polynomial), within ~2 ulp of the true value for finite inputs; inputs below
/// -87.3 give ~1e-38 instead of a subnormal, far below anything attention adds.
#[cfg(target_arch = "x86_64")]
mod vexp {
    use std::arch::x86_64::*;

    // exp(88) < f32::MAX and keeps n <= 127, so the AVX2 exponent-field trick
    // cannot produce an infinity (attention only ever passes s - max <= 0).
    const HI: f32 = 88.0;
    const LO: f32 = -87.336_55;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) fn exp512(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LO)), _mm512_set1_ps(HI));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C1), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C2), r);
        let mut y = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        _mm512_scalef_ps(y, n)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp256(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C1), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C2), r);
        let mut y = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        // 2^n built in the exponent field: n is in [-126, 128] after the clamp.
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }
}

struct ScalarOps;
impl VecOps for ScalarOps {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        crate::f32::scalar::dot(a, b)
    }
    #[inline(always)]
    unsafe fn axpy(p: f32, v: &[f32], acc: &mut [f32]) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += p * x;
        }
    }
}

struct NeonOps;
impl VecOps for NeonOps {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: NEON is baseline on aarch64; elsewhere this is the emulation.
        unsafe { crate::f32::neon::dot(a, b) }
    }
    #[inline(always)]
    unsafe fn axpy(p: f32, v: &[f32], acc: &mut [f32]) {
        // Fused like vfmaq_f32, so the emulation matches what aarch64 computes.
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = p.mul_add(x, *a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2Ops;
#[cfg(target_arch = "x86_64")]
impl VecOps for Avx2Ops {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reached from query_avx2, whose caller checked AVX2 + FMA.
        unsafe { crate::f32::avx2::dot(a, b) }
    }
    #[inline(always)]
    unsafe fn axpy(p: f32, v: &[f32], acc: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = v.len().min(acc.len());
        let mut t = 0;
        // SAFETY: AVX2 + FMA checked by the caller; each access is [t, t + 8)
        // with t + 8 <= n.
        unsafe {
            let pv = _mm256_set1_ps(p);
            while t + 8 <= n {
                let a = _mm256_loadu_ps(acc.as_ptr().add(t));
                let x = _mm256_loadu_ps(v.as_ptr().add(t));
                _mm256_storeu_ps(acc.as_mut_ptr().add(t), _mm256_fmadd_ps(pv, x, a));
                t += 8;
            }
        }
        for t in t..n {
            acc[t] = p.mul_add(v[t], acc[t]);
        }
    }
    #[inline(always)]
    unsafe fn exp_shifted(s: &[f32], m: f32, p: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = s.len().min(p.len());
        let mut t = 0;
        // SAFETY: AVX2 + FMA checked by the caller; full accesses are [t, t + 8)
        // with t + 8 <= n; `vmaskmovps` touches only lanes < n - t.
        unsafe {
            let mv = _mm256_set1_ps(m);
            while t + 8 <= n {
                let x = _mm256_sub_ps(_mm256_loadu_ps(s.as_ptr().add(t)), mv);
                _mm256_storeu_ps(p.as_mut_ptr().add(t), vexp::exp256(x));
                t += 8;
            }
            if t < n {
                let k = crate::f32::avx2::tail_mask(n - t);
                let x = _mm256_sub_ps(_mm256_maskload_ps(s.as_ptr().add(t), k), mv);
                _mm256_maskstore_ps(p.as_mut_ptr().add(t), k, vexp::exp256(x));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512Ops;
#[cfg(target_arch = "x86_64")]
impl VecOps for Avx512Ops {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only reached from query_avx512, whose caller checked AVX-512.
        unsafe { crate::f32::avx512::dot(a, b) }
    }
    #[inline(always)]
    unsafe fn axpy(p: f32, v: &[f32], acc: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = v.len().min(acc.len());
        let mut t = 0;
        // SAFETY: AVX-512F checked by the caller; unmasked accesses are
        // [t, t + 16) with t + 16 <= n, the tail touches only lanes < n - t.
        unsafe {
            let pv = _mm512_set1_ps(p);
            while t + 16 <= n {
                let a = _mm512_loadu_ps(acc.as_ptr().add(t));
                let x = _mm512_loadu_ps(v.as_ptr().add(t));
                _mm512_storeu_ps(acc.as_mut_ptr().add(t), _mm512_fmadd_ps(pv, x, a));
                t += 16;
            }
            if t < n {
                let m = ((1u32 << (n - t)) - 1) as u16;
                let a = _mm512_maskz_loadu_ps(m, acc.as_ptr().add(t));
                let x = _mm512_maskz_loadu_ps(m, v.as_ptr().add(t));
                _mm512_mask_storeu_ps(acc.as_mut_ptr().add(t), m, _mm512_fmadd_ps(pv, x, a));
            }
        }
    }
    #[inline(always)]
    unsafe fn exp_shifted(s: &[f32], m: f32, p: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = s.len().min(p.len());
        let mut t = 0;
        // SAFETY: AVX-512F checked by the caller; full accesses are [t, t + 16)
        // with t + 16 <= n, the masked tail touches only lanes < n - t.
        unsafe {
            let mv = _mm512_set1_ps(m);
            while t + 16 <= n {
                let x = _mm512_sub_ps(_mm512_loadu_ps(s.as_ptr().add(t)), mv);
                _mm512_storeu_ps(p.as_mut_ptr().add(t), vexp::exp512(x));
                t += 16;
            }
            if t < n {
                let k = ((1u32 << (n - t)) - 1) as u16;
                let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, s.as_ptr().add(t)), mv);
                _mm512_mask_storeu_ps(p.as_mut_ptr().add(t), k, vexp::exp512(x));
            }
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn query_avx512(a: &Attention<'_>, h: usize, i: usize, out: &mut [f32]) {
    query::<Avx512Ops>(a, h, i, out)
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn query_avx2(a: &Attention<'_>, h: usize, i: usize, out: &mut [f32]) {
    query::<Avx2Ops>(a, h, i, out)
}

/// One (head, query) output with a key-blocked online softmax: score a block of
/// keys, take its max, rescale the running sum and accumulator at most once,
/// then add the block's weighted values. `out` is the `d_kv` outputs.
#[inline(always)]
fn query<O: VecOps>(a: &Attention<'_>, h: usize, i: usize, out: &mut [f32]) {
    let d = a.d_kv;
    let inner = a.heads * d;
    let qi = &a.q[i * inner + h * d..i * inner + (h + 1) * d];
    let last = match a.causal {
        Some(off) => (i + off + 1).min(a.tk),
        None => a.tk,
    };
    let mut m = f32::NEG_INFINITY;
    let mut l = 0.0f32;
    out.fill(0.0);
    let mut s = [0.0f32; KEY_BLOCK];
    let mut j0 = 0;
    while j0 < last {
        let j1 = (j0 + KEY_BLOCK).min(last);
        let mut bm = f32::NEG_INFINITY;
        for j in j0..j1 {
            let visible = a.key_mask.is_none_or(|mask| mask[j]);
            let sc = if visible {
                let kj = &a.k[j * inner + h * d..j * inner + (h + 1) * d];
                // SAFETY: O's ISA was checked by run_with; equal lengths d.
                let mut sc = unsafe { O::dot(qi, kj) };
                if let Some(b) = &a.bias {
                    sc += b.get(h, i, j);
                }
                sc
            } else {
                f32::NEG_INFINITY
            };
            s[j - j0] = sc;
            bm = bm.max(sc);
        }
        if bm > m {
            // exp(-inf) = 0 clears the (empty) state on the first visible block.
            let c = (m - bm).exp();
            l *= c;
            out.iter_mut().for_each(|o| *o *= c);
            m = bm;
        }
        if m > f32::NEG_INFINITY {
            let mut pb = [0.0f32; KEY_BLOCK];
            // SAFETY: O's ISA was checked by run_with; pb is as long as s.
            unsafe { O::exp_shifted(&s[..j1 - j0], m, &mut pb) };
            for j in j0..j1 {
                if s[j - j0] == f32::NEG_INFINITY {
                    continue;
                }
                let p = pb[j - j0];
                l += p;
                let vj = &a.v[j * inner + h * d..j * inner + (h + 1) * d];
                // SAFETY: as for dot; both slices have length d.
                unsafe { O::axpy(p, vj, out) };
            }
        }
        j0 = j1;
    }
    let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Relative-position bias: `bias(h, i, j) = values[h * span + (j - i + offset)]`.
#[derive(Clone, Copy, Debug)]
pub struct RelBias<'a> {
    pub values: &'a [f32],
    pub span: usize,
    pub offset: isize,
}

impl RelBias<'_> {
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
    pub heads: usize,
    pub d_kv: usize,
    pub tq: usize,
    pub tk: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
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

    /// Runs the key-blocked kernel at a chosen level. Each (query, head) output is
    /// computed by one task in a fixed order, so the bits do not depend on the
    /// number of threads or the pool backend. Panics if the CPU cannot run `isa`
    /// (`Isa::Neon` off aarch64 runs the emulated NEON dot product).
    pub fn run_with(&self, isa: Isa, out: &mut [f32]) {
        self.check(out);
        crate::f32::check_isa(isa);
        let d = self.d_kv;
        if d == 0 || self.tq == 0 || self.heads == 0 {
            return;
        }
        let work = self.tq * self.heads * self.tk * d;
        // One task per BLOCK_Q query rows of one head keeps task overhead low
        // for decoder steps (tq = 1) and prefill alike.
        let body = |idx: usize, o: &mut [f32]| {
            let (i, h) = (idx / self.heads, idx % self.heads);
            match isa {
                // SAFETY: check_isa verified AVX-512 F/BW/VL (+ AVX2/FMA).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx512Vnni => unsafe { query_avx512(self, h, i, o) },
                // SAFETY: check_isa verified AVX2 + FMA.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { query_avx2(self, h, i, o) },
                Isa::Neon => query::<NeonOps>(self, h, i, o),
                _ => query::<ScalarOps>(self, h, i, o),
            }
        };
        let parallel = crate::par::worth_parallel_macs(work);
        crate::par::for_chunks_mut(out, d, parallel, body);
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
    use super::vexp;
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
                    let v = vexp::exp512(_mm512_loadu_ps(chunk.as_ptr()));
                    _mm512_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk.iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
            if crate::Isa::Avx2.supported() {
                // SAFETY: AVX2 + FMA checked just above; 8 floats within bounds.
                unsafe {
                    let v = vexp::exp256(_mm256_loadu_ps(chunk.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk[..8].iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
        }
    }
}
