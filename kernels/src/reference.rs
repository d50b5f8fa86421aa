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
