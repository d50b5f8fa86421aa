//! Fused attention (blocked SIMD kernels and the per-key scalar twin) against the
//! f64 reference, and thread-count determinism.

mod common;

use common::*;
use proptest::prelude::*;
use t5edge_kernels::attention::{Attention, RelBias};
use t5edge_kernels::reference;

/// f32 unit roundoff.
const F32_UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// Error budget for one output coordinate, as a multiple of max_j |v_j| (the
/// output is a convex combination of the v_j).
///
/// Each score s_j = q·k_j + b is off by at most D = gamma_{d+2} sum|q||k_j|
/// (+ the bias add); computing p_j = exp(s_j - m) adds u|s_j - m| from the
/// subtraction and a few ulps from exp, so each p_j is within a factor
/// e^{+-P} of exact, P = D + u (2 S + 8), S = max |s_j|. Normalising doubles
/// that (2P). Summing tk weighted values and tk weights in f32 (plus the block
/// rescales and the final division) adds (2 tk + d + 16) u.
fn attn_budget(d: usize, tk: usize, score_err: f64, smax: f64) -> f64 {
    let u = F32_UNIT_ROUNDOFF;
    let p = score_err + u * (2.0 * smax + 8.0);
    (2.0 * p).exp_m1() + (2.0 * tk as f64 + d as f64 + 16.0) * u
}

#[derive(Debug, Clone)]
struct Case {
    heads: usize,
    d: usize,
    tq: usize,
    tk: usize,
    bias: bool,
    mask: bool,
    causal: Option<usize>,
    scale: f32,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        prop_oneof![Just(64usize), Just(1), 1usize..=80],
        // Query blocks are 8 rows in register groups of 4 (2 in AVX2's
        // unpacked path, under 16 queries): single queries, partial groups,
        // partial blocks and several blocks; from 16 queries each head's
        // keys and values are packed first, and with fewer heads than twice
        // the threads its queries split in ranges.
        prop_oneof![1usize..=6, Just(8), Just(9), 1usize..=21, 16usize..=70],
        // Key tiles are 64 keys in groups of 4, 8 or 16: tails of each.
        prop_oneof![1usize..=300, Just(64), Just(65), Just(128)],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(None), (0usize..300).prop_map(Some)],
        prop_oneof![Just(0.3f32), Just(1.0), Just(3.0)],
        any::<u64>(),
    )
        .prop_map(|(heads, d, tq, tk, bias, mask, causal, scale, seed)| Case {
            heads,
            d,
            tq,
            tk,
            bias,
            mask,
            causal,
            scale,
            seed,
        })
}

struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Vec<f32>,
    mask: Vec<bool>,
}

fn data(c: &Case) -> Data {
    let mut rng = Rng(c.seed);
    let inner = c.heads * c.d;
    let mut g = |len: usize, s: f32| (0..len).map(|_| rng.unit() * s).collect::<Vec<f32>>();
    let q = g(c.tq * inner, c.scale);
    let k = g(c.tk * inner, c.scale);
    let v = g(c.tk * inner, 1.0);
    let bias = g(c.heads * (c.tq + c.tk - 1), 4.0);
    let mask = (0..c.tk).map(|_| rng.below(4) != 0).collect();
    Data {
        q,
        k,
        v,
        bias,
        mask,
    }
}

fn attention<'a>(c: &Case, dt: &'a Data) -> Attention<'a> {
    Attention {
        heads: c.heads,
        d_kv: c.d,
        tq: c.tq,
        tk: c.tk,
        q: &dt.q,
        k: &dt.k,
        v: &dt.v,
        bias: c.bias.then_some(RelBias {
            values: &dt.bias,
            span: c.tq + c.tk - 1,
            offset: c.tq as isize - 1,
        }),
        key_mask: c.mask.then_some(&dt.mask[..]),
        causal: c.causal,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn attention_matches_reference(c in case()) {
        let dt = data(&c);
        let att = attention(&c, &dt);
        let (inner, d) = (c.heads * c.d, c.d);
        let mut outs = vec![("scalar-twin".to_string(), {
            let mut o = vec![f32::NAN; c.tq * inner];
            att.run_scalar(&mut o);
            o
        })];
        for isa in isas() {
            let mut o = vec![f32::NAN; c.tq * inner];
            att.run_with(isa, &mut o);
            outs.push((isa.to_string(), o));
        }
        for h in 0..c.heads {
            let head = |x: &[f32], rows: usize| -> Vec<f32> {
                (0..rows).flat_map(|r| x[r * inner + h * d..r * inner + (h + 1) * d].to_vec()).collect()
            };
            let (qh, kh, vh) = (head(&dt.q, c.tq), head(&dt.k, c.tk), head(&dt.v, c.tk));
            let span = c.tq + c.tk - 1;
            let bias = |i: usize, j: usize| if c.bias { dt.bias[h * span + j + c.tq - 1 - i] as f64 } else { 0.0 };
            let allowed = |i: usize, j: usize| {
                (!c.mask || dt.mask[j]) && c.causal.is_none_or(|off| j <= i + off)
            };
            let r = reference::attention_head(&qh, &kh, &vh, c.tq, c.tk, d, bias, allowed);
            for i in 0..c.tq {
                // Budget inputs from the reference scores of the visible keys.
                let (mut serr, mut smax, mut vmax) = (0.0f64, 0.0f64, 0.0f64);
                for j in (0..c.tk).filter(|&j| allowed(i, j)) {
                    let (mut s, mut sa) = (bias(i, j), bias(i, j).abs());
                    for t in 0..d {
                        let p = qh[i * d + t] as f64 * kh[j * d + t] as f64;
                        s += p;
                        sa += p.abs();
                    }
                    serr = serr.max((d as f64 + 2.0) * F32_UNIT_ROUNDOFF * sa);
                    smax = smax.max(s.abs());
                    for t in 0..d {
                        vmax = vmax.max((vh[j * d + t] as f64).abs());
                    }
                }
                let budget = attn_budget(d, c.tk, serr, smax) * vmax + 1e-30;
                for (name, o) in &outs {
                    for t in 0..d {
                        let got = o[i * inner + h * d + t] as f64;
                        let err = (got - r[i * d + t]).abs();
                        prop_assert!(err <= budget,
                            "{name} head {h} query {i} dim {t}: {got} vs {} (err {err:e}, budget {budget:e}) {c:?}",
                            r[i * d + t]);
                    }
                }
            }
        }
    }
}

/// Large enough to be split over threads (by query block, and by head for a
/// single query); bits must not depend on the count or the backend.
#[test]
fn attention_is_identical_across_thread_counts() {
    let prefill = Case {
        heads: 8,
        d: 64,
        tq: 48,
        tk: 257,
        bias: true,
        mask: true,
        causal: Some(200),
        scale: 1.0,
        seed: 5,
    };
    let step = Case {
        tq: 1,
        tk: 2100,
        causal: Some(2099),
        seed: 6,
        ..prefill.clone()
    };
    // One head: its queries split in ranges, as many as the threads ask.
    let split = Case {
        heads: 1,
        tq: 100,
        tk: 300,
        causal: None,
        seed: 7,
        ..prefill.clone()
    };
    for c in [prefill, step, split] {
        identical_across_thread_counts(&c);
    }
}

fn identical_across_thread_counts(c: &Case) {
    let dt = data(c);
    let att = attention(c, &dt);
    for isa in isas() {
        let runs = on_every_pool(|| {
            let mut o = vec![0.0f32; c.tq * c.heads * c.d];
            att.run_with(isa, &mut o);
            o.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        });
        for (pool, b) in &runs[1..] {
            assert!(runs[0].1 == *b, "{isa} {pool}");
        }
    }
}

/// A query that sees no key at all yields zeros, not NaN.
#[test]
fn fully_masked_query_is_zero() {
    let c = Case {
        heads: 2,
        d: 5,
        tq: 2,
        tk: 3,
        bias: false,
        mask: true,
        causal: None,
        scale: 1.0,
        seed: 1,
    };
    let mut dt = data(&c);
    dt.mask = vec![false; 3];
    let att = attention(&c, &dt);
    for isa in isas() {
        let mut o = vec![f32::NAN; 20];
        att.run_with(isa, &mut o);
        assert!(o.iter().all(|&v| v == 0.0), "{isa}");
    }
}
