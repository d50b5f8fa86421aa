//! Attention layers: projections around the fused kernel.

use super::linear::Linear;
use t5edge_kernels::attention::{Attention, RelBias};

/// The four projections of one attention layer.
#[derive(Clone)]
pub struct AttentionWeights {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
    pub d_kv: usize,
}

/// One sequence's view of an attention call: its queries, its keys/values and
/// what shapes the scores.
pub struct AttnInput<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub tq: usize,
    pub tk: usize,
    pub bias: Option<RelBias<'a>>,
    pub causal: Option<usize>,
}

impl AttentionWeights {
    pub fn inner(&self) -> usize {
        self.heads * self.d_kv
    }

    /// Runs the kernel for one sequence, writing `[tq, inner]` into `out`.
    pub fn attend(&self, a: AttnInput<'_>, out: &mut [f32]) {
        Attention {
            heads: self.heads,
            d_kv: self.d_kv,
            tq: a.tq,
            tk: a.tk,
            q: a.q,
            k: a.k,
            v: a.v,
            bias: a.bias,
            key_mask: None,
            causal: a.causal,
        }
        .run(out);
    }
}
