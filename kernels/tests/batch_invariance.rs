//! Batch invariance: a row's output bits are those it gets alone, whatever
//! other rows share the call and however many, for every weight format and
//! every ISA level. A server that lets requests join and leave a running
//! decode batch relies on this for a request's answer to equal the command
//! line's for the same request (docs/SERVE.md).
//!
//! The float formats promise it on their `linear_invariant` path (always the
//! GEMV kernels; at the AVX-512 levels, on `linear` too, but for bf16
//! products on AMX tiles); int8 promises it everywhere (per-row activation scales and
//! exact integer dot products); the row ops work row by row.

mod common;

use common::*;
use half::{bf16, f16};
use proptest::prelude::*;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::{bf16 as lbf16, f16 as lf16, f32 as lf32, ops, Isa};

/// A batch of `m` rows holding `row` at position `at`, the others random:
/// m crosses the f32 GEMM threshold (8), the f16 one (32) and the int8 row
/// blocks (4, 8).
fn batch() -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    (1usize..=40, 1usize..=70, 1usize..=300, any::<u64>())
        .prop_flat_map(|(m, n, k, seed)| (Just(m), 0..m, Just(n), Just(k), Just(seed)))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `f(x, m, y)`: a linear layer over `m` rows of `x`.
type Product<'a> = dyn Fn(&[f32], usize, &mut [f32]) + 'a;

/// Row `at` of the batch's output and the same row computed alone.
fn row_in_batch_and_alone(
    m: usize,
    at: usize,
    n: usize,
    k: usize,
    x: &[f32],
    f: &Product<'_>,
) -> (Vec<u32>, Vec<u32>) {
    let mut y = vec![f32::NAN; m * n];
    f(x, m, &mut y);
    let mut alone = vec![f32::NAN; n];
    f(&x[at * k..(at + 1) * k], 1, &mut alone);
    (bits(&y[at * n..(at + 1) * n]), bits(&alone))
}

/// The whole batch through `invariant` and through `free` (the format's
/// `linear_invariant_with` and `linear_with` at one level): the bits of each.
fn both_paths(
    m: usize,
    n: usize,
    x: &[f32],
    invariant: &Product<'_>,
    free: &Product<'_>,
) -> (Vec<u32>, Vec<u32>) {
    let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
    invariant(x, m, &mut a);
    free(x, m, &mut b);
    (bits(&a), bits(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn f32_rows_do_not_depend_on_the_batch(
        (m, at, n, k, seed) in batch(), fx in fill_strategy(), fw in fill_strategy()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w = matrix(&mut rng, fw, n, k, 1e12);
        for isa in isas() {
            let f = |x: &[f32], m: usize, y: &mut [f32]| {
                lf32::linear_invariant_with(isa, x, m, k, &w, n, y)
            };
            let (in_batch, alone) = row_in_batch_and_alone(m, at, n, k, &x, &f);
            prop_assert_eq!(&in_batch, &alone, "{} m={} row {}", isa, m, at);
            // Alone, the invariant path is the plain one (a batch of one).
            let mut plain = vec![f32::NAN; n];
            lf32::linear_with(isa, &x[at * k..(at + 1) * k], 1, k, &w, n, &mut plain);
            prop_assert_eq!(&alone, &bits(&plain), "{}", isa);
            if isa.has_avx512() {
                // At the AVX-512 levels the GEMV is the prefill kernel: the
                // plain path gives the batch the same bits.
                let plain = |x: &[f32], m: usize, y: &mut [f32]| lf32::linear_with(isa, x, m, k, &w, n, y);
                let (inv, free) = both_paths(m, n, &x, &f, &plain);
                prop_assert_eq!(inv, free, "{} m={}", isa, m);
            }
        }
    }

    #[test]
    fn f16_rows_do_not_depend_on_the_batch(
        (m, at, n, k, seed) in batch(), fx in fill_strategy(), fw in fill_strategy()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 6e4);
        let w: Vec<f16> = matrix(&mut rng, fw, n, k, 6e4)
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        for isa in isas() {
            let f = |x: &[f32], m: usize, y: &mut [f32]| {
                lf16::linear_invariant_with(isa, x, m, k, &w, n, y)
            };
            let (in_batch, alone) = row_in_batch_and_alone(m, at, n, k, &x, &f);
            prop_assert_eq!(&in_batch, &alone, "{} m={} row {}", isa, m, at);
            let mut plain = vec![f32::NAN; n];
            lf16::linear_with(isa, &x[at * k..(at + 1) * k], 1, k, &w, n, &mut plain);
            prop_assert_eq!(&alone, &bits(&plain), "{}", isa);
            if isa.has_avx512() {
                // At the AVX-512 levels the GEMV is the prefill kernel: the
                // plain path gives the batch the same bits.
                let plain = |x: &[f32], m: usize, y: &mut [f32]| lf16::linear_with(isa, x, m, k, &w, n, y);
                let (inv, free) = both_paths(m, n, &x, &f, &plain);
                prop_assert_eq!(inv, free, "{} m={}", isa, m);
            }
        }
    }

    #[test]
    fn bf16_rows_do_not_depend_on_the_batch(
        (m, at, n, k, seed) in batch(), fx in fill_strategy(), fw in fill_strategy()
    ) {
        // Past the prefill threshold (32) a CPU with AVX-512 BF16 would take
        // vdpbf16ps in `linear`; the invariant path never does.
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w: Vec<bf16> = matrix(&mut rng, fw, n, k, 1e12)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        for isa in isas() {
            let f = |x: &[f32], m: usize, y: &mut [f32]| {
                lbf16::linear_invariant_with(isa, x, m, k, &w, n, y)
            };
            let (in_batch, alone) = row_in_batch_and_alone(m, at, n, k, &x, &f);
            prop_assert_eq!(&in_batch, &alone, "{} m={} row {}", isa, m, at);
            let mut plain = vec![f32::NAN; n];
            lbf16::linear_with(isa, &x[at * k..(at + 1) * k], 1, k, &w, n, &mut plain);
            prop_assert_eq!(&alone, &bits(&plain), "{}", isa);
            if isa.has_avx512() && !lbf16::amx_takes(isa, m, k, n) {
                // At the AVX-512 levels the GEMV is the prefill kernel: the
                // plain path gives the batch the same bits (except on the
                // AMX tiles, which sum in another order).
                let plain = |x: &[f32], m: usize, y: &mut [f32]| lbf16::linear_with(isa, x, m, k, &w, n, y);
                let (inv, free) = both_paths(m, n, &x, &f, &plain);
                prop_assert_eq!(inv, free, "{} m={}", isa, m);
            }
        }
    }

    #[test]
    fn int8_rows_do_not_depend_on_the_batch(
        (m, at, n, k, seed) in batch(), gs in prop_oneof![Just(0usize), Just(4), Just(32)],
        fx in fill_strategy(), fw in fill_strategy()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w = matrix(&mut rng, fw, n, k, 1e12);
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        let v = p.view();
        for isa in isas() {
            // The plain entry point: int8 is invariant on every path.
            let f = |x: &[f32], m: usize, y: &mut [f32]| int8::linear_with(isa, x, m, k, &v, y);
            let (in_batch, alone) = row_in_batch_and_alone(m, at, n, k, &x, &f);
            prop_assert_eq!(&in_batch, &alone, "{} m={} row {}", isa, m, at);
        }
    }

    #[test]
    fn rms_norm_rows_do_not_depend_on_the_batch(
        (m, at, _n, d, seed) in batch(), fx in fill_strategy()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, d, 1e6);
        let w = matrix(&mut rng, Fill::Uniform, 1, d, 1.0);
        for isa in isas() {
            let mut y = vec![f32::NAN; m * d];
            ops::rms_norm_rows_with(isa, &x, &w, 1e-6, &mut y);
            let mut alone = vec![f32::NAN; d];
            ops::rms_norm_rows_with(isa, &x[at * d..(at + 1) * d], &w, 1e-6, &mut alone);
            prop_assert_eq!(bits(&y[at * d..(at + 1) * d]), bits(&alone), "{}", isa);
        }
    }
}

/// Products too large for their activations to stay in the L2 (past 1 MB)
/// run in passes of rows and, past 1024 inputs, in steps of inputs with
/// each chain kept between steps (`f32::avx512`, `f32::avx2`): each row
/// gets the bits it gets in a product of 10 rows, which takes the whole
/// rows, for f32, f16 and bf16 weights at every level with a prefill kernel
/// of ours; and at the AVX-512 levels, where `linear` promises every row
/// the bits it gets alone, those. The shapes have ragged rows (a pass of
/// 6; 1030 = 16 x 64 + 6 = 17 x 60 + 10), a ragged last step (4100 = 4 x
/// 1024 + 4) and ragged columns (n = 9, 10).
#[test]
fn large_products_in_passes_and_steps_keep_each_rows_bits() {
    for (m, k, n) in [(70usize, 4100usize, 9usize), (1030, 260, 10)] {
        let mut rng = Rng(m as u64 * 7 + k as u64);
        let x = matrix(&mut rng, Fill::Wide, m, k, 1.0);
        let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let ours = |i: &Isa| i.has_avx512() || *i == Isa::Avx2;
        for isa in isas().into_iter().filter(ours) {
            let products: [(&str, &Product<'_>); 3] = [
                ("f32", &|x, m, y| lf32::linear_with(isa, x, m, k, &w, n, y)),
                ("f16", &|x, m, y| lf16::linear_with(isa, x, m, k, &wh, n, y)),
                ("bf16", &|x, m, y| {
                    lbf16::linear_with(isa, x, m, k, &wb, n, y)
                }),
            ];
            for (name, f) in products {
                let mut y = vec![f32::NAN; m * n];
                f(&x, m, &mut y);
                let mut tens = vec![f32::NAN; m * n];
                for r0 in (0..m).step_by(10) {
                    f(
                        &x[r0 * k..(r0 + 10) * k],
                        10,
                        &mut tens[r0 * n..(r0 + 10) * n],
                    );
                }
                assert_eq!(bits(&y), bits(&tens), "{name} {isa} m={m} k={k}: in tens");
                if !isa.has_avx512() {
                    continue;
                }
                for at in 0..m {
                    let mut alone = vec![f32::NAN; n];
                    f(&x[at * k..(at + 1) * k], 1, &mut alone);
                    assert_eq!(
                        bits(&y[at * n..(at + 1) * n]),
                        bits(&alone),
                        "{name} {isa} m={m} k={k} row {at}"
                    );
                }
            }
        }
    }
}

/// The thread count does not matter either: a batch split across workers
/// gives each row the bits of the row alone on one thread.
#[test]
fn f32_rows_do_not_depend_on_the_thread_count() {
    let (m, n, k) = (24, 300, 96);
    let mut rng = Rng(7);
    let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let alone: Vec<Vec<u32>> = (0..m)
        .map(|i| {
            let mut y = vec![0.0; n];
            with_threads(1, || {
                lf32::linear_invariant(&x[i * k..(i + 1) * k], 1, k, &w, n, &mut y)
            });
            bits(&y)
        })
        .collect();
    for threads in [1, 2, 4] {
        let mut y = vec![0.0; m * n];
        with_threads(threads, || lf32::linear_invariant(&x, m, k, &w, n, &mut y));
        for (i, a) in alone.iter().enumerate() {
            assert_eq!(
                &bits(&y[i * n..(i + 1) * n]),
                a,
                "{threads} threads, row {i}"
            );
        }
    }
}
