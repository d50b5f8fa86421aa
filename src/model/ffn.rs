//! The feed-forward block: `wo(act(wi x))`, or `wo(act(wi_0 x) * wi_1 x)` when gated.

use super::linear::{Linear, Rows, WeightFormat};
use super::scratch::sized;
use t5edge_kernels::ops::{self, Activation};

/// Rows a task takes when a prefill's int8 block runs by rows: each task
/// quantises its rows, multiplies them by `wi`, activates and quantises its
/// hidden rows and multiplies them by `wo`, all on one core. Split by output
/// columns instead, each product's hidden layer was written half by each core
/// and its activation and quantisation pulled the other half across (the
/// ReLU alone 31 µs a W3 layer, kernels/BENCH.md), with a hand-off to the
/// pool and a wait for the slowest task per step. An int8 encoder pass takes
/// the same rows a task through its whole layer (`Encoder::forward_by_rows`).
pub(super) const BY_ROWS: usize = 32;

thread_local! {
    /// A task's hidden rows (`h`, and `u` when gated), kept across calls.
    static HIDDEN: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

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
        let n = self.wo.n;
        if m >= 2 * BY_ROWS && self.int8() && t5edge_kernels::pool::current_threads() > 1 {
            // A prefill's block by rows, one task for the whole block of
            // BY_ROWS rows (see there).
            let k = self.wi.k;
            t5edge_kernels::for_chunks_mut(out, BY_ROWS * n, true, |c, out| {
                let (i0, r) = (c * BY_ROWS, out.len() / n);
                let (mut h, mut u) = HIDDEN.take();
                self.forward_whole(&x[i0 * k..(i0 + r) * k], r, &mut h, &mut u, out, rows);
                HIDDEN.set((h, u));
            });
            return;
        }
        self.forward_whole(x, m, h, u, out, rows)
    }

    /// Whether every product is int8 (int8 or W8A16 `wo`), whose rows' bits
    /// do not depend on the rows beside them: only then may a prefill run by
    /// rows and keep the bits.
    pub(super) fn int8(&self) -> bool {
        let int8 = |l: &Linear| l.format() == WeightFormat::Int8;
        int8(&self.wi)
            && self.wi_up.as_ref().is_none_or(int8)
            && matches!(self.wo.format(), WeightFormat::Int8 | WeightFormat::Int8A16)
    }

    /// The block for `m` rows as whole products, each split across the pool
    /// as it chooses (inline when called from a task).
    pub(super) fn forward_whole(
        &self,
        x: &[f32],
        m: usize,
        h: &mut Vec<f32>,
        u: &mut Vec<f32>,
        out: &mut [f32],
        rows: Rows,
    ) {
        let h = self.hidden(x, m, h, u, rows);
        self.wo.forward_rows(h, m, out, rows);
    }

    /// `y += self(x)` for `m` rows (a residual add), with the bits of
    /// [`FeedForward::forward_whole`] and `y += out`: an ungated ReLU block
    /// takes the ReLU in `wi`'s epilogue and the add in `wo`'s where the
    /// weights are int8 (`tmp`: room for the output where they are not).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_whole(
        &self,
        x: &[f32],
        m: usize,
        h: &mut Vec<f32>,
        u: &mut Vec<f32>,
        y: &mut [f32],
        rows: Rows,
        tmp: &mut Vec<f32>,
    ) {
        let h = self.hidden(x, m, h, u, rows);
        self.wo.forward_rows_add(h, m, y, rows, tmp);
    }

    /// The activated hidden layer `[m, d_ff]` of `m` rows, in `h`.
    fn hidden<'h>(
        &self,
        x: &[f32],
        m: usize,
        h: &'h mut Vec<f32>,
        u: &mut Vec<f32>,
        rows: Rows,
    ) -> &'h [f32] {
        let h = sized(h, m * self.wi.n);
        match &self.wi_up {
            Some(up) => {
                self.wi.forward_rows(x, m, h, rows);
                let u = sized(u, m * up.n);
                up.forward_rows(x, m, u, rows);
                ops::gated_inplace(self.act, h, u);
            }
            None if self.act == Activation::Relu => self.wi.forward_rows_relu(x, m, h, rows),
            None => {
                self.wi.forward_rows(x, m, h, rows);
                ops::activate_inplace(self.act, h);
            }
        }
        h
    }
}
