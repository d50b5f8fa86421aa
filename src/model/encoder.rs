//! The encoder stack: bidirectional self-attention and feed-forward blocks.
//!
//! A batch is packed without padding: the rows of every sequence sit end to end,
//! linear layers run over all of them at once, and attention runs per sequence
//! over its own rows. That is what a padding mask computes, minus the padding.

use super::attention::{AttentionWeights, AttnInput};
use super::ffn::{FeedForward, BY_ROWS};
use super::linear::{Linear, Rows, WeightFormat};
use super::position_bias::PositionBias;
use super::scratch::{sized, DecodeScratch};
use super::Stack;
use crate::weights::F32Data;
use t5edge_kernels::ops;

#[derive(Clone)]
pub struct EncoderBlock {
    pub attn_norm: F32Data,
    pub attn: AttentionWeights,
    pub ffn_norm: F32Data,
    pub ffn: FeedForward,
}

pub type Encoder = Stack<EncoderBlock>;

/// The tallest by-rows task ([`Encoder::task_rows`]): beyond it a task's
/// hidden rows (128 x d_ff floats, 1.5 MB at base) crowd the weights out
/// of L2, and 512 ids at base ran no faster in 256-row tasks.
const MAX_TASK_ROWS: usize = 128;

/// The most working memory an encoder call leaves on its thread for the next
/// (a 128-token pass of a base-sized model needs ~3 MB).
const KEEP_SCRATCH_BYTES: usize = 32 << 20;

thread_local! {
    /// The encoder's working memory on this thread (see `Encoder::forward`).
    static SCRATCH: std::cell::Cell<DecodeScratch> = std::cell::Cell::new(DecodeScratch::new());
}

impl Encoder {
    /// Encodes the packed batch `x` (`[sum(lens), d_model]`, the embedded tokens)
    /// in place. With `states`, also records what HF's `hidden_states` holds: the
    /// embedding output, each block's output, and in last place the final-normed
    /// output (HF's T5Stack appends that one after its final norm).
    pub fn forward(&self, x: &mut [f32], lens: &[usize], mut states: Option<&mut Vec<Vec<f32>>>) {
        let rows: usize = lens.iter().sum();
        debug_assert_eq!(x.len(), rows * self.d_model);
        let mut biases: Vec<PositionBias> = lens.iter().map(|_| PositionBias::empty()).collect();
        // Working memory reused across calls on this thread: every buffer is
        // fully overwritten before it is read, and fresh zeroed vectors were a
        // tenth of a 128-token encoder pass (memset, by `perf`). Taken out
        // while in use, so a nested call finds it empty and grows its own.
        let mut sc = SCRATCH.take();
        if let Some(s) = states.as_deref_mut() {
            s.push(x.to_vec());
        }
        if states.is_none() && self.by_rows(rows) {
            self.forward_by_rows(x, lens, &mut biases, &mut sc);
        } else {
            self.forward_whole(x, lens, &mut biases, &mut sc, states.as_deref_mut());
        }
        // A long input's buffers are not kept: they would hold its peak
        // memory on this thread after it returns.
        if sc.capacity_bytes() <= KEEP_SCRATCH_BYTES {
            SCRATCH.set(sc);
        }
        if let Some(s) = states {
            s.push(x.to_vec());
        }
    }

    /// [`Encoder::forward`] with whole products, each split across the pool
    /// as it chooses, recording each block's output in `states`.
    fn forward_whole(
        &self,
        x: &mut [f32],
        lens: &[usize],
        biases: &mut [PositionBias],
        sc: &mut DecodeScratch,
        mut states: Option<&mut Vec<Vec<f32>>>,
    ) {
        let d = self.d_model;
        let rows: usize = lens.iter().sum();
        let inner = self.blocks.first().map_or(0, |b| b.attn.inner());
        let normed = sized(&mut sc.normed, rows * d);
        for (layer, block) in self.blocks.iter().enumerate() {
            ops::rms_norm_rows(x, block.attn_norm.as_slice(), self.eps, normed);
            let a = &block.attn;
            debug_assert_eq!(a.inner(), inner);
            let q = sized(&mut sc.q, rows * inner);
            let k = sized(&mut sc.k, rows * inner);
            let v = sized(&mut sc.v, rows * inner);
            Linear::forward_qkv(normed, rows, Rows::Free, (&a.q, q), (&a.k, k), (&a.v, v));
            let ctx = sized(&mut sc.ctx, rows * inner);
            self.attend_layer(layer, lens, biases, (q, k, v), ctx);
            let o = sized(&mut sc.proj, rows * d);
            a.o.forward_rows(ctx, rows, o, Rows::Free);
            ops::add_inplace(x, o);
            ops::rms_norm_rows(x, block.ffn_norm.as_slice(), self.eps, normed);
            block
                .ffn
                .forward_into(normed, rows, &mut sc.ffn_h, &mut sc.ffn_u, o, Rows::Free);
            ops::add_inplace(x, o);
            // HF records each block's input; its last entry is the normed output.
            if let Some(s) = states.as_deref_mut() {
                if s.len() < self.blocks.len() {
                    s.push(x.to_vec());
                }
            }
        }
        // The final norm through the scratch buffer rather than a fresh copy
        // of x each call (128 KiB at W3).
        ops::rms_norm_rows(x, self.final_norm.as_slice(), self.eps, normed);
        x.copy_from_slice(normed);
    }

    /// Layer `layer`'s self-attention over each sequence's own rows of the
    /// packed `q`, `k`, `v` into `ctx`, after filling its position bias.
    fn attend_layer(
        &self,
        layer: usize,
        lens: &[usize],
        biases: &mut [PositionBias],
        (q, k, v): (&[f32], &[f32], &[f32]),
        ctx: &mut [f32],
    ) {
        // Layer 0's bias serves every layer of a T5 stack; umT5 layers each
        // have their own.
        if let Some(table) = self.bias_table(layer) {
            for (b, &t) in biases.iter_mut().zip(lens) {
                self.fill_bias(b, table, true, t, t, 0);
            }
        }
        let a = &self.blocks[layer].attn;
        let inner = a.inner();
        let mut start = 0;
        for (&t, bias) in lens.iter().zip(biases.iter()) {
            let r = start * inner..(start + t) * inner;
            let input = AttnInput {
                q: &q[r.clone()],
                k: &k[r.clone()],
                v: &v[r.clone()],
                tq: t,
                tk: t,
                bias: Some(bias.as_rel_bias()),
                causal: None,
            };
            a.attend(input, &mut ctx[r]);
            start += t;
        }
    }
}

thread_local! {
    /// A by-rows task's working rows (normed input, projection output, the
    /// feed-forward hidden layer), kept across calls.
    static ROW_SCRATCH: std::cell::Cell<DecodeScratch> =
        std::cell::Cell::new(DecodeScratch::new());
}

impl Encoder {
    /// Whether a pass over `rows` rows runs layer by layer in two parallel
    /// regions ([`Encoder::forward_by_rows`]): every linear layer int8, whose
    /// rows' bits do not depend on their neighbours, at least two tasks'
    /// rows, and more than one thread.
    fn by_rows(&self, rows: usize) -> bool {
        let int8 = |l: &Linear| l.format() == WeightFormat::Int8;
        rows >= 2 * BY_ROWS
            && t5edge_kernels::pool::current_threads() > 1
            && self.blocks.iter().all(|b| {
                let a = &b.attn;
                [&a.q, &a.k, &a.v, &a.o].into_iter().all(int8) && b.ffn.int8()
            })
    }

    /// Rows of one by-rows task: as few tasks as keep each under
    /// [`MAX_TASK_ROWS`], in a multiple of the threads, the rows shared
    /// evenly among them in whole 16-row AMX tiles (at least [`BY_ROWS`]).
    /// Every task reads all of a layer's weights (0.8 MB at tiny, 7 MB at
    /// base, past a core's L2 on the Xeon), so fewer, taller tasks read them
    /// fewer times: 32-row tasks had W3 (128 ids) read them twice per core
    /// per layer (kernels/BENCH.md). Each row's bits are its own, so the
    /// split never changes them.
    fn task_rows(rows: usize) -> usize {
        let threads = t5edge_kernels::pool::current_threads().max(1);
        let tasks = rows.div_ceil(MAX_TASK_ROWS).next_multiple_of(threads);
        rows.div_ceil(tasks).next_multiple_of(16).max(BY_ROWS)
    }

    /// [`Encoder::forward`] without `states`, with the same bits, in two
    /// parallel regions a layer instead of eight: the attention (which
    /// needs every row's keys and values), then one task per
    /// [`Encoder::task_rows`] rows through everything row-wise up to the
    /// next attention (the output projection, residual add, norm,
    /// feed-forward block, residual add, and the next layer's norm and Q, K
    /// and V, or the final norm), its
    /// products' own pool calls running inline. Split by columns, each of
    /// those steps handed rows written by one core to the other, and waited
    /// for its slowest task.
    fn forward_by_rows(
        &self,
        x: &mut [f32],
        lens: &[usize],
        biases: &mut [PositionBias],
        sc: &mut DecodeScratch,
    ) {
        let (d, eps) = (self.d_model, self.eps);
        let rows: usize = lens.iter().sum();
        let inner = self.blocks[0].attn.inner();
        let q = sized(&mut sc.q, rows * inner);
        let k = sized(&mut sc.k, rows * inner);
        let v = sized(&mut sc.v, rows * inner);
        let ctx = sized(&mut sc.ctx, rows * inner);
        let task_rows = Self::task_rows(rows);
        // Layer 0's norm and Q, K and V.
        let first = &self.blocks[0];
        t5edge_kernels::par::for_row_blocks(
            [&mut *x, &mut *q, &mut *k, &mut *v],
            rows,
            task_rows,
            true,
            |_, [xr, qr, kr, vr]| {
                let mut rs = ROW_SCRATCH.take();
                let r = xr.len() / d;
                let normed = sized(&mut rs.normed, r * d);
                ops::rms_norm_rows(xr, first.attn_norm.as_slice(), eps, normed);
                let a = &first.attn;
                Linear::forward_qkv(normed, r, Rows::Free, (&a.q, qr), (&a.k, kr), (&a.v, vr));
                ROW_SCRATCH.set(rs);
            },
        );
        for (layer, block) in self.blocks.iter().enumerate() {
            self.attend_layer(layer, lens, biases, (q, k, v), ctx);
            let a = &block.attn;
            let next = self.blocks.get(layer + 1);
            let ctx = &*ctx;
            t5edge_kernels::par::for_row_blocks(
                [&mut *x, &mut *q, &mut *k, &mut *v],
                rows,
                task_rows,
                true,
                |i0, [xr, qr, kr, vr]| {
                    let mut rs = ROW_SCRATCH.take();
                    let r = xr.len() / d;
                    let DecodeScratch {
                        normed,
                        proj,
                        ffn_h,
                        ffn_u,
                        ..
                    } = &mut rs;
                    let normed = sized(normed, r * d);
                    // The residual adds (and the ReLU) happen in the int8
                    // products' epilogues, as each output is stored.
                    let ctx = &ctx[i0 * inner..(i0 + r) * inner];
                    a.o.forward_rows_add(ctx, r, xr, Rows::Free, proj);
                    ops::rms_norm_rows(xr, block.ffn_norm.as_slice(), eps, normed);
                    let ffn = &block.ffn;
                    ffn.add_whole(normed, r, ffn_h, ffn_u, xr, Rows::Free, proj);
                    match next {
                        Some(nb) => {
                            ops::rms_norm_rows(xr, nb.attn_norm.as_slice(), eps, normed);
                            let na = &nb.attn;
                            Linear::forward_qkv(
                                normed,
                                r,
                                Rows::Free,
                                (&na.q, qr),
                                (&na.k, kr),
                                (&na.v, vr),
                            );
                        }
                        None => {
                            ops::rms_norm_rows(xr, self.final_norm.as_slice(), eps, normed);
                            xr.copy_from_slice(normed);
                        }
                    }
                    ROW_SCRATCH.set(rs);
                },
            );
        }
    }
}
