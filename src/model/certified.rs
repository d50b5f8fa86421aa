//! Certified exact greedy: the LM head runs in int8, and every row that could
//! still be the argmax of the full-precision head is re-scored exactly.
//!
//! For hidden state `h` (already scaled as the head wants it) and weight row
//! `w_j`, the int8 kernel returns `ŷ_j`, computed from the quantized
//! activation `x̂` (known exactly) and the quantized row `ŵ_j`. With
//! `e_x = h - x̂` and `e_w = w_j - ŵ_j`:
//!
//! `h·w_j - x̂·ŵ_j = e_x·w_j + x̂·e_w`, so by Cauchy-Schwarz
//! `|h·w_j - ŷ_j| <= ‖e_x‖‖w_j‖ + ‖x̂‖‖e_w‖ + ε_fp`, where `‖e_w‖` is the
//! per-row error norm stored at quantization (rounded up), `‖w_j‖` is
//! precomputed (rounded up), and `ε_fp <= (G+3)·2⁻²⁴·‖x̂‖‖ŵ_j‖` covers the
//! kernel's f32 epilogue (G scale groups, each a product of the exact i32 dot
//! with two scales, summed). Every row whose upper bound reaches the best
//! lower bound is re-scored as an exact f64 dot product of the f32 `h` with the
//! f32 row; rows outside that set provably lose, so the pick is the argmax of
//! the full-precision head (ties to the lowest id, as torch does).
//! docs/EXACT.md has the argument in full.

use super::linear::Linear;
use crate::weights::Int8Data;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::screen::{self, Int4Screen, ScreenScratch, Widen};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Reusable buffers of [`CertifiedHead::argmax_with`]: the int8 logits and
/// the quantized activation.
#[derive(Default)]
pub struct CertScratch {
    y: Vec<f32>,
    qx: Vec<i8>,
    sx: Vec<f32>,
    screen: ScreenScratch,
}

pub struct CertifiedHead {
    /// The full-precision head rows `[vocab, d_model]`.
    pub full: Linear,
    pub q: Int8Data,
    /// `‖w_j‖₂`, rounded up.
    pub row_norms: Vec<f64>,
    /// The same, rounded up to f32, for the screen.
    row_norms_f32: Vec<f32>,
    /// The 4-bit screen of `q`: the candidates of a step come from it when it
    /// leaves few, without the full int8 pass (module docs).
    screen: Option<Int4Screen>,
    pub group_size: usize,
    /// Steps certified and rows re-scored, for reporting.
    pub steps: AtomicU64,
    pub rescored: AtomicU64,
    /// Steps whose candidates came from the screen.
    pub screened: AtomicU64,
}

impl CertifiedHead {
    pub fn new(full: &Linear, group_size: usize) -> Result<CertifiedHead, String> {
        // The head is f32 (enable_certified_head checks): read in place.
        let w = full.to_f32();
        let q = PackedInt8::quantize(&w, full.n, full.k, group_size)?;
        let row_norms: Vec<f64> = w
            .chunks_exact(full.k)
            .map(|r| norm(r) * (1.0 + 1e-12))
            .collect();
        let row_norms_f32 = row_norms.iter().map(|&v| up(v)).collect();
        // Not built when the process turned screening off (`T5EDGE_SCREEN=0`):
        // argmax_with would never read it.
        let screen = (super::screened::choice() != Some(super::screened::Mode::Off))
            .then(|| Int4Screen::from_int8(&q.view()).ok())
            .flatten();
        Ok(CertifiedHead {
            full: full.clone(),
            q: Int8Data::Owned(Arc::new(q)),
            row_norms,
            row_norms_f32,
            screen,
            group_size,
            steps: AtomicU64::new(0),
            rescored: AtomicU64::new(0),
            screened: AtomicU64::new(0),
        })
    }

    /// The certified argmax of the full-precision logits `h · wᵀ` for one
    /// scaled hidden state, skipping id `banned`. Returns the id and how many
    /// rows were re-scored.
    pub fn argmax(&self, h: &[f32], banned: Option<usize>) -> (usize, usize) {
        self.argmax_with(h, banned, &mut CertScratch::default())
    }

    /// [`CertifiedHead::argmax`] working in `buf`, which a decode loop keeps
    /// across steps so a step allocates nothing.
    pub fn argmax_with(
        &self,
        h: &[f32],
        banned: Option<usize>,
        buf: &mut CertScratch,
    ) -> (usize, usize) {
        let (n, k) = (self.full.n, self.full.k);
        let view = self.q.view();
        let CertScratch {
            y,
            qx,
            sx,
            screen: sbuf,
        } = buf;
        // The activation exactly as the kernel quantizes it.
        qx.resize(int8::padded_k(k), 0);
        sx.resize(int8::group_count(k, self.group_size), 0.0);
        int8::quantize_activations_into(h, 1, k, self.group_size, qx, sx);
        let gs = if self.group_size == 0 {
            k
        } else {
            self.group_size
        };
        let (mut ex2, mut xh2) = (0f64, 0f64);
        for (i, &hv) in h.iter().enumerate() {
            let xhat = sx[i / gs] as f64 * qx[i] as f64;
            ex2 += (hv as f64 - xhat).powi(2);
            xh2 += xhat * xhat;
        }
        let (ex, xh) = (ex2.sqrt() * (1.0 + 1e-12), xh2.sqrt() * (1.0 + 1e-12));
        let fp = (view.groups() as f64 + 3.0) * U * (1.0 + 1e-9);
        let full = match &self.full.weight {
            super::LinearWeight::F32(w) => w.as_slice(),
            // `new` always builds from f32 rows; other formats never reach here.
            _ => &[],
        };
        // First the screen: B_j (below) is `a·‖w_j‖ + b·‖e_w‖` for this step's
        // `a = ex + fp·xh` and `b = xh·(1 + fp)`, so the screen's interval of
        // the int8 logit, widened by it, holds the full-precision logit.
        if let Some(scr) = self
            .screen
            .as_ref()
            .filter(|_| super::screened::choice() != Some(super::screened::Mode::Off))
        {
            let widen = Widen {
                a: up((ex + fp * xh) * (1.0 + 1e-9)),
                row_a: &self.row_norms_f32,
                b: up(xh * (1.0 + fp) * (1.0 + 1e-9)),
                row_b: view.err_norms(),
            };
            let isa = t5edge_kernels::dispatch::active();
            if screen::candidates_with(isa, &view, scr, h, banned, Some(&widen), sbuf).is_ok() {
                let rows = sbuf.candidates();
                let best = rescore(full, h, k, rows.iter().copied());
                self.steps.fetch_add(1, Ordering::Relaxed);
                self.screened.fetch_add(1, Ordering::Relaxed);
                self.rescored
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                return (best.unwrap_or(0), rows.len());
            }
        }
        y.resize(n, 0.0);
        int8::linear(h, 1, k, &view, y);
        let errs = view.err_norms();
        let bound = |j: usize| {
            let wn = self.row_norms[j];
            let en = errs[j] as f64;
            (ex * wn + xh * en + fp * xh * (wn + en)) * (1.0 + 1e-9) + 1e-30
        };
        let allowed = |j: usize| Some(j) != banned;
        let mut best_lower = f64::NEG_INFINITY;
        for (j, &v) in y.iter().enumerate() {
            if allowed(j) && v.is_finite() {
                best_lower = best_lower.max(v as f64 - bound(j));
            }
        }
        let mut count = 0;
        let rows = y.iter().enumerate().filter_map(|(j, &v)| {
            // A non-finite int8 value proves nothing: re-score it too.
            let out = !allowed(j) || (v.is_finite() && (v as f64 + bound(j)) < best_lower);
            (!out).then_some(j)
        });
        let best = rescore(full, h, k, rows.inspect(|_| count += 1));
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.rescored.fetch_add(count as u64, Ordering::Relaxed);
        (best.unwrap_or(0), count)
    }
}

/// The best of `rows` by the exact f64 dot product of the f32 `h` with the
/// f32 row (ties to the lowest id: rows come ascending).
fn rescore(full: &[f32], h: &[f32], k: usize, rows: impl Iterator<Item = usize>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for j in rows {
        let row = &full[j * k..(j + 1) * k];
        let exact: f64 = row.iter().zip(h).map(|(&w, &x)| w as f64 * x as f64).sum();
        if best.is_none_or(|(_, b)| exact > b) {
            best = Some((j, exact));
        }
    }
    best.map(|b| b.0)
}

/// `‖r‖` in f64 with four partial sums (one chain per row was a tenth of
/// `--exact`'s start-up; each f64 product of two f32 is exact, so the order
/// moves only the last bits, far inside the bound's `1 + 1e-12`).
fn norm(r: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    for c in r.chunks_exact(4) {
        for l in 0..4 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    for (l, &v) in r[r.len() / 4 * 4..].iter().enumerate() {
        acc[l] += v as f64 * v as f64;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])).sqrt()
}

/// The smallest f32 not below `v`.
fn up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}
