//! Shared test data: a tiny deterministic RNG (proptest picks the seed, so failures
//! still reproduce and shrink on shape) and the value patterns every kernel must
//! survive.
#![allow(dead_code)]

use proptest::prelude::*;
use t5edge_kernels::dispatch;
use t5edge_kernels::pool::{self, Backend};
use t5edge_kernels::Isa;

/// splitmix64: fast, and good enough to fill test matrices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// How a matrix is filled.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// Uniform in [-1, 1).
    Uniform,
    /// Uniform times a magnitude in [1e-3, 1e3] that varies per element: wide
    /// dynamic range inside a row stresses per-row scales.
    Wide,
    /// All zero.
    Zeros,
    /// Each row has a single non-zero entry (of magnitude up to `big`).
    OneHot,
    /// Uniform scaled up to `big`.
    Large,
    /// Mostly zero with a few large outliers, like activations after ReLU.
    Sparse,
}

pub fn fill_strategy() -> impl Strategy<Value = Fill> {
    prop_oneof![
        4 => Just(Fill::Uniform),
        2 => Just(Fill::Wide),
        1 => Just(Fill::Zeros),
        1 => Just(Fill::OneHot),
        1 => Just(Fill::Large),
        1 => Just(Fill::Sparse),
    ]
}

/// A `[rows, cols]` matrix; `big` caps the Large/OneHot magnitude (the f16 tests
/// keep it inside the f16 range).
pub fn matrix(rng: &mut Rng, fill: Fill, rows: usize, cols: usize, big: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; rows * cols];
    match fill {
        Fill::Uniform => v.iter_mut().for_each(|x| *x = rng.unit()),
        Fill::Wide => v.iter_mut().for_each(|x| {
            let e = rng.unit() * 3.0;
            *x = rng.unit() * 10f32.powf(e);
        }),
        Fill::Zeros => {}
        Fill::OneHot => {
            for r in 0..rows {
                if cols > 0 {
                    v[r * cols + rng.below(cols)] = rng.unit() * big;
                }
            }
        }
        Fill::Large => v.iter_mut().for_each(|x| *x = rng.unit() * big),
        Fill::Sparse => v.iter_mut().for_each(|x| {
            if rng.below(8) == 0 {
                *x = rng.unit() * 50.0;
            }
        }),
    }
    v
}

/// `sum_i |x_i| |w_i|` per output, in f64: the scale every float error bound uses.
pub fn abs_dot(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
    let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let wa: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    t5edge_kernels::reference::linear(&xa, m, k, &wa, n)
}

/// Every level this CPU runs, plus the NEON emulation on other targets.
pub fn isas() -> Vec<Isa> {
    let mut v = dispatch::available();
    if !v.contains(&Isa::Neon) {
        v.push(Isa::Neon);
    }
    v
}

/// Runs `f` on a dedicated rayon pool of `threads` threads (with the kernels
/// routed to rayon, whatever `T5EDGE_POOL` says).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(|| pool::with_backend(Backend::Rayon, f))
}

/// Runs `f` under every backend with 1, 2 and 3 threads; returns each result
/// with a label naming the configuration.
pub fn on_every_pool<R: Send>(f: impl Fn() -> R + Sync) -> Vec<(String, R)> {
    let mut out = Vec::new();
    for threads in [1, 2, 3] {
        out.push((format!("rayon/{threads}"), with_threads(threads, &f)));
        let spin = pool::Pool::new(threads);
        out.push((format!("spin/{threads}"), spin.install(&f)));
    }
    out
}
