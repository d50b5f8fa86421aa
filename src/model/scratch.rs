//! Buffers a decoder call works in, kept across steps (the encoder keeps one
//! per thread too).
//!
//! A decode step of a small model takes a fraction of a millisecond; a dozen
//! fresh `Vec`s per layer per step are measurable at that scale and fault in
//! new pages whenever the allocator returns memory to the OS. The decode loop
//! owns one `DecodeScratch` and passes it to every step: after the first step
//! has sized the buffers, the model code allocates nothing.

use super::position_bias::PositionBias;

/// Reusable working memory for [`super::T5Model::decode_step`].
#[derive(Default)]
pub struct DecodeScratch {
    /// `[rows, d_model]`: the embedded tokens, then the residual stream, then
    /// the final hidden states.
    pub(crate) x: Vec<f32>,
    pub(crate) normed: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) ctx: Vec<f32>,
    /// `[rows, d_model]`: a block's output before the residual add.
    pub(crate) proj: Vec<f32>,
    /// `[rows, d_ff]`: the FFN's hidden layer and, when gated, its linear half.
    pub(crate) ffn_h: Vec<f32>,
    pub(crate) ffn_u: Vec<f32>,
    /// One self-attention bias per sequence of the step.
    pub(crate) biases: Vec<PositionBias>,
    pub(crate) tqs: Vec<usize>,
    /// `[rows, vocab]` logits of the last [`super::T5Model::logits_into`].
    pub(crate) logits: Vec<f32>,
    /// `[rows, d_model]`: the hidden states scaled for a tied head.
    pub(crate) head_in: Vec<f32>,
}

impl DecodeScratch {
    pub fn new() -> DecodeScratch {
        DecodeScratch::default()
    }

    /// Bytes the float buffers hold on to.
    pub(crate) fn capacity_bytes(&self) -> usize {
        let v = [
            &self.x,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.ctx,
            &self.proj,
            &self.ffn_h,
            &self.ffn_u,
            &self.logits,
            &self.head_in,
        ];
        v.iter().map(|b| b.capacity() * 4).sum()
    }
}

/// `v` resized to exactly `n` values (contents unspecified): allocates only
/// when `n` exceeds every earlier size.
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}
