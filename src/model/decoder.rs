//! The decoder stack: causal self-attention over a KV cache, cross-attention to
//! the encoder output (no position bias), and feed-forward blocks.
//!
//! One entry point serves both teacher forcing (many new positions at once) and
//! incremental decoding (one position per sequence per step): new positions are
//! appended to each sequence's cache and attend causally to everything cached.

use super::attention::{AttentionWeights, AttnInput};
use super::ffn::FeedForward;
use super::kv_cache::SeqCache;
use super::Stack;
use crate::weights::F32Data;
use t5edge_kernels::ops;

#[derive(Clone)]
pub struct DecoderBlock {
    pub self_norm: F32Data,
    pub self_attn: AttentionWeights,
    pub cross_norm: F32Data,
    pub cross_attn: AttentionWeights,
    pub ffn_norm: F32Data,
    pub ffn: FeedForward,
}

pub type Decoder = Stack<DecoderBlock>;

impl Decoder {
    /// Computes each layer's cross-attention keys and values from one
    /// sequence's encoder output (`[enc_len, d_model]`): once per sequence, not
    /// once per step.
    pub fn prepare_cross(&self, enc: &[f32], enc_len: usize, cache: &mut SeqCache) {
        cache.cross_k.clear();
        cache.cross_v.clear();
        for b in &self.blocks {
            cache.cross_k.push(b.cross_attn.k.apply(enc, enc_len));
            cache.cross_v.push(b.cross_attn.v.apply(enc, enc_len));
        }
        cache.enc_len = enc_len;
    }

    /// Runs `tqs[s]` new positions of each sequence `s` (embedded, packed in `x`),
    /// extending `caches[s]`; `x` ends as the final-normed hidden states.
    pub fn forward(
        &self,
        x: &mut [f32],
        tqs: &[usize],
        caches: &mut [SeqCache],
        mut states: Option<&mut Vec<Vec<f32>>>,
    ) {
        let d = self.d_model;
        let rows: usize = tqs.iter().sum();
        debug_assert_eq!(x.len(), rows * d);
        debug_assert_eq!(tqs.len(), caches.len());
        let biases: Vec<_> = tqs
            .iter()
            .zip(caches.iter())
            .map(|(&tq, c)| self.bias(false, tq, c.len + tq, c.len))
            .collect();
        let mut normed = vec![0.0f32; x.len()];
        if let Some(s) = states.as_deref_mut() {
            s.push(x.to_vec());
        }
        for (l, block) in self.blocks.iter().enumerate() {
            // Causal self-attention over the cache.
            ops::rms_norm_rows(x, block.self_norm.as_slice(), self.eps, &mut normed);
            let a = &block.self_attn;
            let inner = a.inner();
            let (q, k, v) = (
                a.q.apply(&normed, rows),
                a.k.apply(&normed, rows),
                a.v.apply(&normed, rows),
            );
            let mut ctx = vec![0.0f32; rows * inner];
            let mut start = 0;
            for ((&tq, cache), bias) in tqs.iter().zip(caches.iter_mut()).zip(&biases) {
                let r = start * inner..(start + tq) * inner;
                cache.self_k[l].extend_from_slice(&k[r.clone()]);
                cache.self_v[l].extend_from_slice(&v[r.clone()]);
                let input = AttnInput {
                    q: &q[r.clone()],
                    k: &cache.self_k[l],
                    v: &cache.self_v[l],
                    tq,
                    tk: cache.len + tq,
                    bias: Some(bias.as_rel_bias()),
                    causal: Some(cache.len),
                };
                a.attend(input, &mut ctx[r]);
                start += tq;
            }
            ops::add_inplace(x, &a.o.apply(&ctx, rows));

            // Cross-attention: no position bias; the encoder output has no padding.
            ops::rms_norm_rows(x, block.cross_norm.as_slice(), self.eps, &mut normed);
            let c = &block.cross_attn;
            let q = c.q.apply(&normed, rows);
            let mut start = 0;
            for (&tq, cache) in tqs.iter().zip(caches.iter()) {
                let r = start * inner..(start + tq) * inner;
                let input = AttnInput {
                    q: &q[r.clone()],
                    k: &cache.cross_k[l],
                    v: &cache.cross_v[l],
                    tq,
                    tk: cache.enc_len,
                    bias: None,
                    causal: None,
                };
                c.attend(input, &mut ctx[r]);
                start += tq;
            }
            ops::add_inplace(x, &c.o.apply(&ctx, rows));

            ops::rms_norm_rows(x, block.ffn_norm.as_slice(), self.eps, &mut normed);
            ops::add_inplace(x, &block.ffn.forward(&normed, rows));
            // HF records each block's input; its last entry is the normed output.
            if let Some(s) = states.as_deref_mut() {
                if s.len() < self.blocks.len() {
                    s.push(x.to_vec());
                }
            }
        }
        for (&tq, cache) in tqs.iter().zip(caches.iter_mut()) {
            cache.len += tq;
        }
        let pre = x.to_vec();
        ops::rms_norm_rows(&pre, self.final_norm.as_slice(), self.eps, x);
        if let Some(s) = states {
            s.push(x.to_vec());
        }
    }
}
