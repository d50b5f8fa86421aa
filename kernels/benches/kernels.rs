//! Kernel benchmarks. Throughput is bytes of weights streamed per call, so GEMV
//! numbers read directly as effective memory bandwidth.
//!
//! Quick run of the headline shape (see kernels/BENCH.md):
//! `cargo bench -p t5edge-kernels --bench kernels -- 'gemv/.*/32128x256' --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use half::{bf16, f16};
use std::hint::black_box;
use t5edge_kernels::attention::{Attention, RelBias};
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::ops::{self, Activation};
use t5edge_kernels::{bf16 as lbf16, dispatch, f16 as lf16, f32 as lf32, Isa};

fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Native levels only: the NEON emulation on x86 measures nothing useful.
fn isas() -> Vec<Isa> {
    dispatch::available()
        .into_iter()
        .filter(|&i| i != Isa::Neon || cfg!(target_arch = "aarch64"))
        .collect()
}

const GEMV_SHAPES: [(usize, usize); 4] = [(256, 256), (1024, 256), (256, 1024), (32128, 256)];

fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv");
    for (n, k) in GEMV_SHAPES {
        let w = fill(n * k, 1);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let wq = PackedInt8::quantize(&w, n, k, 0).expect("quantize");
        let x = fill(k, 2);
        let mut y = vec![0.0f32; n];
        for isa in isas() {
            let id = format!("{isa}/{n}x{k}");
            g.throughput(Throughput::Bytes((n * k * 4) as u64));
            g.bench_function(BenchmarkId::new("f32", &id), |b| {
                b.iter(|| lf32::linear_with(isa, black_box(&x), 1, k, &w, n, &mut y))
            });
            g.throughput(Throughput::Bytes((n * k * 2) as u64));
            g.bench_function(BenchmarkId::new("f16", &id), |b| {
                b.iter(|| lf16::linear_with(isa, black_box(&x), 1, k, &wh, n, &mut y))
            });
            g.bench_function(BenchmarkId::new("bf16", &id), |b| {
                b.iter(|| lbf16::linear_with(isa, black_box(&x), 1, k, &wb, n, &mut y))
            });
            g.throughput(Throughput::Bytes(wq.view().data().len() as u64));
            g.bench_function(BenchmarkId::new("int8", &id), |b| {
                b.iter(|| int8::linear_with(isa, black_box(&x), 1, k, &wq.view(), &mut y))
            });
        }
    }
    g.finish();
}

fn prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("prefill");
    let (n, k) = (1024, 256);
    let w = fill(n * k, 3);
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    let wq = PackedInt8::quantize(&w, n, k, 0).expect("quantize");
    let isa = dispatch::best();
    for m in [32usize, 128, 512] {
        let x = fill(m * k, 4);
        let mut y = vec![0.0f32; m * n];
        // Elements of x·wᵀ per second is the natural unit here; criterion only
        // has bytes/elements, so report multiply-adds as elements.
        g.throughput(Throughput::Elements((m * n * k) as u64));
        let id = format!("{isa}/m{m}/{n}x{k}");
        g.bench_function(BenchmarkId::new("f32", &id), |b| {
            b.iter(|| lf32::linear_with(isa, black_box(&x), m, k, &w, n, &mut y))
        });
        g.bench_function(BenchmarkId::new("f16", &id), |b| {
            b.iter(|| lf16::linear_with(isa, black_box(&x), m, k, &wh, n, &mut y))
        });
        g.bench_function(BenchmarkId::new("bf16", &id), |b| {
            b.iter(|| lbf16::linear_with(isa, black_box(&x), m, k, &wb, n, &mut y))
        });
        g.bench_function(BenchmarkId::new("int8", &id), |b| {
            b.iter(|| int8::linear_with(isa, black_box(&x), m, k, &wq.view(), &mut y))
        });
    }
    g.finish();
}

/// The products of a drafted `--exact` check: several decoder positions,
/// each with the bits of a step alone (`linear_invariant`: the GEMV
/// kernels), m = 16 as a 16-token turn feeds them.
fn invariant(c: &mut Criterion) {
    let mut g = c.benchmark_group("invariant");
    let isa = dispatch::best();
    let m = 16;
    for (n, k) in [(1024usize, 256usize), (256, 1024)] {
        let w = fill(n * k, 5);
        let x = fill(m * k, 6);
        let mut y = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((m * n * k) as u64));
        let id = format!("{isa}/m{m}/{n}x{k}");
        g.bench_function(BenchmarkId::new("f32", &id), |b| {
            b.iter(|| lf32::linear_invariant_with(isa, black_box(&x), m, k, &w, n, &mut y))
        });
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    let (heads, d) = (8usize, 64usize);
    for tk in [32usize, 256, 2048] {
        let inner = heads * d;
        let q = fill(inner, 5);
        let kk = fill(tk * inner, 6);
        let v = fill(tk * inner, 7);
        let bias = fill(heads * tk, 8);
        let att = Attention {
            heads,
            d_kv: d,
            tq: 1,
            tk,
            q: &q,
            k: &kk,
            v: &v,
            bias: Some(RelBias {
                values: &bias,
                span: tk,
                offset: 0,
            }),
            key_mask: None,
            causal: None,
        };
        let mut out = vec![0.0f32; inner];
        g.throughput(Throughput::Bytes((2 * tk * inner * 4) as u64));
        g.bench_function(
            BenchmarkId::new("scalar-twin", format!("decode/tk{tk}")),
            |b| b.iter(|| att.run_scalar(black_box(&mut out))),
        );
        for isa in isas() {
            g.bench_function(
                BenchmarkId::new(isa.name(), format!("decode/tk{tk}")),
                |b| b.iter(|| att.run_with(isa, black_box(&mut out))),
            );
        }
    }
    // The shapes of t5-efficient-tiny (4 heads x 64): an encoder prefill over
    // 128 tokens (W3, bidirectional bias), a long one over 1024 (where
    // attention is a third of a base encoder) and a decoder step over 32 keys.
    let (heads, d) = (4usize, 64usize);
    let inner = heads * d;
    for (tq, tk) in [(128usize, 128usize), (1024, 1024), (1, 32)] {
        let q = fill(tq * inner, 10);
        let kk = fill(tk * inner, 11);
        let v = fill(tk * inner, 12);
        let span = tq + tk - 1;
        let bias = fill(heads * span, 13);
        let att = Attention {
            heads,
            d_kv: d,
            tq,
            tk,
            q: &q,
            k: &kk,
            v: &v,
            bias: Some(RelBias {
                values: &bias,
                span,
                offset: tq as isize - 1,
            }),
            key_mask: None,
            causal: None,
        };
        let mut out = vec![0.0f32; tq * inner];
        let id = format!("h4x64/tq{tq}/tk{tk}");
        g.throughput(Throughput::Elements((tq * tk * inner) as u64));
        g.bench_function(BenchmarkId::new("scalar-twin", &id), |b| {
            b.iter(|| att.run_scalar(black_box(&mut out)))
        });
        for isa in isas() {
            g.bench_function(BenchmarkId::new(isa.name(), &id), |b| {
                b.iter(|| att.run_with(isa, black_box(&mut out)))
            });
        }
    }
    g.finish();
}

/// Per-row activation quantisation, run before every int8 product.
fn quantize(c: &mut Criterion) {
    let mut g = c.benchmark_group("quantize");
    for (m, k) in [(1usize, 256usize), (128, 256), (128, 1024)] {
        let x = fill(m * k, 14);
        g.throughput(Throughput::Elements((m * k) as u64));
        g.bench_function(format!("activations/m{m}/k{k}"), |b| {
            b.iter(|| int8::quantize_activations(black_box(&x), m, k, 0))
        });
    }
    g.finish();
}

/// The small row ops per level (pulp backends; `scalar` is the plain twin), at
/// the default model's shapes (t5-efficient-tiny: d_model 256, d_ff 1024): a
/// 128-token prefill (W3) and the 32128-entry vocabulary.
fn row_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    let (m, d, ff, vocab) = (128usize, 256usize, 1024usize, 32128usize);
    let x = fill(m * d, 21);
    let w = fill(d, 22);
    let gate = fill(m * ff, 23);
    let up = fill(m * ff, 24);
    let logits = fill(vocab, 25);
    for isa in isas() {
        let mut out = vec![0.0f32; m * d];
        g.throughput(Throughput::Elements((m * d) as u64));
        g.bench_function(format!("rms_norm/{isa}/m{m}xd{d}"), |b| {
            b.iter(|| ops::rms_norm_rows_with(isa, black_box(&x), &w, 1e-6, &mut out))
        });
        g.bench_function(format!("add/{isa}/m{m}xd{d}"), |b| {
            b.iter(|| ops::add_inplace_with(isa, &mut out, black_box(&x)))
        });
        g.throughput(Throughput::Elements((m * ff) as u64));
        // ReLU is idempotent: in place, no copy per iteration (the default
        // model's ungated FFN).
        let mut h = gate.clone();
        g.bench_function(format!("relu/{isa}/m{m}xff{ff}"), |b| {
            b.iter(|| ops::activate_inplace_with(isa, Activation::Relu, black_box(&mut h)))
        });
        for act in [Activation::Relu, Activation::GeluNew, Activation::GeluErf] {
            let mut h = gate.clone();
            g.bench_function(format!("gated_{act:?}/{isa}/m{m}xff{ff}"), |b| {
                b.iter(|| {
                    h.copy_from_slice(&gate);
                    ops::gated_inplace_with(isa, act, &mut h, black_box(&up))
                })
            });
        }
        g.throughput(Throughput::Elements(vocab as u64));
        g.bench_function(format!("argmax/{isa}/{vocab}"), |b| {
            b.iter(|| ops::argmax_with(isa, black_box(&logits)))
        });
    }
    g.finish();
}

/// Validating untrusted packed int8 parts touches every byte once at load time.
fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    let (n, k) = (32128, 256);
    let p = PackedInt8::quantize(&fill(n * k, 9), n, k, 0).expect("quantize");
    let v = p.view();
    g.throughput(Throughput::Bytes(v.data().len() as u64));
    g.bench_function("int8_from_parts/32128x256", |b| {
        b.iter(|| {
            int8::Int8View::from_parts(
                n,
                k,
                0,
                black_box(v.data()),
                v.scales(),
                v.row_sums(),
                v.err_norms(),
            )
            .is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, gemv, prefill, invariant, attention, quantize, row_ops, load);

/// This binary is an application of the kernels, so it reads the knobs
/// kernels/BENCH.md varies itself (the kernels read no environment; t5edge
/// does the same in `src/runtime.rs`): `T5EDGE_POOL`, `T5EDGE_THREADS`,
/// `T5EDGE_SPIN_US`, `T5EDGE_PAR_MIN_MACS`.
fn configure_from_env() {
    use t5edge_kernels::{par, pool};
    let var = |k: &str| std::env::var(k).ok().filter(|s| !s.trim().is_empty());
    let num = |k: &str| {
        var(k).map(|s| {
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{k}={s:?}: not a number"))
        })
    };
    if let Some(s) = var("T5EDGE_POOL") {
        pool::set_backend(pool::Backend::parse(&s).expect("T5EDGE_POOL: rayon or spin"));
    }
    let d = pool::SpinConfig::default();
    pool::configure_spin(pool::SpinConfig {
        threads: num("T5EDGE_THREADS").map(|n| n as usize),
        spin: num("T5EDGE_SPIN_US").map_or(d.spin, std::time::Duration::from_micros),
        ..d
    });
    if let Some(n) = num("T5EDGE_PAR_MIN_MACS") {
        par::set_min_macs(n as usize);
    }
}

fn main() {
    configure_from_env();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
