//! The feed-forward block: `wo(act(wi x))`, or `wo(act(wi_0 x) * wi_1 x)` when gated.

use super::linear::{Linear, Rows};
use super::scratch::sized;
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
        let mut out = vec![0.0; m * self.wo.n];
        self.forward_into(x, m, &mut Vec::new(), &mut Vec::new(), &mut out, Rows::Free);
        out
    }

    /// [`FeedForward::forward`] into `out` (`[m, d_model]`), with `h` and `u`
    /// as reusable room for the `[m, d_ff]` hidden layer.
    pub fn forward_into(
        &self,
        x: &[f32],
        m: usize,
        h: &mut Vec<f32>,
        u: &mut Vec<f32>,
        out: &mut [f32],
        rows: Rows,
    ) {
        let h = sized(h, m * self.wi.n);
        self.wi.forward_rows(x, m, h, rows);
        match &self.wi_up {
            Some(up) => {
                let u = sized(u, m * up.n);
                up.forward_rows(x, m, u, rows);
                ops::gated_inplace(self.act, h, u);
            }
            None => ops::activate_inplace(self.act, h),
        }
        self.wo.forward_rows(h, m, out, rows);
    }
}
