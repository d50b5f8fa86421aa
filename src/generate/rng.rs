//! The random numbers of sampling: splitmix64, the one generator of the crate
//! (the synthetic checkpoints draw their weights from it too).

/// One step of splitmix64 (Steele, Lea, Flood 2014): advances `state` and
/// returns 64 well-mixed bits.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic RNG for sampling (splitmix64 over a seed and a stream
/// number). Draws depend only on `(seed, stream)` and the number of draws made,
/// never on thread count or batch composition.
#[derive(Clone, Debug)]
pub struct DecodeRng(u64);

impl DecodeRng {
    /// The RNG of stream `stream` of `seed`.
    pub fn new(seed: u64, stream: u64) -> DecodeRng {
        let mut mix = DecodeRng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let a = mix.next_u64();
        let mut mix = DecodeRng(a ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        DecodeRng(mix.next_u64())
    }

    /// The next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws an index with probability proportional to `exp(scores[i])`
    /// (`-inf` entries are never drawn). `None` when every score is `-inf`/NaN.
    pub fn categorical(&mut self, scores: &[f32]) -> Option<usize> {
        let max = scores
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        // Two passes computing the same weights, so a draw allocates nothing.
        let weight = |s: f32| {
            if s.is_nan() {
                0.0
            } else {
                ((s - max) as f64).exp()
            }
        };
        let total: f64 = scores.iter().map(|&s| weight(s)).sum();
        let target = self.uniform() * total;
        let mut acc = 0.0;
        let mut last = None;
        for (i, wi) in scores.iter().map(|&s| weight(s)).enumerate() {
            if wi > 0.0 {
                acc += wi;
                last = Some(i);
                if acc > target {
                    return Some(i);
                }
            }
        }
        last
    }
}
