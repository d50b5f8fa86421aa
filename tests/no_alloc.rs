//! A decoding step allocates nothing once its buffers are sized: the decode
//! loop's promise (preallocated KV cache and scratch), checked by counting
//! every heap allocation the process makes while steps run.
//!
//! One test function on purpose: the counter is process-wide, so a second test
//! running in parallel would be counted too.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use support::*;
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::synth::{with_overrides, write_checkpoint, SynthOptions};
use t5edge::T5Model;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator unchanged; the counter
// only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations made while `f` runs (on any thread).
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

/// Steps `rows` sequences greedily: 3 warm-up steps, then `steps` counted ones.
fn count_step_allocations(m: &T5Model, rows: usize, steps: usize, exact: bool) -> usize {
    let prompts: Vec<Vec<u32>> = (0..rows as u32)
        .map(|r| (3 + r..20 + 3 * r).collect())
        .collect();
    let mut caches: Vec<_> = prompts
        .iter()
        .map(|p| m.new_cache(&m.encode(p).unwrap(), 3 + steps))
        .collect();
    let mut scratch = t5edge::model::DecodeScratch::new();
    let mut toks = vec![m.config.decoder_start_token_id; rows];
    let mut cert_buf = t5edge::model::certified::CertScratch::default();
    let d = m.config.d_model;
    let mut step = |toks: &mut Vec<u32>, scratch: &mut t5edge::model::DecodeScratch| {
        m.decode_step(toks, &mut caches, scratch).unwrap();
        if exact {
            let head = m.lm_head.certified.as_ref().unwrap();
            let h = m.step_head_input(scratch);
            for (i, t) in toks.iter_mut().enumerate() {
                *t = head
                    .argmax_with(&h[i * d..(i + 1) * d], None, &mut cert_buf)
                    .0 as u32;
            }
        } else {
            let v = m.config.vocab_size;
            let logits = m.step_logits(scratch);
            for (i, t) in toks.iter_mut().enumerate() {
                *t = t5edge_kernels::ops::argmax(&logits[i * v..(i + 1) * v]).unwrap() as u32;
            }
        }
    };
    for _ in 0..3 {
        step(&mut toks, &mut scratch);
    }
    allocations(|| {
        for _ in 0..steps {
            step(&mut toks, &mut scratch);
        }
    })
}

#[test]
fn decode_steps_allocate_nothing_once_warm() {
    // A vocabulary large enough for the LM head to be split across threads
    // (the parallel path is where per-call buffers used to hide), tied and
    // untied-gated variants.
    let base = tiny_config();
    let shapes = [
        ("tied-relu", vec!["vocab_size=32128".to_string()]),
        (
            "gated",
            vec![
                "vocab_size=32128".into(),
                "feed_forward_proj=gated-gelu".into(),
                "tie_word_embeddings=false".into(),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, over) in shapes {
        let cfg = with_overrides(&base, &over).unwrap();
        let dir = TempDir::new(&format!("noalloc-{name}"));
        write_checkpoint(
            dir.path(),
            &cfg,
            &SynthOptions {
                seed: 3,
                norm_jitter: 0.1,
            },
            false,
        )
        .unwrap();
        for (fmt, exact) in [
            (WeightFormat::F32, false),
            (WeightFormat::F16, false),
            (WeightFormat::Int8, false),
            (WeightFormat::F32, true),
        ] {
            let mut m = T5Model::load(dir.path()).unwrap();
            m.convert(FormatPolicy::for_dtype(fmt)).unwrap();
            if exact {
                m.enable_certified_head(0).unwrap();
            }
            for rows in [1, 3] {
                let n = count_step_allocations(&m, rows, 8, exact);
                if n != 0 {
                    failures.push(format!(
                        "{name} {} exact={exact} rows={rows}: {n} allocations in 8 steps",
                        fmt.name()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
