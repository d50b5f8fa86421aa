//! Per-sequence decoder state: the self-attention K/V of every position so far,
//! and the cross-attention K/V, computed once from the encoder output.

use super::scratch::{give_back, spare};

/// One sequence's cache across all decoder layers.
#[derive(Clone, Default)]
pub struct SeqCache {
    /// Per layer: `[len, inner]` keys and values of the positions decoded so far.
    pub self_k: Vec<Vec<f32>>,
    pub self_v: Vec<Vec<f32>>,
    /// Per layer: `[enc_len, inner]` keys and values of the encoder output.
    pub cross_k: Vec<Vec<f32>>,
    pub cross_v: Vec<Vec<f32>>,
    pub enc_len: usize,
    /// Positions decoded so far.
    pub len: usize,
    /// Positions the self-attention K/V were sized for up front.
    pub capacity: usize,
}

impl SeqCache {
    /// An empty cache with room for `capacity` decoder positions, so the decode
    /// loop appends without reallocating.
    pub fn new(layers: usize, inner: usize, capacity: usize) -> SeqCache {
        SeqCache {
            self_k: (0..layers).map(|_| empty(capacity * inner)).collect(),
            self_v: (0..layers).map(|_| empty(capacity * inner)).collect(),
            cross_k: Vec::with_capacity(layers),
            cross_v: Vec::with_capacity(layers),
            enc_len: 0,
            len: 0,
            capacity,
        }
    }
}

/// An empty buffer with room for `n` floats, a spare of this thread's when
/// one fits.
fn empty(n: usize) -> Vec<f32> {
    let mut v = spare(n);
    v.clear();
    v
}

/// A cache's buffers become this thread's spares: the next call's cache
/// reuses their pages instead of faulting in new ones (`scratch::spare`).
impl Drop for SeqCache {
    fn drop(&mut self) {
        for layers in [
            &mut self.self_k,
            &mut self.self_v,
            &mut self.cross_k,
            &mut self.cross_v,
        ] {
            for b in layers.drain(..) {
                give_back(b);
            }
        }
    }
}
