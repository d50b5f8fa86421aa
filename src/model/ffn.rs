//! The feed-forward block: `wo(act(wi x))`, or `wo(act(wi_0 x) * wi_1 x)` when gated.

use super::linear::Linear;
use t5edge_kernels::ops::{self, Activation};

#[derive(Clone)]
pub struct FeedForward {
    /// `wi` (ungated) or `wi_0` (gated).
    pub wi: Linear,
    /// `wi_1`, the linear half of a gated block.
    pub wi_up: Option<Linear>,
    pub wo: Linear,
    pub act: Activation,
}

impl FeedForward {
    /// `x` is `[m, d_model]` (already normed); returns `[m, d_model]`.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut h = self.wi.apply(x, m);
        match &self.wi_up {
            Some(up) => {
                let u = up.apply(x, m);
                ops::gated_inplace(self.act, &mut h, &u);
            }
            None => ops::activate_inplace(self.act, &mut h),
        }
        self.wo.apply(&h, m)
    }
}
