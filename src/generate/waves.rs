//! How many rows a whole-batch decode keeps in flight at once.
//!
//! A decode step reads every row's keys and values (cross-attention over its
//! encoder output and self-attention over what it has generated) once per
//! layer. While the rows' caches fit the last-level cache beside the weights,
//! a bigger batch only amortises the weights further; once they do not, every
//! step streams them from memory and tokens/s fall as the batch grows (a
//! t5-efficient-tiny batch of 64 x 64 ids holds ~48 MB of f32 caches against
//! the AVX2 EPYC's 32 MB L3: docs/SCALING.md). So `super::batch::decode_loop`
//! admits rows up to a cap and lets a waiting prompt join as a row finishes,
//! as CTranslate2's `max_batch_size` and the continuous batching of servers
//! do. A row's tokens do not depend on which rows share its steps, so the
//! output is the same; only the order in which rows progress changes.
//!
//! The cap comes from a byte budget for the caches: half the L3 the OS
//! reports (the other half for weights and activations), 16 MB when it
//! reports none, or `T5EDGE_KV_BUDGET_MB` (`0`: never split).

use crate::model::T5Model;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Below this many rows a wave would give up more weight reuse than fitting
/// the caches saves; a batch whose caches cannot fit at this size runs whole.
const MIN_ROWS: usize = 16;

/// Budget when the OS reports no L3.
const DEFAULT_BUDGET: usize = 16 << 20;

/// `usize::MAX`: not set, use the cache-derived default.
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the cache budget in bytes (`0`: never split a batch). From
/// `T5EDGE_KV_BUDGET_MB` (crate::runtime).
pub fn set_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

fn budget() -> usize {
    match BUDGET.load(Ordering::Relaxed) {
        usize::MAX => {
            static L3: OnceLock<Option<usize>> = OnceLock::new();
            L3.get_or_init(l3_bytes).map_or(DEFAULT_BUDGET, |b| b / 2)
        }
        b => b,
    }
}

/// The L3 size Linux reports for cpu0 (`index3/size`, e.g. "32768K").
fn l3_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").ok()?;
    parse_size(s.trim())
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// Rows to keep in flight for these prompts generating up to `max_new`
/// tokens each: all of them when their caches fit the budget or when a wave
/// of `MIN_ROWS` would not fit it either; otherwise the fewest waves whose
/// caches fit, of equal size.
pub fn rows_in_flight(model: &T5Model, prompts: &[&[u32]], max_new: usize) -> usize {
    let c = &model.config;
    let per_pos = c.inner_dim() * 2 * c.num_decoder_layers * std::mem::size_of::<f32>();
    let total = prompts.iter().fold(0usize, |a, p| {
        a.saturating_add((p.len() + max_new).saturating_mul(per_pos))
    });
    cap(prompts.len(), total, budget())
}

/// [`rows_in_flight`] for `n` rows whose caches take `total` bytes together.
fn cap(n: usize, total: usize, budget: usize) -> usize {
    if n <= MIN_ROWS || budget == 0 || total <= budget {
        return n.max(1);
    }
    let mean = total.div_ceil(n).max(1);
    let fit = budget / mean;
    if fit < MIN_ROWS {
        return n;
    }
    let waves = n.div_ceil(fit);
    n.div_ceil(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_linux_writes_them() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn batches_split_only_into_waves_that_fit() {
        let mb = 1 << 20;
        // 64 rows of 768 KB against 16 MB: 21 fit, so 4 waves of 16.
        assert_eq!(cap(64, 64 * (768 << 10), 16 * mb), 16);
        // Fits whole: no split.
        assert_eq!(cap(64, 64 * (100 << 10), 16 * mb), 64);
        // 7 MB rows: a wave of 16 would not fit either, so no split.
        assert_eq!(cap(64, 64 * 7 * mb, 16 * mb), 64);
        // Budget 0 turns it off; small batches never split.
        assert_eq!(cap(64, 64 * (768 << 10), 0), 64);
        assert_eq!(cap(16, 16 * (mb << 4), mb), 16);
        assert_eq!(cap(0, 0, mb), 1);
        // 40 rows, 32 fit: 2 waves of 20.
        assert_eq!(cap(40, 40 * (512 << 10), 16 * mb), 20);
    }
}
