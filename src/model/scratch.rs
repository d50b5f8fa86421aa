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

impl Drop for DecodeScratch {
    fn drop(&mut self) {
        for b in [
            &mut self.x,
            &mut self.normed,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.ctx,
            &mut self.proj,
            &mut self.ffn_h,
            &mut self.ffn_u,
            &mut self.logits,
            &mut self.head_in,
        ] {
            give_back(std::mem::take(b));
        }
    }
}

/// `v` resized to exactly `n` values (contents unspecified): allocates only
/// when `n` exceeds every earlier size, and then takes a spare buffer of this
/// thread's first ([`spare`]). The one it outgrew is freed: kept as a spare
/// it would often sit unused (measured: W1 peak RSS +0.4 MB).
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.capacity() < n {
        *v = spare(n);
    }
    v.resize(n, 0.0);
    &mut v[..n]
}

/// The most float memory a thread keeps in spare buffers between calls
/// (as the encoder's `KEEP_SCRATCH_BYTES`). A W2-shaped call of the tiny
/// model (16 rows) works in ~9 MB, 4 rows of base in ~28; beyond this a
/// call's buffers go back to the allocator.
const KEEP_SPARE_BYTES: usize = 32 << 20;

/// Buffers smaller than this (in floats) are left to the allocator, which
/// keeps small chunks on its own.
const MIN_SPARE: usize = 1024;

/// A thread's spare buffers by capacity, each with the call it was given
/// back in, and their bytes.
#[derive(Default)]
struct Spares {
    by_capacity: std::collections::BTreeMap<usize, Vec<(u64, Vec<f32>)>>,
    bytes: usize,
    /// Counts [`end_call`]s.
    call: u64,
}

thread_local! {
    static SPARES: std::cell::RefCell<Spares> = std::cell::RefCell::default();
}

/// A buffer with room for at least `n` floats (its length and contents
/// unspecified): the smallest of this thread's spares that fits, if it is
/// at most about twice `n`, else a new one.
///
/// Why: the decode working memory of a call (its caches, cross-attention
/// keys and values, the encoder output; ~2k pages for W2) is freed when the
/// call returns. Whether the allocator keeps those pages for the next call
/// is its heuristics' choice: the CLI's process kept them, a Python process
/// gave them back to the OS after every call (1,492 `brk`s in 43 W2 calls)
/// and faulted them in again, 36.6 ms against 30.1 a call. Spares make
/// that the engine's choice.
pub(crate) fn spare(n: usize) -> Vec<f32> {
    if n >= MIN_SPARE {
        let found = SPARES.try_with(|s| {
            let mut s = s.borrow_mut();
            let cap = *s.by_capacity.range(n..).next()?.0;
            if cap > 2 * n {
                return None;
            }
            let list = s.by_capacity.get_mut(&cap)?;
            let (_, v) = list.pop()?;
            if list.is_empty() {
                s.by_capacity.remove(&cap);
            }
            s.bytes -= cap * 4;
            Some(v)
        });
        if let Ok(Some(v)) = found {
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Keeps `v` as a spare of this thread's while they stay under
/// [`KEEP_SPARE_BYTES`]; otherwise frees it.
pub(crate) fn give_back(v: Vec<f32>) {
    let cap = v.capacity();
    if cap < MIN_SPARE {
        return;
    }
    // After the thread's spares are gone (its exit) `v` is simply freed.
    let _ = SPARES.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.bytes + cap * 4 <= KEEP_SPARE_BYTES {
            s.bytes += cap * 4;
            let call = s.call;
            s.by_capacity.entry(cap).or_default().push((call, v));
        }
    });
}

/// A decode call on this thread ended (`DecodeBatch`'s drop): frees the
/// spares given back before the previous `end_call`, i.e. that a whole
/// call left untaken. So what a thread holds follows its recent calls'
/// shapes instead of filling up to the bound with old ones.
pub(crate) fn end_call() {
    let _ = SPARES.try_with(|s| {
        let mut s = s.borrow_mut();
        let call = s.call;
        let mut freed = 0;
        s.by_capacity.retain(|&cap, list| {
            list.retain(|(c, _)| {
                let keep = *c >= call;
                if !keep {
                    freed += cap * 4;
                }
                keep
            });
            !list.is_empty()
        });
        s.bytes -= freed;
        s.call += 1;
    });
}

/// Frees this thread's spares: before a one-off build whose memory would
/// otherwise stack on top of them (the LM head's screen, which also makes
/// the full head's logits buffer, the largest spare of a single row, idle).
pub(crate) fn free_spares() {
    let _ = SPARES.try_with(|s| {
        let mut s = s.borrow_mut();
        s.by_capacity.clear();
        s.bytes = 0;
    });
}

/// Bytes held in this thread's spares.
#[cfg(test)]
pub(crate) fn spare_bytes() -> usize {
    SPARES.with(|s| s.borrow().bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test on a thread of its own: the spares are per thread.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_given_back_buffer_serves_the_next_request_that_fits() {
        on_fresh_thread(|| {
            let v: Vec<f32> = Vec::with_capacity(4096);
            let p = v.as_ptr();
            give_back(v);
            assert_eq!(spare_bytes(), 4096 * 4);
            // Too small a need for it (it would hold twice the memory),
            // and too large.
            let (small, large) = (spare(2000), spare(5000));
            assert!(small.as_ptr() != p && large.as_ptr() != p);
            let w = spare(3000);
            assert_eq!(w.as_ptr(), p, "the spare serves a need it fits");
            assert_eq!(spare_bytes(), 0);
            // The smallest that fits, of several.
            give_back(Vec::with_capacity(8000));
            give_back(w);
            give_back(Vec::with_capacity(5000));
            let x = spare(4000);
            assert_eq!(x.as_ptr(), p);
        });
    }

    #[test]
    fn spares_stay_under_their_bound_and_small_buffers_are_not_kept() {
        on_fresh_thread(|| {
            give_back(Vec::with_capacity(MIN_SPARE - 1));
            assert_eq!(spare_bytes(), 0);
            let big = KEEP_SPARE_BYTES / 4 / 3;
            for _ in 0..5 {
                give_back(Vec::with_capacity(big));
            }
            assert_eq!(spare_bytes(), 3 * big * 4, "three fit under the bound");
            free_spares();
            assert_eq!(spare_bytes(), 0);
        });
    }

    #[test]
    fn a_spare_no_call_took_is_freed_at_the_next_calls_end() {
        on_fresh_thread(|| {
            give_back(Vec::with_capacity(4096));
            end_call();
            assert_eq!(spare_bytes(), 4096 * 4, "kept for the next call");
            // The next call takes a buffer of another size only.
            give_back(Vec::with_capacity(2048));
            end_call();
            assert_eq!(spare_bytes(), 2048 * 4, "the untaken one is freed");
            // A spare taken and given back is fresh again.
            let v = spare(2000);
            give_back(v);
            end_call();
            end_call();
            assert_eq!(spare_bytes(), 0);
        });
    }

    #[test]
    fn a_dropped_scratch_gives_its_buffers_back() {
        on_fresh_thread(|| {
            let mut s = DecodeScratch::new();
            sized(&mut s.logits, 5000);
            sized(&mut s.x, 100);
            let p = s.logits.as_ptr();
            drop(s);
            // The 100-float one is below MIN_SPARE.
            assert_eq!(spare_bytes(), 5000 * 4);
            let mut t = DecodeScratch::new();
            assert_eq!(sized(&mut t.logits, 4000).as_ptr(), p);
        });
    }
}
