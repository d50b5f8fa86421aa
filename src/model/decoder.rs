//! The decoder stack: causal self-attention over a KV cache, cross-attention to
//! the encoder output (no position bias), and feed-forward blocks.
//!
//! One entry point serves both teacher forcing (many new positions at once) and
//! incremental decoding (one position per sequence per step): new positions are
//! appended to each sequence's cache and attend causally to everything cached.

use super::attention::{AttentionWeights, AttnInput};
use super::ffn::FeedForward;
use super::kv_cache::SeqCache;
use super::linear::{Linear, Rows};
use super::scratch::{sized, DecodeScratch};
use super::Stack;
use crate::weights::F32Data;
use t5edge_kernels::attention::RelBias;
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
        for b in cache.cross_k.drain(..).chain(cache.cross_v.drain(..)) {
            super::scratch::give_back(b);
        }
        // `sized` takes the buffer from this thread's spares.
        let product = |l: &super::Linear| {
            let mut y = Vec::new();
            l.forward(enc, enc_len, super::scratch::sized(&mut y, enc_len * l.n));
            y
        };
        for b in &self.blocks {
            cache.cross_k.push(product(&b.cross_attn.k));
            cache.cross_v.push(product(&b.cross_attn.v));
        }
        cache.enc_len = enc_len;
    }

    /// Runs `tqs[s]` new positions of each sequence `s` (embedded, packed in
    /// `s.x`), extending `caches[s]`; `s.x` ends as the final-normed hidden
    /// states. Works only in `s`'s buffers, so a warmed-up scratch makes a
    /// decode step allocation-free.
    ///
    /// With `alone` (and always in a decode step, one position per
    /// sequence), every position gets the bits it gets fed alone: the
    /// products run `Rows::Invariant`, and attention is one call per
    /// position, as a decode step makes it. So a certified decode can check
    /// several drafted positions in one pass and keep one-step's bits.
    pub fn forward(
        &self,
        tqs: &[usize],
        caches: &mut [SeqCache],
        mut states: Option<&mut Vec<Vec<f32>>>,
        s: &mut DecodeScratch,
        alone: bool,
    ) {
        let d = self.d_model;
        let rows: usize = tqs.iter().sum();
        debug_assert_eq!(tqs.len(), caches.len());
        let DecodeScratch {
            x,
            normed,
            q,
            k,
            v,
            ctx,
            proj,
            ffn_h,
            ffn_u,
            biases,
            ..
        } = s;
        let x = &mut x[..rows * d];
        debug_assert!(biases.len() >= tqs.len());
        for ((b, &tq), c) in biases.iter_mut().zip(tqs).zip(caches.iter()) {
            // The bias grows by a position each step: size it for the whole
            // run once, as the cache was.
            b.reserve(self.heads, c.capacity.max(c.len + tq) + tq);
        }
        let normed = sized(normed, rows * d);
        let proj = sized(proj, rows * d);
        // A decode step (one new position per sequence) gives each sequence
        // the bits it gets alone, whatever shares the batch.
        let alone = alone || tqs.iter().all(|&t| t == 1);
        let mode = if alone { Rows::Invariant } else { Rows::Free };
        if let Some(st) = states.as_deref_mut() {
            st.push(x.to_vec());
        }
        for (l, block) in self.blocks.iter().enumerate() {
            // Layer 0's bias serves every layer of a T5 stack; umT5 layers
            // each have their own (refilled in place: no allocation).
            if let Some(table) = self.bias_table(l) {
                for ((b, &tq), c) in biases.iter_mut().zip(tqs).zip(caches.iter()) {
                    self.fill_bias(b, table, false, tq, c.len + tq, c.len);
                }
            }
            // Causal self-attention over the cache.
            ops::rms_norm_rows(x, block.self_norm.as_slice(), self.eps, normed);
            let a = &block.self_attn;
            let inner = a.inner();
            let (q, k, v) = (
                sized(q, rows * inner),
                sized(k, rows * inner),
                sized(v, rows * inner),
            );
            Linear::forward_qkv(normed, rows, mode, (&a.q, q), (&a.k, k), (&a.v, v));
            let ctx = sized(ctx, rows * inner);
            let mut start = 0;
            for (&tq, cache) in tqs.iter().zip(caches.iter_mut()) {
                let r = start * inner..(start + tq) * inner;
                cache.self_k[l].extend_from_slice(&k[r.clone()]);
                cache.self_v[l].extend_from_slice(&v[r]);
                start += tq;
            }
            per_sequence(tqs, caches, inner, q, ctx, |idx, cache, q, out| {
                // Alone, one call a position: query `i` sees keys up to its
                // own position, and the bias of all `tq` indexes it from its
                // own offset (the kernel's blocks of queries sum in another
                // order). (`max(1)`: no new position is no chunk, not a
                // chunk of length 0.)
                let per = if alone { 1 } else { tqs[idx].max(1) };
                let bias = biases[idx].as_rel_bias();
                let (qs, outs) = (
                    q.chunks_exact(per * inner),
                    out.chunks_exact_mut(per * inner),
                );
                for (c, (q, out)) in qs.zip(outs).enumerate() {
                    let i0 = c * per;
                    let tk = cache.len + i0 + per;
                    let input = AttnInput {
                        q,
                        k: &cache.self_k[l][..tk * inner],
                        v: &cache.self_v[l][..tk * inner],
                        tq: per,
                        tk,
                        bias: Some(RelBias {
                            offset: bias.offset - i0 as isize,
                            ..bias
                        }),
                        causal: Some(cache.len + i0),
                    };
                    a.attend(input, out)
                }
            });
            a.o.forward_rows(ctx, rows, proj, mode);
            ops::add_inplace(x, proj);

            // Cross-attention: no position bias; the encoder output has no padding.
            ops::rms_norm_rows(x, block.cross_norm.as_slice(), self.eps, normed);
            let c = &block.cross_attn;
            c.q.forward_rows(normed, rows, q, mode);
            per_sequence(tqs, caches, inner, q, ctx, |idx, cache, q, out| {
                // Alone, one call a position (the kernel's blocks of
                // queries sum in another order).
                let per = if alone { 1 } else { tqs[idx].max(1) };
                for (q, out) in q
                    .chunks_exact(per * inner)
                    .zip(out.chunks_exact_mut(per * inner))
                {
                    let input = AttnInput {
                        q,
                        k: &cache.cross_k[l],
                        v: &cache.cross_v[l],
                        tq: per,
                        tk: cache.enc_len,
                        bias: None,
                        causal: None,
                    };
                    c.attend(input, out)
                }
            });
            c.o.forward_rows(ctx, rows, proj, mode);
            ops::add_inplace(x, proj);

            ops::rms_norm_rows(x, block.ffn_norm.as_slice(), self.eps, normed);
            block
                .ffn
                .forward_into(normed, rows, ffn_h, ffn_u, proj, mode);
            ops::add_inplace(x, proj);
            // HF records each block's input; its last entry is the normed output.
            if let Some(st) = states.as_deref_mut() {
                if st.len() < self.blocks.len() {
                    st.push(x.to_vec());
                }
            }
        }
        for (&tq, cache) in tqs.iter().zip(caches.iter_mut()) {
            cache.len += tq;
        }
        ops::rms_norm_rows(x, self.final_norm.as_slice(), self.eps, normed);
        x.copy_from_slice(normed);
        if let Some(st) = states {
            st.push(x.to_vec());
        }
    }
}

/// Below this many multiply-adds (queries x keys x inner, over the whole
/// batch) a step's attention calls run one after another: one call of a
/// decode step is a few microseconds, less than waking a worker.
const PAR_ATTENTION_MACS: usize = 1 << 17;

/// Runs `f(s, cache_s, q_s, out_s)` for every sequence `s` of the step, where
/// `q_s` and `out_s` are its `[tqs[s], inner]` rows of `q` and `ctx`. In
/// parallel across sequences when every sequence has the same number of new
/// positions (every decode step) and the batch's attention is big enough; each
/// sequence is one task either way, so the bits do not depend on it.
fn per_sequence<F>(
    tqs: &[usize],
    caches: &[SeqCache],
    inner: usize,
    q: &[f32],
    ctx: &mut [f32],
    f: F,
) where
    F: Fn(usize, &SeqCache, &[f32], &mut [f32]) + Sync,
{
    let tq = tqs.first().copied().unwrap_or(0);
    let uniform = tq > 0 && tqs.iter().all(|&t| t == tq);
    let work: usize = tqs
        .iter()
        .zip(caches)
        .map(|(&t, c)| t * (c.len + t).max(c.enc_len) * inner)
        .sum();
    let threads = t5edge_kernels::pool::current_threads();
    if uniform && caches.len() > 1 && work >= PAR_ATTENTION_MACS && threads > 1 {
        let len = tq * inner;
        t5edge_kernels::for_chunks_mut(ctx, len, true, |s, out| {
            f(s, &caches[s], &q[s * len..(s + 1) * len], out)
        });
        return;
    }
    let mut start = 0;
    for (s, (&t, c)) in tqs.iter().zip(caches).enumerate() {
        let r = start * inner..(start + t) * inner;
        f(s, c, &q[r.clone()], &mut ctx[r]);
        start += t;
    }
}
