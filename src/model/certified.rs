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
//!
//! The same certificate, widened by the f32 GEMV's own rounding, serves plain
//! greedy over a float head ([`CertifiedHead::for_greedy`],
//! [`CertifiedHead::greedy_pick`]): there the pick must be the argmax of the
//! logits the GEMV computes, so the candidates are re-scored by the GEMV
//! itself instead of in f64.

use super::linear::Linear;
use super::LinearWeight;
use crate::weights::Int8Data;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use t5edge_kernels::dispatch::Isa;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::screen::{self, Int4Screen, ScreenScratch, Widen};
use t5edge_kernels::{bf16 as kbf16, f16 as kf16, f32 as kf32};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The least row norm the screen's widening uses: flooring it here only
/// widens the intervals, and gives [`CertifiedHead::greedy_pick`] a relative
/// term that covers the f32 GEMV's underflow.
const MIN_ROW_NORM: f64 = 1e-30;

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
    /// The int8 copy, whose full pass is `--exact`'s way when the screen
    /// leaves too many rows. `None` in a head for plain f32 greedy
    /// ([`CertifiedHead::for_greedy`]), which hands such a step back to
    /// the logits and so keeps only what the screen's intervals read.
    q: Option<Int8Data>,
    /// The int8 copy's weight scales and per-row error norms `‖e_w‖`.
    scales: Vec<f32>,
    err_norms: Vec<f32>,
    /// `‖w_j‖₂`, rounded up.
    pub row_norms: Vec<f64>,
    /// The same, rounded up to f32 and no less than [`MIN_ROW_NORM`], for
    /// the screen.
    row_norms_f32: Vec<f32>,
    /// The largest of `row_norms` (NaN if a row is not finite).
    max_row_norm: f64,
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

impl CertScratch {
    /// The screen's buffers alone.
    pub(crate) fn screen(&mut self) -> &mut ScreenScratch {
        &mut self.screen
    }
}

impl CertifiedHead {
    /// The certified head of `--exact` over the f32 head `full`, its int8
    /// copy quantized with `group_size`.
    pub fn new(full: &Linear, group_size: usize) -> Result<CertifiedHead, String> {
        // Not built when the process turned screening off (`T5EDGE_SCREEN=0`):
        // argmax_with would never read it.
        let screen = super::screened::choice() != Some(super::screened::Mode::Off);
        CertifiedHead::build(full, group_size, screen)
    }

    /// The head plain greedy over a float head (f32, f16 or bf16) picks
    /// through ([`CertifiedHead::greedy_pick`]): the screen, its scales and
    /// the norms, built a block of rows at a time, without an int8 copy of
    /// the whole (8 MB for a 32k x 256 head) or an f32 one of a half-precision
    /// head. Errs for an int8 head or where no screen can be built.
    pub fn for_greedy(full: &Linear) -> Result<CertifiedHead, String> {
        let (n, k) = (full.n, full.k);
        let mut buf = Vec::new();
        let mut parts = Vec::new();
        // Group size 0: one scale per row, and every block but the last is
        // whole int8 tiles, so the blocks' scales (`[1, padded rows]`) laid
        // end to end are the whole matrix's (tested below).
        let (mut scales, mut err_norms) =
            (Vec::with_capacity(int8::padded_n(n)), Vec::with_capacity(n));
        // Rounded up to f32 (the greedy head reads no other form of them).
        let mut norms = vec![0f32; n];
        for j0 in (0..n).step_by(BUILD_ROWS) {
            let j1 = (j0 + BUILD_ROWS).min(n);
            // The block's rows as f32: an f32 head's in place, others widened.
            let r = j0 * k..j1 * k;
            let block: &[f32] = match &full.weight {
                LinearWeight::F32(w) => &w.as_slice()[r],
                LinearWeight::F16(w) => {
                    buf.clear();
                    buf.extend(w.as_slice()[r].iter().map(|v| v.to_f32()));
                    &buf
                }
                LinearWeight::Bf16(w) => {
                    buf.clear();
                    buf.extend(w.as_slice()[r].iter().map(|v| v.to_f32()));
                    &buf
                }
                LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => {
                    return Err("an int8 head has its own screen".into())
                }
            };
            // 64 rows a task: a serial pass was a fifth of the build.
            let parallel = j1 - j0 > 64;
            t5edge_kernels::par::for_chunks_mut(&mut norms[j0..j1], 64, parallel, |c, out| {
                let first = c * 64;
                for (i, o) in out.iter_mut().enumerate() {
                    let r = &block[(first + i) * k..(first + i + 1) * k];
                    *o = up(norm(r) * (1.0 + 1e-12));
                }
            });
            let q = PackedInt8::quantize(block, j1 - j0, k, 0)?;
            let v = q.view();
            parts.push(Int4Screen::from_int8(&v)?);
            scales.extend_from_slice(v.scales());
            err_norms.extend_from_slice(v.err_norms());
        }
        let row_norms = norms.iter().map(|&v| v as f64).collect();
        let screen = Int4Screen::stack(&parts)?;
        Ok(CertifiedHead::assemble(
            full,
            0,
            row_norms,
            None,
            Some(screen),
            scales,
            err_norms,
        ))
    }

    fn build(full: &Linear, group_size: usize, screen: bool) -> Result<CertifiedHead, String> {
        // The head is f32 (enable_certified_head checks): read in place.
        let w = full.to_f32();
        let row_norms: Vec<f64> = w
            .chunks_exact(full.k)
            .map(|r| norm(r) * (1.0 + 1e-12))
            .collect();
        let q = PackedInt8::quantize(&w[..], full.n, full.k, group_size)?;
        let screen = screen
            .then(|| Int4Screen::from_int8(&q.view()).ok())
            .flatten();
        let (scales, err_norms) = (q.view().scales().to_vec(), q.view().err_norms().to_vec());
        let q = Some(Int8Data::Owned(Arc::new(q)));
        Ok(CertifiedHead::assemble(
            full, group_size, row_norms, q, screen, scales, err_norms,
        ))
    }

    fn assemble(
        full: &Linear,
        group_size: usize,
        row_norms: Vec<f64>,
        q: Option<Int8Data>,
        screen: Option<Int4Screen>,
        scales: Vec<f32>,
        err_norms: Vec<f32>,
    ) -> CertifiedHead {
        let row_norms_f32 = row_norms.iter().map(|&v| up(v.max(MIN_ROW_NORM))).collect();
        let max_row_norm = row_norms.iter().fold(0f64, |m, &v| {
            if v.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(v)
            }
        });
        CertifiedHead {
            full: full.clone(),
            q,
            scales,
            err_norms,
            row_norms,
            row_norms_f32,
            max_row_norm,
            screen,
            group_size,
            steps: AtomicU64::new(0),
            rescored: AtomicU64::new(0),
            screened: AtomicU64::new(0),
        }
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
        let (id, rows, screened) = self.pick(h, banned, buf);
        self.count(rows, screened);
        (id, rows)
    }

    /// Counts a settled pick that re-scored `rows` rows, its candidates from
    /// the screen or not.
    fn count(&self, rows: usize, screened: bool) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.screened
            .fetch_add(u64::from(screened), Ordering::Relaxed);
        self.rescored.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The certified pick: its id, the rows re-scored, and whether the
    /// candidates came from the screen.
    fn pick(
        &self,
        h: &[f32],
        banned: Option<usize>,
        buf: &mut CertScratch,
    ) -> (usize, usize, bool) {
        let (n, k) = (self.full.n, self.full.k);
        let (ex, xh, fp) = self.step_terms(h, buf);
        let CertScratch {
            y, screen: sbuf, ..
        } = buf;
        // First the screen (`screen_rows`).
        if self.screen_rows(h, banned, (ex, xh, fp), 0.0, sbuf) {
            let rows = sbuf.candidates();
            let best = self.rescore(h, rows.iter().copied());
            return (best.unwrap_or(0), rows.len(), true);
        }
        let Some(q) = &self.q else {
            // A head without the int8 copy (f32 greedy's) re-scores every row.
            let best = self.rescore(h, (0..n).filter(|&j| Some(j) != banned));
            return (best.unwrap_or(0), n, false);
        };
        y.resize(n, 0.0);
        int8::linear(h, 1, k, &q.view(), y);
        let errs = &self.err_norms;
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
        let best = self.rescore(h, rows.inspect(|_| count += 1));
        (best.unwrap_or(0), count, false)
    }

    /// Whether [`CertifiedHead::argmax_near`] can answer: the head has its
    /// screen and the process did not turn screening off.
    pub fn screens(&self) -> bool {
        self.screen.is_some() && super::screened::choice() != Some(super::screened::Mode::Off)
    }

    /// The certified argmax of `h` (as [`CertifiedHead::argmax_with`]),
    /// together with every row that can be the argmax of the full-precision
    /// logits of any `h'` with `‖h' − h‖ <= radius`, into `rows` (ascending,
    /// `banned` never among them): `|w_j·h' − w_j·h| <= ‖w_j‖·radius`, so
    /// the screen's certified interval of `w_j·h` widened by that much holds
    /// `w_j·h'`, and a row outside the candidates loses to one of them
    /// whatever `h'` is. [`CertifiedHead::argmax_among`] then picks for `h'`
    /// from `rows` alone. `None` (and `rows` empty) when the screen leaves
    /// too many rows or the head has no screen; the caller picks the usual
    /// way.
    pub fn argmax_near(
        &self,
        h: &[f32],
        banned: Option<usize>,
        radius: f64,
        buf: &mut CertScratch,
        rows: &mut Vec<usize>,
    ) -> Option<usize> {
        rows.clear();
        if !(self.screens() && radius >= 0.0 && radius.is_finite()) {
            return None;
        }
        let terms = self.step_terms(h, buf);
        if !self.screen_rows(h, banned, terms, radius, &mut buf.screen) {
            return None;
        }
        rows.extend_from_slice(buf.screen.candidates());
        self.rescore(h, rows.iter().copied())
    }

    /// The screen's candidates for `h` into `sbuf`, `banned` never among
    /// them; false when the screen leaves too many or is off. Each row's
    /// interval of the int8 logit is widened by `B_j = a·‖w_j‖ + b·‖e_w‖`
    /// for this step's `a = ex + fp·xh` and `b = xh·(1 + fp)` (`terms`, from
    /// [`CertifiedHead::step_terms`]), so it holds the full-precision logit,
    /// plus `radius·‖w_j‖`, so it holds that of any state within `radius`
    /// ([`CertifiedHead::argmax_near`]).
    fn screen_rows(
        &self,
        h: &[f32],
        banned: Option<usize>,
        (ex, xh, fp): (f64, f64, f64),
        radius: f64,
        sbuf: &mut ScreenScratch,
    ) -> bool {
        let Some(scr) = self.screen.as_ref().filter(|_| self.screens()) else {
            return false;
        };
        let widen = Widen {
            a: up((ex + fp * xh + radius) * (1.0 + 1e-9)),
            row_a: &self.row_norms_f32,
            b: up(xh * (1.0 + fp) * (1.0 + 1e-9)),
            row_b: &self.err_norms,
        };
        let isa = t5edge_kernels::dispatch::active();
        screen::candidates_with(isa, &self.scales, scr, h, banned, Some(&widen), sbuf).is_ok()
    }

    /// The certified argmax of `h` among `rows`, which must hold every row
    /// that can win for it ([`CertifiedHead::argmax_near`] of an `h` within
    /// its radius): the full-precision pick, counted as a screened step.
    pub fn argmax_among(&self, h: &[f32], rows: &[usize]) -> Option<usize> {
        let best = self.rescore(h, rows.iter().copied());
        self.count(rows.len(), true);
        best
    }

    /// This step's `‖e_x‖`, `‖x̂‖` (both rounded up) and the epilogue's
    /// relative rounding `fp`, from `h` quantized exactly as the kernel does.
    fn step_terms(&self, h: &[f32], buf: &mut CertScratch) -> (f64, f64, f64) {
        let k = self.full.k;
        let CertScratch { qx, sx, .. } = buf;
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
        let groups = int8::group_count(k, self.group_size);
        let fp = (groups as f64 + 3.0) * U * (1.0 + 1e-9);
        (ex2.sqrt() * (1.0 + 1e-12), xh2.sqrt() * (1.0 + 1e-12), fp)
    }

    /// The best of `rows` by the exact f64 dot product of the f32 `h` with
    /// the row (widened to f32 when stored in half precision; each product
    /// of two f32 is exact in f64), ties to the lowest id: rows come
    /// ascending.
    fn rescore(&self, h: &[f32], rows: impl Iterator<Item = usize>) -> Option<usize> {
        let k = self.full.k;
        fn dot(w: impl Iterator<Item = f32>, h: &[f32]) -> f64 {
            w.zip(h).map(|(a, &b)| a as f64 * b as f64).sum()
        }
        let mut best: Option<(usize, f64)> = None;
        for j in rows {
            let r = j * k..(j + 1) * k;
            let exact = match &self.full.weight {
                LinearWeight::F32(w) => dot4(&w.as_slice()[r], h),
                LinearWeight::F16(w) => dot(w.as_slice()[r].iter().map(|v| v.to_f32()), h),
                LinearWeight::Bf16(w) => dot(w.as_slice()[r].iter().map(|v| v.to_f32()), h),
                LinearWeight::Int8(w) => dot(w.view().dequantize_row(j).into_iter(), h),
                LinearWeight::Int8A16(w) => {
                    let mut row = vec![0.0; k];
                    w.dequantize_row_into(j, &mut row);
                    dot(row.into_iter(), h)
                }
            };
            if best.is_none_or(|(_, b)| exact > b) {
                best = Some((j, exact));
            }
        }
        best.map(|b| b.0)
    }

    /// The argmax of the logits the head's own GEMV computes
    /// (`Linear::forward_rows` with `Rows::Invariant` at the active level,
    /// `banned` excluded, ties to the lowest id), that is plain greedy's
    /// pick over an f32, f16 or bf16 head (a [`CertifiedHead::for_greedy`]),
    /// from the screen and a few rows: `None` when the screen leaves too
    /// many rows (or the step is outside what the bound covers) and the
    /// caller must compute the logits. Returns the id and the rows re-scored.
    ///
    /// The GEMV sums `k` products in some order with one rounding each step,
    /// so its value `ỹ_j` lies within `γ·Σ|h_i w_ji| <= γ·‖h‖‖w_j‖` of the
    /// exact `L_j`, `γ = (k+1)u / (1 - (k+1)u)` (Higham's bound for any
    /// summation order, one more step for a product rounded apart from its
    /// sum) when nothing overflows or underflows. Widening the certified
    /// interval of `L_j` by that much gives one that holds `ỹ_j`, so a row
    /// outside the candidates has `ỹ_j` below some candidate's; each
    /// candidate is then computed by the GEMV itself on its one row, whose
    /// bits depend only on (level, k) (`kernels::f32`), the same bits the
    /// full head gives it. Half-precision weights are widened to f32 exactly
    /// and summed as f32 ones (`kernels::f16`, `kernels::bf16`: the GEMV,
    /// which a decode step runs, never rounds the activation), so the bound
    /// is the same.
    pub fn greedy_pick(
        &self,
        h: &[f32],
        banned: Option<usize>,
        buf: &mut CertScratch,
    ) -> Option<(usize, usize)> {
        self.greedy_pick_with(t5edge_kernels::dispatch::active(), h, banned, buf)
    }

    /// [`CertifiedHead::greedy_pick`] against the GEMV at `isa` (a level the
    /// CPU runs, or the NEON emulation), screening at the same level.
    pub fn greedy_pick_with(
        &self,
        isa: Isa,
        h: &[f32],
        banned: Option<usize>,
        buf: &mut CertScratch,
    ) -> Option<(usize, usize)> {
        let scr = self.screen.as_ref()?;
        let k = self.full.k;
        let hn = norm(h) * (1.0 + 1e-12);
        let steps = k as f64 + 1.0;
        let gamma = steps * U / (1.0 - steps * U) * (1.0 + 1e-9);
        // No partial sum can overflow when Σ|h_i w_ji| <= ‖h‖‖w_j‖ stays far
        // below f32::MAX (a NaN norm fails the test too); an underflowing
        // step errs by at most 2^-150 absolute, which the relative term covers
        // when γ‖h‖ times the smallest row norm the bound uses exceeds k + 1
        // of them.
        let bounded = (hn * self.max_row_norm).partial_cmp(&1e37) == Some(std::cmp::Ordering::Less);
        if !bounded || gamma * hn * MIN_ROW_NORM < steps * 2f64.powi(-150) {
            return None;
        }
        let (ex, xh, fp) = self.step_terms(h, buf);
        let widen = Widen {
            a: up((ex + fp * xh + gamma * hn) * (1.0 + 1e-9)),
            row_a: &self.row_norms_f32,
            b: up(xh * (1.0 + fp) * (1.0 + 1e-9)),
            row_b: &self.err_norms,
        };
        let sbuf = &mut buf.screen;
        screen::candidates_with(isa, &self.scales, scr, h, banned, Some(&widen), sbuf).ok()?;
        let rows = sbuf.candidates();
        let mut best: Option<(usize, f32)> = None;
        let mut y = [0f32];
        for &j in rows {
            let r = j * k..(j + 1) * k;
            match &self.full.weight {
                LinearWeight::F32(w) => {
                    kf32::linear_invariant_with(isa, h, 1, k, &w.as_slice()[r], 1, &mut y)
                }
                LinearWeight::F16(w) => {
                    kf16::linear_invariant_with(isa, h, 1, k, &w.as_slice()[r], 1, &mut y)
                }
                LinearWeight::Bf16(w) => {
                    kbf16::linear_invariant_with(isa, h, 1, k, &w.as_slice()[r], 1, &mut y)
                }
                // `for_greedy` refuses an int8 head.
                LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => return None,
            }
            // Ascending ids: a strict `>` keeps the lowest on ties, as
            // `ops::argmax` does over the logits.
            if best.is_none_or(|(_, b)| y[0] > b) {
                best = Some((j, y[0]));
            }
        }
        Some((best?.0, rows.len()))
    }
}

/// Rows [`CertifiedHead::for_greedy`] quantizes at a time: whole int8 tiles (16 rows)
/// and screen tiles (8); 4096 x 256 is 1 MB of int8.
const BUILD_ROWS: usize = 4096;

/// The f64 dot product of two f32 vectors in four partial sums, which the
/// compiler keeps in vector lanes (one sum a row made `--exact`'s drafted
/// turns re-score a few dozen rows at a scalar add's latency each). Each
/// product is exact in f64, so the order moves only the last bits of a sum
/// of `k` exact terms, as in [`norm`].
fn dot4(w: &[f32], h: &[f32]) -> f64 {
    let mut s = [0f64; 4];
    let (wc, hc) = (w.chunks_exact(4), h.chunks_exact(4));
    let tail: f64 = wc
        .remainder()
        .iter()
        .zip(hc.remainder())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    for (a, b) in wc.zip(hc) {
        for l in 0..4 {
            s[l] += a[l] as f64 * b[l] as f64;
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Built a block of rows at a time, the greedy head's screen, scales,
    /// error norms and row norms are those of the whole matrix (a ragged
    /// last block), and a half-precision head's are those of its widened rows.
    #[test]
    fn the_screen_built_by_blocks_is_the_whole_matrix_screen() {
        let (n, k) = (2 * BUILD_ROWS + 37, 24);
        let mut r = crate::synth::Rng::new(7);
        let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let half = Linear::f32(n, k, w.clone().into())
            .convert(crate::model::WeightFormat::F16, 0)
            .unwrap();
        let wide: Vec<f32> = half.to_f32().into_owned();
        assert!(wide != w, "f16 rounding left the rows as they were");
        for (head, rows) in [(Linear::f32(n, k, w.clone().into()), &w), (half, &wide)] {
            let g = CertifiedHead::for_greedy(&head).unwrap();
            let whole =
                CertifiedHead::build(&Linear::f32(n, k, rows.clone().into()), 0, true).unwrap();
            assert!(g.screen == whole.screen, "screen");
            assert_eq!(g.scales, whole.scales, "scales");
            assert_eq!(g.err_norms, whole.err_norms, "error norms");
            assert_eq!(g.row_norms_f32, whole.row_norms_f32, "row norms");
        }
    }
}
