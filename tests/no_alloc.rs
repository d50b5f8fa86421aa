//! A decoding step allocates nothing once its buffers are sized: the decode
//! loop's promise (preallocated KV cache and scratch, reused processor and
//! warper buffers), checked by counting every heap allocation the process
//! makes while the library's own loop runs steps.
//!
//! One test function on purpose: the counter is process-wide, so a second test
//! running in parallel would be counted too.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use support::*;
use t5edge::generate::generate_stream_batch;
use t5edge::model::screened::{Mode, ScreenedHead};
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::synth::{with_overrides, write_checkpoint, SynthOptions};
use t5edge::{GenerateOptions, T5Model};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Bytes of the counted allocations of at least [`LARGE`] bytes.
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = 16 << 10;

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if size >= LARGE {
            LARGE_BYTES.fetch_add(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: defers every call to the system allocator unchanged; the counter
// only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
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

/// Warm-up steps before counting, and counted steps. Enough warm-up for a
/// screened head's trial (32 picks; a batch of 3 rows asks 3 a step) to have
/// settled: a head whose screen rarely decides turns it off once, and the
/// batch's logits buffer then grows once; the window is the steady state.
const WARM: usize = 12;
const STEPS: usize = 8;

/// Runs the library's own decode loop (`generate_stream_batch`, the loop
/// behind `generate`) on `rows` prompts and returns the heap allocations made
/// on any thread from row 0's `WARM`-th token to its `WARM + STEPS`-th: that
/// window holds `STEPS` whole steps (model, processors, warpers, the draw or
/// the certified pick, and every row's bookkeeping). EOS is suppressed so no
/// row ends inside the window.
fn count_step_allocations(m: &T5Model, rows: usize, opts: &GenerateOptions) -> usize {
    let prompts: Vec<Vec<u32>> = (0..rows as u32)
        .map(|r| (3 + r..20 + 3 * r).collect())
        .collect();
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| &p[..]).collect();
    let n = WARM + STEPS + 1;
    let opts = opts.clone().max_new_tokens(n).min_new_tokens(n);
    let mut row0 = 0usize;
    let out = generate_stream_batch(m, &prompts, &opts, |row, _| {
        if row == 0 {
            row0 += 1;
            if row0 == WARM {
                ALLOCS.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
            } else if row0 == WARM + STEPS {
                COUNTING.store(false, Ordering::SeqCst);
            }
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        out.iter().all(|o| o.len() == n),
        "every row runs all {n} steps"
    );
    ALLOCS.load(Ordering::SeqCst)
}

/// Bytes a whole `generate` call of `rows` prompts allocates in
/// allocations of at least [`LARGE`] bytes, after two warm-up calls. On a
/// pool of one thread: with two, which thread runs which of the encoder's
/// by-rows tasks depends on the scheduler, and a thread running a task
/// taller than any it ran before sizes its own working memory once (seen
/// under load: 32 KB, a 64-row task's FFN hidden layer).
fn large_bytes_of_a_warm_call(m: &T5Model, rows: usize) -> usize {
    t5edge_kernels::pool::Pool::new(1).install(|| large_bytes_on_this_thread(m, rows))
}

fn large_bytes_on_this_thread(m: &T5Model, rows: usize) -> usize {
    let prompts: Vec<Vec<u32>> = (0..rows as u32)
        .map(|r| (3 + r..60 + 3 * r).collect())
        .collect();
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| &p[..]).collect();
    let opts = GenerateOptions::default()
        .max_new_tokens(32)
        .min_new_tokens(32);
    for _ in 0..2 {
        t5edge::generate::generate(m, &prompts, &opts).unwrap();
    }
    LARGE_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    t5edge::generate::generate(m, &prompts, &opts).unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    LARGE_BYTES.load(Ordering::SeqCst)
}

/// Bytes a warm `score_batch` call allocates in buffers of at least
/// [`LARGE`] bytes: 3 pairs of 60 target ids, 180 decoder rows, so the head
/// runs in three blocks of up to 64 rows. One pool thread, as above.
fn large_bytes_of_a_warm_score(m: &T5Model) -> usize {
    t5edge_kernels::pool::Pool::new(1).install(|| {
        let sources: Vec<Vec<u32>> = (0..3u32).map(|r| (3 + r..23 + r).collect()).collect();
        let targets: Vec<Vec<u32>> = (0..3u32).map(|r| (5 + r..65 + r).collect()).collect();
        let pairs: Vec<(&[u32], &[u32])> = sources
            .iter()
            .zip(&targets)
            .map(|(s, t)| (&s[..], &t[..]))
            .collect();
        for _ in 0..2 {
            t5edge::score::score_batch(m, &pairs).unwrap();
        }
        LARGE_BYTES.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        t5edge::score::score_batch(m, &pairs).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        LARGE_BYTES.load(Ordering::SeqCst)
    })
}

#[test]
fn decode_steps_allocate_nothing_once_warm() {
    // A vocabulary large enough for the LM head to be split across threads
    // (the parallel path is where per-call buffers used to hide), tied,
    // untied-gated and umT5 variants.
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
        // umT5 refills a bias per layer each step, in the same buffers.
        (
            "umt5",
            vec![
                "vocab_size=32128".into(),
                "model_type=umt5".into(),
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
                ..Default::default()
            },
            false,
        )
        .unwrap();
        // The int8 head's greedy picks both from its logits and through its
        // int4 screen (built lazily, in the warm-up).
        for (fmt, exact, screen) in [
            (WeightFormat::F32, false, Mode::Off),
            (WeightFormat::F16, false, Mode::Off),
            (WeightFormat::Int8, false, Mode::Off),
            (WeightFormat::Int8, false, Mode::On),
            (WeightFormat::F32, true, Mode::Off),
        ] {
            let mut m = T5Model::load(dir.path()).unwrap();
            m.convert(FormatPolicy::for_dtype(fmt)).unwrap();
            if exact {
                m.enable_certified_head(0).unwrap();
            }
            m.lm_head.as_mut().unwrap().screen =
                std::sync::Arc::new(ScreenedHead::with_mode(screen));
            let greedy = GenerateOptions::default().exact(exact);
            // Every processor and warper on, so each one's working memory is
            // in the window.
            let sampling = GenerateOptions::default()
                .do_sample(true)
                .seed(5)
                .temperature(0.7)
                .top_k(40)
                .top_p(0.9)
                .repetition_penalty(1.3)
                .no_repeat_ngram_size(2);
            let modes: &[(&str, &GenerateOptions)] = if exact {
                &[("greedy", &greedy)]
            } else {
                &[("greedy", &greedy), ("sampling", &sampling)]
            };
            // A whole call's working memory (encoder output, caches, cross
            // keys and values, logits) comes from the spares the call
            // before left on this thread: before them, 3.5 MB a call of 16
            // rows here, and a Python process faulted it in every call.
            for rows in [1, 16] {
                let n = large_bytes_of_a_warm_call(&m, rows);
                if n != 0 {
                    failures.push(format!(
                        "{name} {} exact={exact} screen={screen:?} rows={rows}: a warm call allocated {n} bytes in buffers of {LARGE} or more",
                        fmt.name()
                    ));
                }
            }
            if fmt == WeightFormat::Int8 && screen == Mode::Off {
                // The head's blocks share one logits buffer: a copy of each
                // block's logits into a fresh buffer (23 MB a call here)
                // cost a Python process 17% of a 256-document rerank.
                let block = 64 * m.config.vocab_size * 4;
                let n = large_bytes_of_a_warm_score(&m);
                if n >= 2 * block {
                    failures.push(format!(
                        "{name} score: a warm call of three head blocks allocated {n} bytes in buffers of {LARGE} or more (one block's logits: {block})"
                    ));
                }
            }
            for (mode, opts) in modes {
                for rows in [1, 3] {
                    let n = count_step_allocations(&m, rows, opts);
                    if n != 0 {
                        failures.push(format!(
                            "{name} {} exact={exact} screen={screen:?} {mode} rows={rows}: {n} allocations in {STEPS} steps",
                            fmt.name()
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
