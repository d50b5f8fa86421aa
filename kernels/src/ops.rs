//! The small row ops: RMSNorm, activations, gated products, residual adds, argmax and top-k.
//!
//! These are a sliver of the work of a step; they are written so the compiler
//! vectorises them, and accumulate in f32 (RMSNorm's sum of squares in f64 would
//! cost little but HF accumulates in f32 too, so we match it).

/// The feed-forward activations T5 checkpoints use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation HF's T5 uses for "gated-gelu".
    GeluNew,
    /// The exact erf form, HF's `gelu` (a config saying plain "gelu" gets this one).
    GeluErf,
    Silu,
}

/// `out = x / sqrt(mean(x²) + eps) * weight` for one row. T5's RMSNorm has no
/// mean subtraction and no bias.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && x.len() == out.len(),
        "rms_norm: length mismatch"
    );
    let inv = 1.0 / (sum_squares(x) / x.len() as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// `Σ x²` in 16 interleaved partial sums added in a fixed order: the compiler
/// keeps them in one vector register, where a single running sum is a
/// `d`-long chain of dependent adds (RMSNorm was 6% of a 128-token prefill).
/// The order depends only on the length, so every ISA and thread count gets
/// the same bits.
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in rest {
        s += v * v;
    }
    s
}

/// RMSNorm over `rows` rows of width `weight.len()`.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(
        d > 0 && x.len() == out.len() && x.len().is_multiple_of(d),
        "rms_norm_rows: shape mismatch"
    );
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(xr, weight, eps, or);
    }
}

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
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf_abs = 1.0 - poly * (-z * z).exp();
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[inline]
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::GeluNew => gelu_new(x),
        Activation::GeluErf => gelu_erf(x),
        Activation::Silu => silu(x),
    }
}

/// Applies `act` in place.
pub fn activate_inplace(act: Activation, x: &mut [f32]) {
    match act {
        Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::GeluNew => x.iter_mut().for_each(|v| *v = gelu_new(*v)),
        Activation::GeluErf => x.iter_mut().for_each(|v| *v = gelu_erf(*v)),
        Activation::Silu => x.iter_mut().for_each(|v| *v = silu(*v)),
    }
}

/// The gated feed-forward product `gate = act(gate) * up`, in place.
pub fn gated_inplace(act: Activation, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gated_inplace: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = activate(act, *g) * u;
    }
}

/// `y += x`.
pub fn add_inplace(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add_inplace: length mismatch");
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// Index of the largest value; the lowest index wins ties (as torch's argmax does)
/// and NaN never wins. Returns `None` for an empty or all-NaN slice.
pub fn argmax(x: &[f32]) -> Option<usize> {
    // Two passes the compiler vectorises: the maximum over 16 independent
    // lanes (a NaN never compares greater, so it is skipped), then the first
    // index holding it. Over a 32k vocabulary this is several times faster
    // than one branchy pass, and gives the same answer as `argmax_scalar`.
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

/// The plain one-pass argmax: the twin `argmax` is tested against.
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
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
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
                assert_eq!(
                    argmax(&x),
                    argmax_scalar(&x),
                    "len {len} trial {trial}: {x:?}"
                );
            }
        }
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), Some(1));
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        let t = top_k(&[0.5, 2.0, 2.0, -1.0, 3.0], 3);
        assert_eq!(t, vec![(4, 3.0), (1, 2.0), (2, 2.0)]);
    }

    #[test]
    fn rms_norm_matches_definition() {
        let x = [3.0f32, 4.0];
        let mut o = [0.0; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert!((o[0] - 3.0 / r).abs() < 1e-6 && (o[1] - 8.0 / r).abs() < 1e-6);
    }
}
