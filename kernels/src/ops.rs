//! The small row ops: RMSNorm, activations, gated products, residual adds, argmax and top-k.
//!
//! Each op is written once over pulp's [`Simd`] trait (a generic body,
//! `impl WithSimd`) and instantiated per ISA level at run time:
//!
//! | [`Isa`]                        | pulp backend                                     |
//! |--------------------------------|--------------------------------------------------|
//! | `Scalar`                       | none: the plain-Rust scalar twins below          |
//! | `Avx2`                         | `pulp::x86::V3` (AVX2 + FMA, 8 f32 lanes)         |
//! | `Avx512`, `Avx512Vnni`, `Amx`  | `pulp::x86::V4` (AVX-512, 16 lanes; V3 if the CPU lacks AVX-512 CD/DQ) |
//! | `Neon` on aarch64              | `pulp::aarch64::Neon` (4 lanes)                  |
//! | `Neon` elsewhere (emulated)    | the scalar twins                                 |
//!
//! What each path promises against its scalar twin (checked in `tests/ops.rs`):
//! * element-wise ops (residual add, ReLU, ReLU-gated product, RMSNorm's
//!   scaling pass) are bit-identical (the ungated in-place ReLU runs the
//!   scalar twin at every level: see [`activate_inplace_with`]);
//! * RMSNorm's `Σ x²` keeps the scalar's 16 interleaved partial sums (as one,
//!   two or four registers) and its fixed final order, with separate multiply
//!   and add, so RMSNorm is bit-identical at every level and thread count;
//! * argmax returns the same index (ties to the lowest index, NaN never wins);
//! * GELU (tanh and erf forms) and SiLU use a vectorised `exp` and are within
//!   named error budgets of the f64 reference, as is the scalar twin; every
//!   SIMD level runs the same operation sequence (fused multiply-adds
//!   included), so their results should agree bit for bit (the tests check
//!   it wherever two vector levels run on one CPU), and an element's result
//!   does not depend on its position in the slice (tails go through the same
//!   vector code on a partial load).
//!
//! Everything accumulates in f32 (RMSNorm's sum of squares in f64 would cost
//! little but HF accumulates in f32 too, so we match it). Activation
//! quantisation for the int8 products lives in `int8` with its own hand-written
//! AVX2/AVX-512 paths; top-k is a data-dependent insertion and stays scalar.

use crate::dispatch::{active, Isa};
use pulp::{Simd, WithSimd};

/// The feed-forward activations T5 checkpoints use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)` (T5 v1.0).
    Relu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation HF's T5 uses for "gated-gelu".
    GeluNew,
    /// The exact erf form, HF's `gelu` (a config saying plain "gelu" gets this one).
    GeluErf,
    /// `x * sigmoid(x)`.
    Silu,
}

/// The pulp backend an ISA level runs the small ops on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    #[cfg(target_arch = "x86_64")]
    V4(pulp::x86::V4),
    #[cfg(target_arch = "aarch64")]
    Neon(pulp::aarch64::Neon),
}

impl Backend {
    /// The backend for `isa`; panics if the CPU cannot run `isa` (the
    /// emulated NEON level off aarch64 runs the scalar twins).
    fn of(isa: Isa) -> Backend {
        crate::f32::check_isa(isa);
        match isa {
            Isa::Scalar => Backend::Scalar,
            #[cfg(target_arch = "x86_64")]
            _ if isa.has_avx512() => pulp::x86::V4::try_new()
                .map(Backend::V4)
                .or_else(|| pulp::x86::V3::try_new().map(Backend::V3))
                .unwrap_or(Backend::Scalar),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => pulp::x86::V3::try_new().map_or(Backend::Scalar, Backend::V3),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => pulp::aarch64::Neon::try_new().map_or(Backend::Scalar, Backend::Neon),
            _ => Backend::Scalar,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Backend::V3(_) => "pulp::x86::V3",
            #[cfg(target_arch = "x86_64")]
            Backend::V4(_) => "pulp::x86::V4",
            #[cfg(target_arch = "aarch64")]
            Backend::Neon(_) => "pulp::aarch64::Neon",
        }
    }

    /// Runs `op` on this backend's SIMD type, or hands it to `scalar`.
    #[inline(always)]
    fn run<Op: WithSimd>(self, op: Op, scalar: impl FnOnce(Op) -> Op::Output) -> Op::Output {
        match self {
            Backend::Scalar => scalar(op),
            #[cfg(target_arch = "x86_64")]
            Backend::V3(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "x86_64")]
            Backend::V4(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "aarch64")]
            Backend::Neon(s) => Simd::vectorize(s, op),
        }
    }
}

/// Which implementation the small ops run at `isa` (`"scalar"`,
/// `"pulp::x86::V3"`, `"pulp::x86::V4"` or `"pulp::aarch64::Neon"`), for
/// benches and `inspect`. Panics if the CPU cannot run `isa`.
pub fn simd_backend(isa: Isa) -> &'static str {
    Backend::of(isa).name()
}

// ---------------------------------------------------------------- RMSNorm

/// `out = x / sqrt(mean(x²) + eps) * weight` for one row. T5's RMSNorm has no
/// mean subtraction and no bias.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(active(), x, weight, eps, out)
}

/// [`rms_norm`] at a chosen level: the same bits at every level.
pub fn rms_norm_with(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    rms_norm_rows_with(isa, x, weight, eps, out)
}

/// RMSNorm over `rows` rows of width `weight.len()`.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_rows_with(active(), x, weight, eps, out)
}

/// [`rms_norm_rows`] at a chosen level: the same bits at every level.
pub fn rms_norm_rows_with(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(
        d > 0 && x.len() == out.len() && x.len().is_multiple_of(d),
        "rms_norm_rows: shape mismatch"
    );
    // Whole rows a task: each row's bits are the same wherever it runs.
    let rows = (SPLIT_FLOATS / d).max(1);
    split_rows(out, rows * d, x.len() >= PAR_MIN_FLOATS, |a, out| {
        let op = RmsRows {
            x: &x[a..a + out.len()],
            weight,
            eps,
            out,
        };
        Backend::of(isa).run(op, |o| rms_rows_scalar(o.x, o.weight, o.eps, o.out))
    })
}

/// From this many floats a row op runs on the pool (a prefill's: 128
/// tokens of a 256-wide model are 32K), below it on the calling thread (a
/// decode step's), where a hand-off would cost more than it saves. On one
/// thread a prefill's norms, adds and activations left the other idle.
const PAR_MIN_FLOATS: usize = 1 << 14;

/// Floats a task takes when a row op is split.
const SPLIT_FLOATS: usize = 1 << 13;

/// `f(start, part)` over consecutive `len`-float parts of `out` (`start`:
/// the part's offset), on the pool when `parallel`. Element-wise and
/// row-wise ops only, whose bits do not depend on the split.
fn split_rows<F>(out: &mut [f32], len: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if !parallel || out.len() <= len {
        return f(0, out);
    }
    crate::par::for_chunks_mut(out, len, true, |c, part| f(c * len, part))
}

/// `1 / sqrt(Σx² / d + eps)`, shared by every level.
#[inline(always)]
fn inv_rms(sum_sq: f32, d: usize, eps: f32) -> f32 {
    1.0 / (sum_sq / d as f32 + eps).sqrt()
}

/// The scalar twin of [`rms_norm_rows`].
fn rms_rows_scalar(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let inv = inv_rms(sum_squares(xr), d, eps);
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * inv);
        }
    }
}

/// Partial sums of [`sum_squares`]: a multiple of every pulp f32 width (4, 8, 16).
const SUM_LANES: usize = 16;

/// `Σ x²` in 16 interleaved partial sums added in a fixed order: a single
/// running sum is a `d`-long chain of dependent adds (RMSNorm was 6% of a
/// 128-token prefill). The order depends only on the length, so every ISA
/// (the SIMD twin keeps the same partial sums) and thread count gets the same
/// bits.
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; SUM_LANES];
    let chunks = x.chunks_exact(SUM_LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    finish_sum_squares(&acc, rest)
}

/// The fixed-order end of [`sum_squares`]: the 16 partial sums in lane
/// order, then the tail.
#[inline(always)]
fn finish_sum_squares(acc: &[f32; SUM_LANES], rest: &[f32]) -> f32 {
    let mut s: f32 = acc.iter().sum();
    for &v in rest {
        s += v * v;
    }
    s
}

/// [`sum_squares`] with the 16 partial sums held in `16 / lanes` registers.
#[inline(always)]
fn sum_squares_simd<S: Simd>(simd: S, x: &[f32]) -> f32 {
    let regs = SUM_LANES / S::F32_LANES;
    assert!(regs * S::F32_LANES == SUM_LANES && regs <= 4);
    let n = x.len() / SUM_LANES * SUM_LANES;
    let (body, rest) = x.split_at(n);
    let (vecs, _) = S::as_simd_f32s(body);
    let mut acc = [simd.splat_f32s(0.0); 4];
    for c in vecs.chunks_exact(regs) {
        for (a, &v) in acc.iter_mut().zip(c) {
            // Multiply, then add: a fused multiply-add would round differently
            // from the scalar twin.
            *a = simd.add_f32s(*a, simd.mul_f32s(v, v));
        }
    }
    let mut lanes = [0.0f32; SUM_LANES];
    let (lv, _) = S::as_mut_simd_f32s(&mut lanes);
    lv.copy_from_slice(&acc[..regs]);
    finish_sum_squares(&lanes, rest)
}

struct RmsRows<'a> {
    x: &'a [f32],
    weight: &'a [f32],
    eps: f32,
    out: &'a mut [f32],
}

impl WithSimd for RmsRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let d = self.weight.len();
        let (wv, wt) = S::as_simd_f32s(self.weight);
        for (xr, or) in self.x.chunks_exact(d).zip(self.out.chunks_exact_mut(d)) {
            let inv = inv_rms(sum_squares_simd(simd, xr), d, self.eps);
            let iv = simd.splat_f32s(inv);
            let (xv, xt) = S::as_simd_f32s(xr);
            let (ov, ot) = S::as_mut_simd_f32s(or);
            for ((o, &v), &w) in ov.iter_mut().zip(xv).zip(wv) {
                *o = simd.mul_f32s(w, simd.mul_f32s(v, iv));
            }
            for ((o, &v), &w) in ot.iter_mut().zip(xt).zip(wt) {
                *o = w * (v * inv);
            }
        }
    }
}

// ------------------------------------------------------------ activations

/// `gelu_new` of one value, the scalar twin of the vector bodies.
#[inline]
pub fn gelu_new(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

/// Exact GELU, `x · Φ(x)`, with erf evaluated in f64 (Abramowitz-Stegun 7.1.26,
/// |error| < 1.5e-7, below f32 resolution of the result).
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    let z = x as f64 / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + AS_P * z.abs());
    let poly = t * (AS_A[0] + t * (AS_A[1] + t * (AS_A[2] + t * (AS_A[3] + t * AS_A[4]))));
    let erf_abs = 1.0 - poly * (-z * z).exp();
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

/// Abramowitz-Stegun 7.1.26: `erf(z) ≈ 1 - t·poly(t)·e^(-z²)`, `t = 1 / (1 + p z)`.
const AS_P: f64 = 0.327_591_1;
const AS_A: [f64; 5] = [
    0.254_829_592,
    -0.284_496_736,
    1.421_413_741,
    -1.453_152_027,
    1.061_405_429,
];

/// SiLU of one value, the scalar twin of the vector bodies.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// ReLU; NaN and both zeros give +0.0 (the vector paths' compare-and-select).
#[inline]
pub fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// `act` of one value.
#[inline]
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Relu => relu(x),
        Activation::GeluNew => gelu_new(x),
        Activation::GeluErf => gelu_erf(x),
        Activation::Silu => silu(x),
    }
}

/// Applies `act` in place.
pub fn activate_inplace(act: Activation, x: &mut [f32]) {
    activate_inplace_with(active(), act, x)
}

/// [`activate_inplace`] at a chosen level (see the module docs for what each
/// level promises).
pub fn activate_inplace_with(isa: Isa, act: Activation, x: &mut [f32]) {
    if act == Activation::Relu {
        // The scalar twin at every level: in place, LLVM turns the vector
        // compare-and-select into a `vmaskmovps` store of the zeros, which
        // is microcoded on AMD: 107-138 µs against the twin's 17-23 µs over
        // 128 x 1024 values on AVX2 (kernels/BENCH.md). Memory-bound either way.
        return split_rows(x, SPLIT_FLOATS, x.len() >= PAR_MIN_FLOATS, |_, x| {
            x.iter_mut().for_each(|v| *v = relu(*v))
        });
    }
    split_rows(x, SPLIT_FLOATS, x.len() >= PAR_MIN_FLOATS, |_, x| {
        let op = Act { act, x, up: None };
        Backend::of(isa).run(op, |o| o.x.iter_mut().for_each(|v| *v = activate(act, *v)))
    })
}

/// The gated feed-forward product `gate = act(gate) * up`, in place.
pub fn gated_inplace(act: Activation, gate: &mut [f32], up: &[f32]) {
    gated_inplace_with(active(), act, gate, up)
}

/// [`gated_inplace`] at a chosen level.
pub fn gated_inplace_with(isa: Isa, act: Activation, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gated_inplace: length mismatch");
    let parallel = gate.len() >= PAR_MIN_FLOATS;
    split_rows(gate, SPLIT_FLOATS, parallel, |a, gate| {
        let up = &up[a..a + gate.len()];
        let op = Act {
            act,
            x: gate,
            up: Some(up),
        };
        Backend::of(isa).run(op, |o| {
            for (g, &u) in o.x.iter_mut().zip(up) {
                *g = activate(act, *g) * u;
            }
        })
    })
}

/// `x = act(x)`, or `x = act(x) * up` with `up`.
struct Act<'a> {
    act: Activation,
    x: &'a mut [f32],
    up: Option<&'a [f32]>,
}

impl WithSimd for Act<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (x, up) = (self.x, self.up);
        match self.act {
            Activation::Relu => map_act::<S, ReluV>(simd, x, up),
            Activation::GeluNew => map_act::<S, GeluNewV>(simd, x, up),
            Activation::GeluErf => map_act::<S, GeluErfV>(simd, x, up),
            Activation::Silu => map_act::<S, SiluV>(simd, x, up),
        }
    }
}

/// One activation over a vector. A trait of zero-sized types rather than a
/// closure: a closure is a function of its own, compiled without the
/// caller's target features, so every pulp operation in it would be an
/// out-of-line call (that made the vector GELU slower than libm's tanh).
trait VecAct {
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s;
}

struct ReluV;
struct GeluNewV;
struct GeluErfV;
struct SiluV;

impl VecAct for ReluV {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        relu_v(simd, x)
    }
}

impl VecAct for GeluNewV {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        gelu_new_v(simd, x)
    }
}

impl VecAct for GeluErfV {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        gelu_erf_v(simd, x)
    }
}

impl VecAct for SiluV {
    #[inline(always)]
    fn apply<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        silu_v(simd, x)
    }
}

/// `x = A(x)` or `x = A(x) * up`; the tail goes through `A` on a partial
/// load, so each value's result is independent of where it sits.
#[inline(always)]
fn map_act<S: Simd, A: VecAct>(simd: S, x: &mut [f32], up: Option<&[f32]>) {
    let (xv, xt) = S::as_mut_simd_f32s(x);
    match up {
        None => {
            for v in xv.iter_mut() {
                *v = A::apply(simd, *v);
            }
            if !xt.is_empty() {
                let v = A::apply(simd, simd.partial_load_f32s(xt));
                simd.partial_store_f32s(xt, v);
            }
        }
        Some(up) => {
            let (uv, ut) = S::as_simd_f32s(up);
            for (g, &u) in xv.iter_mut().zip(uv) {
                *g = simd.mul_f32s(A::apply(simd, *g), u);
            }
            if !xt.is_empty() {
                let g = A::apply(simd, simd.partial_load_f32s(xt));
                let v = simd.mul_f32s(g, simd.partial_load_f32s(ut));
                simd.partial_store_f32s(xt, v);
            }
        }
    }
}

/// [`relu`]: `x > 0 ? x : +0`, exactly.
#[inline(always)]
fn relu_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    simd.select_f32s(simd.greater_than_f32s(x, zero), x, zero)
}

/// `e^x` for every lane (Cephes `expf`): `x = n ln2 + r`, `|r| <= ln2/2`,
/// `e^r` by a degree-7 polynomial, `2^n` built in the exponent bits (about
/// 2 ulp on `[-87, 88.3]`, Cephes' figure; the activations' budgets are what
/// the tests check); `+inf` from ~88.4 on (`n = 128` is the infinity
/// exponent; a little early, where e^x still fits, which the activations
/// cannot tell: they divide by `1 + e^x`) and exactly 0 below -87, so the
/// activations' far tails give exact zeros as the scalar twins do, never the
/// tiny values a clamped exponential would leave there (multiplied by the
/// gated `up` half, those are subnormals, and the next product slows to a
/// crawl on them). NaN lanes give an unspecified value: the callers divide
/// or multiply by `x` itself, which propagates the NaN.
#[inline(always)]
fn exp_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so n * LN2_HI is exact for |n| < 2^15.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5, // Cephes writes 5.0000001201e-1, which rounds to 0.5 in f32
    ];
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LO: f32 = -87.0;
    let underflow = simd.less_than_f32s(x, simd.splat_f32s(LO));
    // n = round(x log2 e) in [-126, 128] after the clamp.
    let x = simd.min_f32s(simd.max_f32s(x, simd.splat_f32s(LO)), simd.splat_f32s(89.0));
    let t = simd.mul_add_f32s(x, simd.splat_f32s(LOG2E), simd.splat_f32s(MAGIC));
    let n = simd.sub_f32s(t, simd.splat_f32s(MAGIC));
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_HI), x);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_LO), r);
    let mut p = simd.splat_f32s(P[0]);
    for &c in &P[1..] {
        p = simd.mul_add_f32s(p, r, simd.splat_f32s(c));
    }
    let p = simd.add_f32s(
        simd.mul_add_f32s(p, simd.mul_f32s(r, r), r),
        simd.splat_f32s(1.0),
    );
    // bits(t) - bits(MAGIC) = n (two's complement); n + 127 in [1, 255], 255
    // being the infinity exponent.
    let n_bits = simd.sub_u32s(
        simd.transmute_u32s_f32s(t),
        simd.splat_u32s(MAGIC.to_bits()),
    );
    let pow2 = simd.wrapping_dyn_shl_u32s(
        simd.add_u32s(n_bits, simd.splat_u32s(127)),
        simd.splat_u32s(23),
    );
    let e = simd.mul_f32s(p, simd.transmute_f32s_u32s(pow2));
    simd.select_f32s(underflow, simd.splat_f32s(0.0), e)
}

/// [`gelu_new`] as `x / (1 + e^(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x³)`:
/// `(1 + tanh u) / 2` is the logistic function of `2u`.
#[inline(always)]
fn gelu_new_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // -2 sqrt(2/pi)
    const M2C: f32 = -1.595_769;
    let x2 = simd.mul_f32s(x, x);
    let inner = simd.mul_add_f32s(simd.mul_f32s(x2, simd.splat_f32s(0.044715)), x, x);
    let e = exp_v(simd, simd.mul_f32s(inner, simd.splat_f32s(M2C)));
    simd.div_f32s(x, simd.add_f32s(simd.splat_f32s(1.0), e))
}

/// [`silu`]: `x / (1 + e^-x)`.
#[inline(always)]
fn silu_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let e = exp_v(simd, simd.neg_f32s(x));
    simd.div_f32s(x, simd.add_f32s(simd.splat_f32s(1.0), e))
}

/// [`gelu_erf`] in f32 lanes: the same Abramowitz-Stegun erf, with the tail
/// probability `q = t·poly(t)·e^(-z²)/2` used directly for `x < 0` (where
/// `Φ(x) = q`) instead of `(1 + erf) / 2`, which would cancel.
#[inline(always)]
fn gelu_erf_v<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let z = simd.mul_f32s(x, simd.splat_f32s(std::f64::consts::FRAC_1_SQRT_2 as f32));
    let a = simd.abs_f32s(z);
    let t = simd.div_f32s(
        simd.splat_f32s(1.0),
        simd.mul_add_f32s(simd.splat_f32s(AS_P as f32), a, simd.splat_f32s(1.0)),
    );
    let mut p = simd.splat_f32s(AS_A[4] as f32);
    for &c in AS_A[..4].iter().rev() {
        p = simd.mul_add_f32s(p, t, simd.splat_f32s(c as f32));
    }
    let p = simd.mul_f32s(p, t);
    let e = exp_v(simd, simd.neg_f32s(simd.mul_f32s(z, z)));
    let q = simd.mul_f32s(simd.mul_f32s(p, e), simd.splat_f32s(0.5));
    let neg = simd.less_than_f32s(z, simd.splat_f32s(0.0));
    let phi = simd.select_f32s(neg, q, simd.sub_f32s(simd.splat_f32s(1.0), q));
    simd.mul_f32s(x, phi)
}

// ---------------------------------------------------------- residual adds

/// `y += x`.
pub fn add_inplace(y: &mut [f32], x: &[f32]) {
    add_inplace_with(active(), y, x)
}

/// [`add_inplace`] at a chosen level: the same bits at every level.
pub fn add_inplace_with(isa: Isa, y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add_inplace: length mismatch");
    split_rows(y, SPLIT_FLOATS, x.len() >= PAR_MIN_FLOATS, |a, y| {
        let x = &x[a..a + y.len()];
        Backend::of(isa).run(Add { y, x }, |o| add_scalar(o.y, o.x))
    })
}

fn add_scalar(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

struct Add<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
}

impl WithSimd for Add<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (yv, yt) = S::as_mut_simd_f32s(self.y);
        let (xv, xt) = S::as_simd_f32s(self.x);
        for (a, &b) in yv.iter_mut().zip(xv) {
            *a = simd.add_f32s(*a, b);
        }
        add_scalar(yt, xt);
    }
}

// ----------------------------------------------------------------- argmax

/// Index of the largest value; the lowest index wins ties (as torch's argmax does)
/// and NaN never wins. Returns `None` for an empty or all-NaN slice.
pub fn argmax(x: &[f32]) -> Option<usize> {
    argmax_with(active(), x)
}

/// [`argmax`] at a chosen level: the same index as [`argmax_scalar`] at every level.
pub fn argmax_with(isa: Isa, x: &[f32]) -> Option<usize> {
    if x.len() > (u32::MAX / 2) as usize {
        // The vector paths keep u32 lane indices (and u32::MAX as "none").
        return argmax_scalar(x);
    }
    Backend::of(isa).run(Argmax { x }, |o| argmax_two_pass(o.x))
}

/// The scalar level's argmax: two passes the compiler vectorises (the maximum
/// over 16 independent lanes, where a NaN never compares greater, then the
/// first index holding it). Over a 32k vocabulary this is several times faster
/// than one branchy pass, and gives the same answer as `argmax_scalar`.
fn argmax_two_pass(x: &[f32]) -> Option<usize> {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &v in tail {
        max = if v > max { v } else { max };
    }
    if max == f32::NEG_INFINITY {
        // All NaN or -inf (or empty): the lowest non-NaN index, if any.
        return x.iter().position(|v| !v.is_nan());
    }
    x.iter().position(|&v| v == max)
}

/// The plain one-pass argmax: the twin every other argmax is tested against.
pub fn argmax_scalar(x: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

struct Argmax<'a> {
    x: &'a [f32],
}

/// Independent (max, index) accumulators of the vector argmax: enough to hide
/// the compare-and-select latency.
const ARGMAX_ACCS: usize = 4;

impl WithSimd for Argmax<'_> {
    type Output = Option<usize>;

    /// One pass: each lane keeps the largest value it has seen (strictly
    /// greater replaces, so the first occurrence stays and NaN never enters)
    /// and its index; then the lanes and the tail are merged, ties to the
    /// lowest index.
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Option<usize> {
        let x = self.x;
        let lanes = S::F32_LANES;
        assert!(lanes <= 16, "pulp vectors hold at most 16 f32");
        let (xv, xt) = S::as_simd_f32s(x);
        let mut iota_buf = [0u32; 16];
        for (i, v) in iota_buf.iter_mut().enumerate() {
            *v = i as u32;
        }
        let (iota, _) = S::as_simd_u32s(&iota_buf);
        let iota = iota[0];
        let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
        let none = simd.splat_u32s(u32::MAX);
        let mut best = [neg_inf; ARGMAX_ACCS];
        let mut best_i = [none; ARGMAX_ACCS];
        let mut idx = [iota; ARGMAX_ACCS];
        for (j, ix) in idx.iter_mut().enumerate() {
            *ix = simd.add_u32s(iota, simd.splat_u32s((j * lanes) as u32));
        }
        let step = simd.splat_u32s((ARGMAX_ACCS * lanes) as u32);
        let blocks = xv.chunks_exact(ARGMAX_ACCS);
        let rest = blocks.remainder();
        for c in blocks {
            for j in 0..ARGMAX_ACCS {
                let gt = simd.greater_than_f32s(c[j], best[j]);
                best[j] = simd.select_f32s(gt, c[j], best[j]);
                best_i[j] = simd.select_u32s(gt, idx[j], best_i[j]);
                idx[j] = simd.add_u32s(idx[j], step);
            }
        }
        // The last < ARGMAX_ACCS vectors, in order; idx[j] already points at
        // rest[j]'s indices.
        for (j, &v) in rest.iter().enumerate() {
            let gt = simd.greater_than_f32s(v, best[j]);
            best[j] = simd.select_f32s(gt, v, best[j]);
            best_i[j] = simd.select_u32s(gt, idx[j], best_i[j]);
        }
        let mut vals = [[f32::NEG_INFINITY; 16]; ARGMAX_ACCS];
        let mut inds = [[u32::MAX; 16]; ARGMAX_ACCS];
        let mut found: Option<(usize, f32)> = None;
        for j in 0..ARGMAX_ACCS {
            S::as_mut_simd_f32s(&mut vals[j]).0[0] = best[j];
            S::as_mut_simd_u32s(&mut inds[j]).0[0] = best_i[j];
            for (&v, &i) in vals[j][..lanes].iter().zip(&inds[j][..lanes]) {
                if i == u32::MAX {
                    continue;
                }
                let i = i as usize;
                match found {
                    Some((bi, bv)) if v < bv || (v == bv && i > bi) => {}
                    _ => found = Some((i, v)),
                }
            }
        }
        // Tail values come after every lane's: they win only if strictly greater.
        let base = x.len() - xt.len();
        for (t, &v) in xt.iter().enumerate() {
            if found.is_none_or(|(_, bv)| v > bv) && v > f32::NEG_INFINITY {
                found = Some((base + t, v));
            }
        }
        match found {
            Some((i, _)) => Some(i),
            // All NaN or -inf (or empty): the lowest non-NaN index, if any.
            None => x.iter().position(|v| !v.is_nan()),
        }
    }
}

// ------------------------------------------------------------------ top-k

/// The `k` largest values with their indices, largest first; ties by lower index.
/// NaN values are skipped.
pub fn top_k(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(x.len());
    if k == 0 {
        return Vec::new();
    }
    // A small sorted buffer beats a heap for the k <= 64 the engine asks for.
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() || (top.len() == k && v <= top[k - 1].1) {
            continue;
        }
        let pos = top.partition_point(|&(_, t)| t >= v);
        top.insert(pos, (i, v));
        top.truncate(k);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_on_ties_and_skips_nan() {
        for isa in crate::dispatch::available() {
            assert_eq!(argmax_with(isa, &[1.0, 3.0, 3.0, f32::NAN]), Some(1));
            assert_eq!(argmax_with(isa, &[f32::NAN, -1.0]), Some(1));
            assert_eq!(argmax_with(isa, &[]), None);
        }
    }

    #[test]
    fn argmax_equals_its_scalar_twin() {
        let mut r = 0x1234_5678_u64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for len in [0usize, 1, 3, 15, 16, 17, 33, 100, 1000] {
            for trial in 0..50 {
                let x: Vec<f32> = (0..len)
                    .map(|_| match next() % 10 {
                        0 if trial % 3 == 0 => f32::NAN,
                        1 if trial % 4 == 0 => f32::NEG_INFINITY,
                        2 => 3.0, // plants ties
                        _ => (next() % 1000) as f32 / 500.0 - 1.0,
                    })
                    .collect();
                for isa in crate::dispatch::available() {
                    assert_eq!(
                        argmax_with(isa, &x),
                        argmax_scalar(&x),
                        "{isa} len {len} trial {trial}: {x:?}"
                    );
                }
            }
        }
        for isa in crate::dispatch::available() {
            assert_eq!(
                argmax_with(isa, &[f32::NEG_INFINITY, f32::NEG_INFINITY]),
                Some(0)
            );
            assert_eq!(argmax_with(isa, &[f32::NAN, f32::NEG_INFINITY]), Some(1));
        }
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        let t = top_k(&[0.5, 2.0, 2.0, -1.0, 3.0], 3);
        assert_eq!(t, vec![(4, 3.0), (1, 2.0), (2, 2.0)]);
    }

    #[test]
    fn rms_norm_matches_definition() {
        let x = [3.0f32, 4.0];
        let r = (12.5f32).sqrt();
        for isa in crate::dispatch::available() {
            let mut o = [0.0; 2];
            rms_norm_with(isa, &x, &[1.0, 2.0], 0.0, &mut o);
            assert!((o[0] - 3.0 / r).abs() < 1e-6 && (o[1] - 8.0 / r).abs() < 1e-6);
        }
    }

    #[test]
    fn avx_levels_run_pulp() {
        assert_eq!(simd_backend(Isa::Scalar), "scalar");
        if Isa::Avx2.supported() {
            assert_eq!(simd_backend(Isa::Avx2), "pulp::x86::V3");
        }
        #[cfg(target_arch = "x86_64")]
        if pulp::x86::V4::try_new().is_some() {
            for isa in [Isa::Avx512, Isa::Avx512Vnni, Isa::Amx] {
                if isa.supported() {
                    assert_eq!(simd_backend(isa), "pulp::x86::V4");
                }
            }
        }
        #[cfg(not(target_arch = "aarch64"))]
        assert_eq!(simd_backend(Isa::Neon), "scalar");
    }
}
