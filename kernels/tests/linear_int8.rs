//! int8 linear: every ISA level against the f64 reference within a derived error
//! budget, bit-identity of every SIMD level with the scalar twin, determinism
//! across thread counts, and validation of untrusted packed parts.

mod common;

use common::*;
use proptest::prelude::*;
use t5edge_kernels::int8::{self, Int8View, PackedInt8};
use t5edge_kernels::Isa;

/// Round-to-nearest quantisation is off by at most half a step: for a value v
/// with scale s, |v - s * round(v / s)| <= s / 2.
const INT8_HALF_STEP: f64 = 0.5;
/// The step is computed in f32 (`s = amax / 127`, `q = round(v * (127 / amax))`),
/// so the half step can be exceeded by a few f32 ulps of |v / s| <= 127:
/// 127 * 3 * 2^-24 < 1e-4 relative.
const INT8_STEP_SLACK: f64 = 1e-4;
/// The same for 16-bit activations, whose `|v / s|` reaches `L <= 16256`:
/// 16256 * 3 * 2^-24 < 3e-3 of a step.
const A16_STEP_SLACK: f64 = 3e-3;
/// f32 unit roundoff, for the epilogue: one rounding each for `acc as f32`,
/// `* s_x`, `* s_w` and one per group addition.
const F32_UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// The error budget of output (i, j), derived from the scales actually used.
///
/// With x = x^ + d (|d| <= s_x/2) and w = w^ + e (|e| <= s_w/2) per element,
/// x w - x^ w^ = x e + d w - d e, so
/// |y - y_ref| <= sum_t (|x_t| s_w/2 + |w_t| s_x/2 + s_x s_w/4)   [quantisation]
///             + (groups + 4) u sum_t (|x_t| + s_x)(|w_t| + s_w)  [f32 epilogue]
/// where the integer dot product itself is exact.
fn int8_budget(x: &[f32], w: &[f32], sx: &[f64], sw: &[f64], gs: usize) -> f64 {
    budget(x, w, sx, sw, gs, INT8_STEP_SLACK)
}

/// [`int8_budget`] with the activations' half step widened by `x_slack`
/// (the weights' stays `INT8_STEP_SLACK`).
fn budget(x: &[f32], w: &[f32], sx: &[f64], sw: &[f64], gs: usize, x_slack: f64) -> f64 {
    let k = x.len();
    let groups = sx.len();
    let h = INT8_HALF_STEP * (1.0 + INT8_STEP_SLACK);
    let hx = INT8_HALF_STEP * (1.0 + x_slack);
    let (mut quant, mut mag) = (0.0f64, 0.0f64);
    for t in 0..k {
        let g = t.checked_div(gs).unwrap_or(0);
        let (xa, wa) = (x[t].abs() as f64, w[t].abs() as f64);
        quant += xa * h * sw[g] + wa * hx * sx[g] + hx * sx[g] * h * sw[g];
        mag += (xa + sx[g]) * (wa + sw[g]);
    }
    quant + (groups as f64 + 4.0) * F32_UNIT_ROUNDOFF * mag + 1e-30
}

/// W8A16 without input scales.
fn run16(isa: Isa, x: &[f32], m: usize, k: usize, v: &Int8View<'_>) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * v.n()];
    int8::linear_a16_with(isa, x, m, k, v, &[], &mut y);
    y
}

fn group_size() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 1 => Just(4), 1 => Just(8), 1 => Just(32), 1 => Just(64), 1 => Just(128)]
}

/// Shapes the AMX tiles take (`int8::amx_takes`): 16 rows or more, groups
/// of whole 64-input steps (k a multiple of 64 with one group, or group
/// sizes of 64 and 128 with any k that is a multiple of them).
fn tile_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        16usize..=50,
        1usize..=5,
        prop_oneof![Just(0usize), Just(64), Just(128)],
    )
        .prop_map(|(m, steps, gs)| (m, steps * gs.max(64), gs))
}

fn run(isa: Isa, x: &[f32], m: usize, k: usize, v: &Int8View<'_>) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * v.n()];
    int8::linear_with(isa, x, m, k, v, &mut y);
    y
}

/// ReLU as the engine defines it (`ops::relu`): `x` above 0, else +0.0
/// (for -0.0 and NaN too).
fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn int8_linear_matches_reference_and_scalar_bits(
        m in 1usize..=9, n in 1usize..=70, k in 1usize..=300, gs in group_size(),
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e6);
        let w = matrix(&mut rng, fw, n, k, 1e6);
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        let v = p.view();
        let groups = v.groups();
        let gsz = if gs == 0 { k } else { gs };
        let r = t5edge_kernels::reference::linear(&x, m, k, &w, n);
        let scalar = run(Isa::Scalar, &x, m, k, &v);
        for isa in isas() {
            let y = if isa == Isa::Scalar { scalar.clone() } else { run(isa, &x, m, k, &v) };
            // Integer math is exact and the epilogue is the same f32 sequence,
            // so every level must reproduce the scalar twin exactly.
            for t in 0..m * n {
                prop_assert_eq!(y[t].to_bits(), scalar[t].to_bits(),
                    "{} vs scalar at out {}: {} vs {} (m={} n={} k={} gs={})", isa, t, y[t], scalar[t], m, n, k, gs);
            }
        }
        // The fused residual add is exactly linear followed by y += result.
        let resid = matrix(&mut rng, Fill::Uniform, m, n, 10.0);
        for isa in isas() {
            let mut y = resid.clone();
            int8::linear_add_with(isa, &x, m, k, &v, &mut y);
            for t in 0..m * n {
                prop_assert_eq!(y[t].to_bits(), (resid[t] + scalar[t]).to_bits(), "{} linear_add", isa);
            }
        }
        // The fused ReLU is exactly linear followed by a ReLU.
        for isa in isas() {
            let mut y = vec![f32::NAN; m * n];
            int8::linear_relu_with(isa, &x, m, k, &v, &mut y);
            for t in 0..m * n {
                prop_assert_eq!(y[t].to_bits(), relu(scalar[t]).to_bits(), "{} linear_relu", isa);
            }
        }
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let sx: Vec<f64> = (0..groups).map(|g| {
                let (a, b) = (g * gsz, ((g + 1) * gsz).min(k));
                xr[a..b].iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / 127.0
            }).collect();
            for j in 0..n {
                let sw: Vec<f64> = (0..groups).map(|g| v.scales()[g * v.padded_n() + j] as f64).collect();
                let budget = int8_budget(xr, &w[j * k..(j + 1) * k], &sx, &sw, gs);
                let err = (scalar[i * n + j] as f64 - r[i * n + j]).abs();
                prop_assert!(err <= budget,
                    "out ({i},{j}): {} vs {} err {err:e} budget {budget:e} (m={m} n={n} k={k} gs={gs})",
                    scalar[i * n + j], r[i * n + j]);
            }
        }
    }

    /// The AMX tiles (where this CPU has them) on the shapes they take, int8
    /// and W8A16, plain and accumulating: the scalar twin's bits (the sums
    /// are exact integers; the epilogue is every level's). Error budget:
    /// bit-identical. Skipped, saying so, without AMX.
    #[test]
    fn amx_tiles_give_the_scalar_bits(
        (m, k, gs) in tile_shape(), n in 1usize..=70,
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>(), equalized in any::<bool>()
    ) {
        if !Isa::Amx.supported() {
            return Ok(());
        }
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e6);
        let w = matrix(&mut rng, fw, n, k, 1e6);
        let (p, t) = if equalized {
            PackedInt8::quantize_a16(&w, n, k, gs).unwrap()
        } else {
            (PackedInt8::quantize(&w, n, k, gs).unwrap(), Vec::new())
        };
        let v = p.view();
        prop_assert!(int8::amx_takes(Isa::Amx, m, &v), "m={} k={} gs={}", m, k, gs);
        let resid = matrix(&mut rng, Fill::Uniform, m, n, 10.0);
        let bits = |y: &[f32]| y.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for a16 in [false, true] {
            for ep in ["store", "add", "relu"] {
                let product = |isa: Isa| {
                    let mut y = if ep == "add" { resid.clone() } else { vec![f32::NAN; m * n] };
                    match (a16, ep) {
                        (false, "store") => int8::linear_with(isa, &x, m, k, &v, &mut y),
                        (false, "add") => int8::linear_add_with(isa, &x, m, k, &v, &mut y),
                        (false, _) => int8::linear_relu_with(isa, &x, m, k, &v, &mut y),
                        (true, "store") => int8::linear_a16_with(isa, &x, m, k, &v, &t, &mut y),
                        (true, "add") => int8::linear_a16_add_with(isa, &x, m, k, &v, &t, &mut y),
                        (true, _) => return None,
                    }
                    Some(bits(&y))
                };
                if let (Some(amx), Some(scalar)) = (product(Isa::Amx), product(Isa::Scalar)) {
                    prop_assert!(amx == scalar, "a16={} {} m={} n={} k={} gs={}", a16, ep, m, n, k, gs);
                }
            }
        }
    }

    /// W8A16 (`Activations::Int16`): every level gives the scalar twin's
    /// bits (the NEON halves and the AVX2 pairs are exact integer sums too),
    /// within the int8 budget with the activation step `max|x| / L`.
    #[test]
    fn a16_linear_matches_reference_and_scalar_bits(
        m in 1usize..=9, n in 1usize..=70, k in 1usize..=300, gs in group_size(),
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>(), equalized in any::<bool>()
    ) {
        let mut rng = Rng(seed);
        let x0 = matrix(&mut rng, fx, m, k, 1e6);
        let w0 = matrix(&mut rng, fw, n, k, 1e6);
        // Equalized: the weights' columns divided by their input scales and
        // the inputs multiplied by them (as the kernel does, in f32); the
        // budget and the reference are over those operands.
        let (p, t) = if equalized {
            PackedInt8::quantize_a16(&w0, n, k, gs).unwrap()
        } else {
            (PackedInt8::quantize(&w0, n, k, gs).unwrap(), Vec::new())
        };
        let (x, w) = if equalized {
            let tk = |i: usize| t[i % k];
            let x: Vec<f32> = x0.iter().enumerate().map(|(i, &v)| v * tk(i)).collect();
            let w: Vec<f32> = w0.iter().enumerate().map(|(i, &v)| v / tk(i)).collect();
            (x, w)
        } else {
            (x0.clone(), w0.clone())
        };
        let v = p.view();
        let groups = v.groups();
        let gsz = if gs == 0 { k } else { gs };
        let limit = int8::a16_limit(v.padded_k()) as f64;
        let r = t5edge_kernels::reference::linear(&x, m, k, &w, n);
        let product = |isa: Isa| {
            let mut y = vec![f32::NAN; m * n];
            int8::linear_a16_with(isa, &x0, m, k, &v, &t, &mut y);
            y
        };
        let scalar = product(Isa::Scalar);
        let resid = matrix(&mut rng, Fill::Uniform, m, n, 10.0);
        for isa in isas() {
            let y = product(isa);
            for t in 0..m * n {
                prop_assert_eq!(y[t].to_bits(), scalar[t].to_bits(),
                    "{} vs scalar at out {}: {} vs {} (m={} n={} k={} gs={})", isa, t, y[t], scalar[t], m, n, k, gs);
            }
            // The fused residual add is exactly the product, then y += it.
            let mut y = resid.clone();
            int8::linear_a16_add_with(isa, &x0, m, k, &v, &t, &mut y);
            for i in 0..m * n {
                prop_assert_eq!(y[i].to_bits(), (resid[i] + scalar[i]).to_bits(), "{} linear_a16_add", isa);
            }
        }
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let sx: Vec<f64> = (0..groups).map(|g| {
                let (a, b) = (g * gsz, ((g + 1) * gsz).min(k));
                xr[a..b].iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / limit
            }).collect();
            for j in 0..n {
                let sw: Vec<f64> = (0..groups).map(|g| v.scales()[g * v.padded_n() + j] as f64).collect();
                let budget = budget(xr, &w[j * k..(j + 1) * k], &sx, &sw, gs, A16_STEP_SLACK);
                let err = (scalar[i * n + j] as f64 - r[i * n + j]).abs();
                prop_assert!(err <= budget,
                    "out ({i},{j}): {} vs {} err {err:e} budget {budget:e} (m={m} n={n} k={k} gs={gs})",
                    scalar[i * n + j], r[i * n + j]);
            }
        }
    }

    /// The input scales are the powers of two at or above each column's
    /// largest weight: every scaled column tops out in (1/2, 1], and the
    /// file check accepts them.
    #[test]
    fn a16_input_scales_equalize_the_columns(
        n in 1usize..=20, k in 1usize..=60, fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let mut w = matrix(&mut rng, fw, n, k, 1e6);
        // An all-zero column, and one far below the rest.
        let (z, small) = (rng.below(k), rng.below(k));
        for j in 0..n {
            w[j * k + small] *= 1e-6;
            w[j * k + z] = 0.0;
        }
        let (_, t) = PackedInt8::quantize_a16(&w, n, k, 0).unwrap();
        int8::check_input_scales(&t, k).unwrap();
        for c in 0..k {
            let colmax = (0..n).fold(0f32, |a, j| a.max(w[j * k + c].abs()));
            if colmax == 0.0 {
                prop_assert_eq!(t[c], 1.0);
            } else {
                prop_assert!(t[c] >= colmax && t[c] / 2.0 < colmax, "col {}: {} for {}", c, t[c], colmax);
            }
        }
    }

    /// Activation quantisation is vectorised per level; every level must give
    /// the scalar twin's bytes and scales exactly, including for NaN, infinite
    /// and -0.0 inputs, any group size and every tail length.
    #[test]
    fn quantize_activations_is_bit_identical_across_levels(
        m in 1usize..=5, k in 1usize..=300, gs in group_size(), fx in fill_strategy(),
        specials in 0usize..4, scaled in any::<bool>(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let mut x = matrix(&mut rng, fx, m, k, 1e6);
        for _ in 0..specials * k / 8 {
            let at = rng.below(m * k);
            x[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 127.5, -0.5][rng.below(6)];
        }
        let (kp, groups) = (int8::padded_k(k), int8::group_count(k, gs));
        let quant = |isa: Isa| {
            // Stale contents must not leak through: start from garbage.
            let (mut q, mut s) = (vec![0x55i8; m * kp], vec![f32::NAN; m * groups]);
            int8::quantize_activations_with(isa, &x, m, k, gs, &mut q, &mut s);
            (q, s.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
        };
        let want = quant(Isa::Scalar);
        for isa in isas() {
            prop_assert_eq!(&quant(isa), &want, "{} (m={} k={} gs={})", isa, m, k, gs);
        }
        let (q, s) = int8::quantize_activations(&x, m, k, gs);
        prop_assert_eq!(q, want.0);
        prop_assert_eq!(s.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), want.1);
        // The 16-bit form likewise, and within its limit, with or without
        // input scales (which AVX-512 applies as it reads).
        let in_scales: Vec<f32> = match scaled {
            true => (0..k).map(|_| 2.0 + 1.5 * rng.unit()).collect(),
            false => Vec::new(),
        };
        let quant16 = |isa: Isa| {
            let (mut q, mut s) = (vec![0x5555i16; m * kp], vec![f32::NAN; m * groups]);
            int8::quantize_activations16_with(isa, &x, m, k, gs, &in_scales, &mut q, &mut s);
            (q, s.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
        };
        let want16 = quant16(Isa::Scalar);
        let limit = int8::a16_limit(kp) as i16;
        prop_assert!(want16.0.iter().all(|v| v.abs() <= limit));
        for i in 0..m {
            prop_assert!(want16.0[i * kp + k..(i + 1) * kp].iter().all(|&v| v == 0));
        }
        for isa in isas() {
            prop_assert_eq!(&quant16(isa), &want16, "{} a16 (m={} k={} gs={})", isa, m, k, gs);
        }
    }

    #[test]
    fn quantize_error_norms_bound_the_dequantised_rows(
        n in 1usize..=20, k in 1usize..=200, gs in group_size(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let w = matrix(&mut rng, fw, n, k, 1e6);
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        let v = p.view();
        for j in 0..n {
            let d = v.dequantize_row(j);
            prop_assert_eq!(d.len(), k);
            // Value by value, straight from the layout's index formula.
            let g = |t: usize| t.checked_div(gs).unwrap_or(0);
            for (t, &dt) in d.iter().enumerate() {
                let q = v.data()[int8::packed_index(j, t, v.padded_k())] as f32;
                prop_assert_eq!(dt, v.scales()[g(t) * v.padded_n() + j] * q, "row {} col {}", j, t);
            }
            let (mut e2, mut scale2) = (0.0f64, 0.0f64);
            for t in 0..k {
                let e = w[j * k + t] as f64 - d[t] as f64;
                e2 += e * e;
                scale2 += (d[t] as f64).powi(2);
            }
            // err_norms is against s * q in exact arithmetic; dequantize_row rounds
            // s * q to f32, which may move each value by half an f32 ulp.
            let norm = v.row_error_norm(j) as f64;
            prop_assert!(e2.sqrt() <= norm + F32_UNIT_ROUNDOFF * scale2.sqrt() * 1.01 + 1e-30);
            // And it is at most half a step per element.
            let smax = (0..v.groups()).map(|g| v.scales()[g * v.padded_n() + j] as f64).fold(0.0, f64::max);
            prop_assert!(norm <= (k as f64).sqrt() * smax * INT8_HALF_STEP * (1.0 + INT8_STEP_SLACK) + 1e-30);
        }
    }

    /// Parts from a file are untrusted: any corruption must give Ok or Err, never a
    /// panic, and whatever is accepted must run.
    #[test]
    fn from_parts_never_panics_on_corrupt_parts(
        n in 1usize..=40, k in 1usize..=80, gs in group_size(), seed in any::<u64>(),
        what in 0usize..8, pos in any::<usize>(), val in any::<i32>()
    ) {
        let mut rng = Rng(seed);
        let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        let v = p.view();
        let (mut data, mut scales, mut sums, mut norms) =
            (v.data().to_vec(), v.scales().to_vec(), v.row_sums().to_vec(), v.err_norms().to_vec());
        let (mut nn, mut kk, mut gg) = (n, k, gs);
        match what {
            0 => { let l = data.len(); data.truncate(pos % l); }
            1 => { let l = data.len(); data[pos % l] = val as i8; }
            2 => { let l = scales.len(); scales[pos % l] = f32::from_bits(val as u32); }
            3 => { let l = sums.len(); sums[pos % l] = val; }
            4 => { let l = norms.len(); norms.truncate(pos % l); }
            5 => nn = if pos % 2 == 0 { pos % 100 } else { usize::MAX - pos % 64 },
            6 => kk = pos % (2 * int8::MAX_K),
            _ => gg = pos % 200,
        }
        if let Ok(v2) = Int8View::from_parts(nn, kk, gg, &data, &scales, &sums, &norms) {
            let x = matrix(&mut rng, Fill::Uniform, 2, kk, 1.0);
            for isa in isas() {
                let _ = run(isa, &x, 2, kk, &v2);
            }
        }
    }
}

#[test]
fn amx_availability_is_reported() {
    if !Isa::Amx.supported() {
        eprintln!(
            "skipped: amx_tiles_give_the_scalar_bits needs AMX-INT8 granted by the OS, which this machine lacks (detected: {})",
            t5edge_kernels::dispatch::features().names().join(", ")
        );
    }
}

#[test]
fn from_parts_accepts_its_own_output_and_rejects_known_corruptions() {
    let (n, k) = (21, 37);
    let mut rng = Rng(3);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let p = PackedInt8::quantize(&w, n, k, 8).unwrap();
    let v = p.view();
    let parts = |d: &[i8], s: &[f32], r: &[i32]| {
        Int8View::from_parts(n, k, 8, d, s, r, v.err_norms()).map(|_| ())
    };
    parts(v.data(), v.scales(), v.row_sums()).unwrap();
    let own = PackedInt8::from_parts(
        n,
        k,
        8,
        v.data().to_vec(),
        v.scales().to_vec(),
        v.row_sums().to_vec(),
        v.err_norms().to_vec(),
    )
    .unwrap();
    assert_eq!(own.view().data(), v.data());

    let mut d = v.data().to_vec();
    let j = int8::packed_index(3, 5, v.padded_k());
    d[j] = -128;
    assert!(parts(&d, v.scales(), v.row_sums())
        .unwrap_err()
        .contains("-128"));
    let mut d = v.data().to_vec();
    d[int8::packed_index(3, k, v.padded_k())] = 1; // K padding
    assert!(parts(&d, v.scales(), v.row_sums()).is_err());
    let mut d = v.data().to_vec();
    d[int8::packed_index(n, 0, v.padded_k())] = 1; // N padding
    assert!(parts(&d, v.scales(), v.row_sums()).is_err());
    let mut r = v.row_sums().to_vec();
    r[0] += 1;
    assert!(parts(v.data(), v.scales(), &r)
        .unwrap_err()
        .contains("row_sums"));
    let mut s = v.scales().to_vec();
    s[1] = f32::NAN;
    assert!(parts(v.data(), &s, v.row_sums()).is_err());
    assert!(parts(&v.data()[1..], v.scales(), v.row_sums()).is_err());
    assert!(
        Int8View::from_parts(n, k, 6, v.data(), v.scales(), v.row_sums(), v.err_norms()).is_err()
    );
    assert!(PackedInt8::quantize(&w, n, k, 3).is_err());
    assert!(PackedInt8::quantize(&w[1..], n, k, 0).is_err());
    assert!(PackedInt8::quantize(&[f32::INFINITY][..], 1, 1, 0).is_err());
    assert!(PackedInt8::quantize(&[0.0f32; 0][..], 0, 0, 0).is_err());
}

/// The bytes that reach the integer units are [-127, 127] on both sides, and a
/// full row of +-127 products is the AVX2 worst case for i16 pair sums; it must
/// still be exact.
#[test]
fn extreme_int8_values_are_exact() {
    let (n, k) = (33, 515);
    let w: Vec<f32> = (0..n * k)
        .map(|t| if (t % k) % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
    let v = p.view();
    for sign in [1.0f32, -1.0] {
        let x: Vec<f32> = (0..2 * k)
            .map(|t| if (t % k) % 3 == 0 { -sign } else { sign })
            .collect();
        let scalar = run(Isa::Scalar, &x, 2, k, &v);
        for isa in isas() {
            assert_eq!(run(isa, &x, 2, k, &v), scalar, "{isa}");
        }
        // Every product is +-1 * 127 * 127 scaled back: y = sign * k exactly.
        let want = sign * k as f32;
        assert!(
            scalar
                .iter()
                .all(|&y| (y - want).abs() <= want.abs() * 1e-6),
            "{scalar:?}"
        );
    }
}

#[test]
fn input_scales_from_a_file_are_checked() {
    int8::check_input_scales(&[1.0, 0.5, 2f32.powi(-126), 2f32.powi(127)], 4).unwrap();
    for (t, needle) in [
        (vec![1.0, 1.0], "2 input scales for k = 3"),
        (vec![1.0, 3.0, 1.0], "input scale 1 is 3"),
        (vec![1.0, 1.0, -2.0], "input scale 2 is -2"),
        (vec![0.0, 1.0, 1.0], "input scale 0 is 0"),
        (vec![1.0, f32::NAN, 1.0], "input scale 1 is NaN"),
        (vec![1.0, 1.0, f32::INFINITY], "input scale 2 is inf"),
        (vec![f32::from_bits(1), 1.0, 1.0], "input scale 0 is"),
    ] {
        let e = int8::check_input_scales(&t, 3).unwrap_err();
        assert!(e.contains(needle), "{t:?}: {e}");
    }
}

/// 16-bit activations at their largest (`L` for the k) against weights at
/// +-127: the i32 sums come within 2% of `i32::MAX`, at a k where `L` is
/// 16256 and at one where the limit shrinks it, and stay exact at every
/// level (a kernel summing in i16, or an `L` past the limit, wraps).
#[test]
fn extreme_a16_values_are_exact() {
    for k in [1040usize, 3001] {
        let n = 17;
        let w: Vec<f32> = (0..n * k)
            .map(|t| if (t % k) % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
        let v = p.view();
        let limit = int8::a16_limit(v.padded_k()) as i64;
        assert!(
            v.padded_k() as i64 * limit * 127 > i32::MAX as i64 * 98 / 100,
            "k={k}"
        );
        for m in [1usize, 3] {
            for sign in [1.0f32, -1.0] {
                let x: Vec<f32> = (0..m * k)
                    .map(|t| if (t % k) % 3 == 0 { -sign } else { sign })
                    .collect();
                let scalar = run16(Isa::Scalar, &x, m, k, &v);
                for isa in isas() {
                    assert_eq!(run16(isa, &x, m, k, &v), scalar, "{isa} k={k} m={m}");
                }
                let want = sign * k as f32;
                assert!(
                    scalar
                        .iter()
                        .all(|&y| (y - want).abs() <= want.abs() * 1e-6),
                    "k={k} m={m}: {:?}",
                    &scalar[..4]
                );
            }
        }
    }
}

/// What 16-bit activations are for: a row with one large outlier (T5's FFN
/// output projection sees such rows). Its int8 scale rounds every ordinary
/// value to a step of `outlier / 127`; at 16 bits the step is 128x finer,
/// and the error falls with it.
#[test]
fn a16_keeps_the_rows_an_outlier_flattens_in_int8() {
    let (n, k) = (64, 1024);
    let mut rng = Rng(11);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let mut x = matrix(&mut rng, Fill::Uniform, 1, k, 1.0);
    x[100] = 300.0;
    let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
    let r = t5edge_kernels::reference::linear(&x, 1, k, &w, n);
    let err = |y: &[f32]| {
        y.iter()
            .zip(&r)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max)
    };
    let (e8, e16) = (
        err(&run(Isa::Scalar, &x, 1, k, &p.view())),
        err(&run16(Isa::Scalar, &x, 1, k, &p.view())),
    );
    // The weights' own rounding stays in both; the activations' share of
    // the int8 error goes.
    assert!(e16 * 8.0 < e8, "int8 activations {e8:e}, 16-bit {e16:e}");
}

/// Quantizing weights runs one task per 16-row tile: the packed parts are
/// the same bytes on every pool and thread count, and the scan that checks a
/// file's parts accepts them.
#[test]
fn weight_quantization_is_identical_across_thread_counts() {
    let (n, k) = (1000, 1100); // n x k above PAR_MIN_MACS; n not a multiple of 16
    let w = matrix(&mut Rng(4), Fill::Uniform, n, k, 3.0);
    for gs in [0usize, 64] {
        let parts = |p: &PackedInt8| {
            let v = p.view();
            let bits = |f: &[f32]| f.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (
                v.data().to_vec(),
                bits(v.scales()),
                v.row_sums().to_vec(),
                bits(v.err_norms()),
            )
        };
        let want_plain = with_threads(1, || parts(&PackedInt8::quantize(&w, n, k, gs).unwrap()));
        for (pool, got) in on_every_pool(|| parts(&PackedInt8::quantize(&w, n, k, gs).unwrap())) {
            assert!(got == want_plain, "gs={gs} {pool}: packed parts differ");
        }
        // A non-finite weight is refused, the first one named, on any pool.
        let mut bad = w.clone();
        bad[700 * k + 5] = f32::INFINITY;
        bad[40 * k + 1000] = f32::NAN;
        for (pool, r) in on_every_pool(|| PackedInt8::quantize(&bad, n, k, gs).map(|_| ())) {
            let want = format!("int8: weight {} is not finite (NaN)", 40 * k + 1000);
            assert_eq!(r, Err(want), "gs={gs} {pool}");
        }
        // Each kind of non-finite value alone, in a row's first group and
        // in its last column, by both entry points (the check rides on the
        // quantization error, which such a row alone makes non-finite).
        for v in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            for at in [700 * k + 5, 123 * k + k - 1] {
                let mut bad = w.clone();
                bad[at] = v;
                let want = Err(format!("int8: weight {at} is not finite ({v})"));
                for (pool, r) in on_every_pool(|| PackedInt8::quantize(&bad, n, k, gs).map(|_| ()))
                {
                    assert_eq!(r, want, "gs={gs} {pool}");
                }
                for (pool, r) in
                    on_every_pool(|| PackedInt8::quantize_a16(&bad, n, k, gs).map(|_| ()))
                {
                    assert_eq!(r, want, "a16 gs={gs} {pool}");
                }
            }
        }
        // W8A16: the input scales are the powers of two at or above each
        // column's largest magnitude, and the weights are those of the
        // divided matrix quantized, on every pool.
        let (_, t) = PackedInt8::quantize_a16(&w, n, k, gs).unwrap();
        for (c, &tc) in t.iter().enumerate() {
            let amax = (0..n).fold(0f32, |a, j| a.max(w[j * k + c].abs()));
            assert!(tc >= amax && tc / 2.0 < amax, "column {c}: {tc} for {amax}");
            assert_eq!(tc.to_bits() & 0x7f_ffff, 0, "column {c}: {tc}");
        }
        let divided: Vec<f32> = w.iter().enumerate().map(|(i, &v)| v / t[i % k]).collect();
        let want = with_threads(1, || {
            parts(&PackedInt8::quantize(&divided, n, k, gs).unwrap())
        });
        for (pool, (p, t2)) in on_every_pool(|| PackedInt8::quantize_a16(&w, n, k, gs).unwrap()) {
            assert!(
                parts(&p) == want && t2 == t,
                "a16 gs={gs} {pool}: packed parts differ"
            );
        }
        // Into a caller's zeroed parts: the same values, by both entry
        // points; parts of the wrong length refused.
        let [d, sc, rs, en] = int8::part_lens(n, k, gs);
        let into = |a16: bool, extra: usize| {
            let (mut data, mut scales) = (vec![0i8; d + extra], vec![0f32; sc]);
            let (mut row_sums, mut err_norms) = (vec![0i32; rs], vec![0f32; en]);
            let parts = int8::Int8PartsMut {
                data: &mut data,
                scales: &mut scales,
                row_sums: &mut row_sums,
                err_norms: &mut err_norms,
            };
            let t = if a16 {
                PackedInt8::quantize_a16_into(&w, n, k, gs, parts)?
            } else {
                PackedInt8::quantize_into(&w, n, k, gs, parts)?;
                Vec::new()
            };
            let bits = |f: &[f32]| f.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            Ok::<_, String>(((data, bits(&scales), row_sums, bits(&err_norms)), t))
        };
        let (plain, _) = into(false, 0).unwrap();
        assert!(plain == want_plain, "gs={gs}: quantize_into differs");
        let (equalized, t_into) = into(true, 0).unwrap();
        assert!(
            equalized == want && t_into == t,
            "gs={gs}: quantize_a16_into differs"
        );
        for a16 in [false, true] {
            let e = into(a16, 16).unwrap_err();
            assert!(e.contains("parts of"), "gs={gs} a16={a16}: {e}");
        }
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        let v = p.view();
        Int8View::from_parts(n, k, gs, v.data(), v.scales(), v.row_sums(), v.err_norms()).unwrap();
        // Every row's values against its own quantisation, done here.
        for j in (0..n).step_by(97) {
            let row = v.dequantize_row(j);
            let g = if gs == 0 { k } else { gs };
            for (c, chunk) in w[j * k..(j + 1) * k].chunks(g).enumerate() {
                let amax = chunk.iter().fold(0f32, |a, x| a.max(x.abs()));
                let s = amax / 127.0;
                for (t, (&x, &y)) in chunk.iter().zip(&row[c * g..]).enumerate() {
                    let want = (x * (127.0 / amax)).round().clamp(-127.0, 127.0) * s;
                    assert!(
                        (y - want).abs() <= s * 1e-3,
                        "row {j} col {} gs={gs}: {y} vs {want}",
                        c * g + t
                    );
                }
            }
        }
    }
}

#[test]
fn int8_linear_is_identical_across_thread_counts() {
    // >= 1M MACs at m = 1: above PAR_MIN_MACS. From 32 rows the activations
    // are quantised in ranges of rows on the pool too; k = 256 lets the AMX
    // tiles take those (their zero padding rows included).
    let n = 4000;
    let mut rng = Rng(9);
    for (k, gs, ms) in [
        (300, 0, &[1usize, 6][..]),
        (300, 64, &[1, 6]),
        (256, 0, &[37]),
    ] {
        let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
        let p = PackedInt8::quantize(&w, n, k, gs).unwrap();
        for &m in ms {
            let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
            let resid = matrix(&mut rng, Fill::Uniform, m, n, 1.0);
            let scalar = run(Isa::Scalar, &x, m, k, &p.view());
            let scalar16 = run16(Isa::Scalar, &x, m, k, &p.view());
            for isa in isas() {
                let a = with_threads(1, || run(isa, &x, m, k, &p.view()));
                assert_eq!(a, scalar, "{isa} m={m} gs={gs}: not the scalar bits");
                let want: Vec<f32> = resid.iter().zip(&a).map(|(r, y)| r + y).collect();
                for (pool, (b, c)) in on_every_pool(|| {
                    // linear_add accumulates into y in place, in each task's block.
                    let mut c = resid.clone();
                    int8::linear_add_with(isa, &x, m, k, &p.view(), &mut c);
                    (run(isa, &x, m, k, &p.view()), c)
                }) {
                    assert_eq!(a, b, "{isa} m={m} gs={gs} {pool}");
                    assert_eq!(c, want, "{isa} m={m} gs={gs} {pool} linear_add");
                }
                let a16 = with_threads(1, || run16(isa, &x, m, k, &p.view()));
                assert_eq!(
                    a16, scalar16,
                    "{isa} m={m} gs={gs}: not the scalar a16 bits"
                );
                for (pool, b) in on_every_pool(|| run16(isa, &x, m, k, &p.view())) {
                    assert_eq!(a16, b, "{isa} m={m} gs={gs} {pool} a16");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Q, K and V share one quantisation of their input: the same bits as
    /// three separate calls, at every level.
    #[test]
    fn linear_many_matches_separate_calls(
        m in 1usize..=12, k in 1usize..=200, gs in group_size(),
        ns in prop::collection::vec(1usize..=40, 1..=3), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
        let packs: Vec<PackedInt8> = ns
            .iter()
            .map(|&n| PackedInt8::quantize(&matrix(&mut rng, Fill::Uniform, n, k, 1.0), n, k, gs).unwrap())
            .collect();
        let views: Vec<Int8View<'_>> = packs.iter().map(|p| p.view()).collect();
        let refs: Vec<&Int8View<'_>> = views.iter().collect();
        for isa in isas() {
            let mut ys: Vec<Vec<f32>> = ns.iter().map(|&n| vec![f32::NAN; m * n]).collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            int8::linear_many_with(isa, &x, m, k, &refs, &mut outs);
            for (v, y) in views.iter().zip(&ys) {
                let one = run(isa, &x, m, k, v);
                prop_assert_eq!(
                    y.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                    one.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                    "{} m={} k={} gs={}", isa, m, k, gs
                );
            }
        }
    }
}

/// Outputs that each go to the pool share one parallel region
/// (`linear_many`): the same bits as separate calls on every pool, with
/// 37 rows on the tiles (k = 256) and widths that leave partial chunks.
#[test]
fn linear_many_in_one_region_matches_separate_calls() {
    let (m, k) = (37, 256);
    let ns = [300usize, 200, 520];
    let mut rng = Rng(21);
    let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
    let packs: Vec<PackedInt8> = ns
        .iter()
        .map(|&n| {
            PackedInt8::quantize(&matrix(&mut rng, Fill::Uniform, n, k, 1.0), n, k, 0).unwrap()
        })
        .collect();
    let views: Vec<Int8View<'_>> = packs.iter().map(|p| p.view()).collect();
    let refs: Vec<&Int8View<'_>> = views.iter().collect();
    for isa in isas() {
        let want: Vec<Vec<f32>> = views
            .iter()
            .map(|v| run(Isa::Scalar, &x, m, k, v))
            .collect();
        for (pool, ys) in on_every_pool(|| {
            let mut ys: Vec<Vec<f32>> = ns.iter().map(|&n| vec![f32::NAN; m * n]).collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            int8::linear_many_with(isa, &x, m, k, &refs, &mut outs);
            ys
        }) {
            for (i, (y, w)) in ys.iter().zip(&want).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(y), bits(w), "{isa} {pool} output {i}");
            }
        }
    }
}

/// A matrix of 1 MB and more is scanned on the pool, a range of tiles a
/// task: it still accepts its own output, and of two corruptions in
/// different ranges reports the first (the earlier tile), on every pool.
#[test]
fn a_large_matrix_scanned_on_the_pool_reports_its_first_problem() {
    let (n, k) = (4100, 300); // 4112 x 320 packed bytes: 1.3 MB, a partial last tile
    let mut rng = Rng(17);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
    let v = p.view();
    assert!(v.data().len() >= 1 << 20);
    let check = |d: &[i8]| {
        on_every_pool(|| {
            Int8View::from_parts(n, k, 0, d, v.scales(), v.row_sums(), v.err_norms())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    for (pool, r) in check(v.data()) {
        assert!(r.is_ok(), "{pool}: {r:?}");
    }
    let mut d = v.data().to_vec();
    d[int8::packed_index(3000, 7, v.padded_k())] = -128;
    d[int8::packed_index(200, 5, v.padded_k())] = -128;
    for (pool, r) in check(&d) {
        let e = r.unwrap_err();
        assert!(e.contains("(200, 5)"), "{pool}: {e}");
    }
    // The N padding of the last tile, the last range's only problem.
    let mut d = v.data().to_vec();
    d[int8::packed_index(n + 3, 1, v.padded_k())] = 1;
    for (pool, r) in check(&d) {
        assert!(r.unwrap_err().contains("padding"), "{pool}");
    }
}

/// Quantizing from f16 or bf16 weights (each row widened as the quantizer
/// reads it, `int8::Source`) gives the packed parts and input scales of
/// the same weights widened to f32 first, by every entry point, on every
/// pool; a non-finite half-precision weight is named by its index.
#[test]
fn half_precision_sources_quantize_as_their_widened_f32() {
    use half::{bf16, f16};
    let (n, k) = (70, 300);
    let mut rng = Rng(21);
    let w = matrix(&mut rng, Fill::Wide, n, k, 1.0);
    let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let widened_b: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
    let widened_h: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
    let bits = |f: &[f32]| f.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let parts = |p: &PackedInt8| {
        let v = p.view();
        (
            v.data().to_vec(),
            bits(v.scales()),
            v.row_sums().to_vec(),
            bits(v.err_norms()),
        )
    };
    for gs in [0usize, 32] {
        type Case<'a> = (&'a str, &'a dyn int8::Source, &'a [f32]);
        let cases: [Case<'_>; 2] = [("bf16", &wb, &widened_b), ("f16", &wh, &widened_h)];
        for (name, src, wide) in cases {
            let want = parts(&PackedInt8::quantize(wide, n, k, gs).unwrap());
            let (wa, wt) = PackedInt8::quantize_a16(wide, n, k, gs).unwrap();
            let want_a16 = (parts(&wa), bits(&wt));
            for (pool, (p, (pa, t))) in on_every_pool(|| {
                (
                    PackedInt8::quantize(src, n, k, gs).unwrap(),
                    PackedInt8::quantize_a16(src, n, k, gs).unwrap(),
                )
            }) {
                assert!(parts(&p) == want, "{name} gs={gs} {pool}: quantize differs");
                assert!(
                    (parts(&pa), bits(&t)) == want_a16,
                    "{name} gs={gs} {pool}: a16 differs"
                );
            }
            let [d, sc, rs, en] = int8::part_lens(n, k, gs);
            let (mut data, mut scales) = (vec![0i8; d], vec![0f32; sc]);
            let (mut row_sums, mut err_norms) = (vec![0i32; rs], vec![0f32; en]);
            let into = int8::Int8PartsMut {
                data: &mut data,
                scales: &mut scales,
                row_sums: &mut row_sums,
                err_norms: &mut err_norms,
            };
            PackedInt8::quantize_into(src, n, k, gs, into).unwrap();
            assert!(
                (data, bits(&scales), row_sums, bits(&err_norms)) == want,
                "{name} gs={gs}: quantize_into differs"
            );
        }
    }
    let mut bad = wb.clone();
    bad[13 * k + 7] = bf16::NAN;
    let e = PackedInt8::quantize(&bad, n, k, 0).map(|_| ()).unwrap_err();
    assert_eq!(
        e,
        format!("int8: weight {} is not finite (NaN)", 13 * k + 7)
    );
}
