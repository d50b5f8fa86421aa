//! Plain f64 twins of the kernels: the oracle the proptests measure every path against.

/// `y = x · wᵀ` in f64.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
        }
    }
    y
}

/// T5 attention for one head in f64: `softmax(q kᵀ + bias + mask) v` with no scaling.
/// `bias(i, j)` and `allowed(i, j)` describe the position bias and the mask.
#[allow(clippy::too_many_arguments)]
pub fn attention_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tq: usize,
    tk: usize,
    d: usize,
    bias: impl Fn(usize, usize) -> f64,
    allowed: impl Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let mut out = vec![0.0f64; tq * d];
    for i in 0..tq {
        let scores: Vec<Option<f64>> = (0..tk)
            .map(|j| {
                allowed(i, j).then(|| {
                    (0..d)
                        .map(|t| q[i * d + t] as f64 * k[j * d + t] as f64)
                        .sum::<f64>()
                        + bias(i, j)
                })
            })
            .collect();
        let max = scores
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let w: Vec<f64> = scores
            .iter()
            .map(|s| s.map_or(0.0, |s| (s - max).exp()))
            .collect();
        let sum: f64 = w.iter().sum();
        for j in 0..tk {
            for t in 0..d {
                out[i * d + t] += w[j] / sum * v[j * d + t] as f64;
            }
        }
    }
    out
}

/// RMSNorm of each `weight.len()`-wide row in f64: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f64> {
    let d = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        out.extend(
            row.iter()
                .zip(weight)
                .map(|(&v, &w)| w as f64 * v as f64 * inv),
        );
    }
    out
}

/// `gelu_new`, the tanh approximation, in f64.
pub fn gelu_new(x: f32) -> f64 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// Exact GELU `x · Φ(x)` in f64, `Φ` from libm's `erfc` (no cancellation for x < 0).
pub fn gelu_erf(x: f32) -> f64 {
    let x = x as f64;
    x * 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// SiLU `x / (1 + e^-x)` in f64.
pub fn silu(x: f32) -> f64 {
    let x = x as f64;
    x / (1.0 + (-x).exp())
}
