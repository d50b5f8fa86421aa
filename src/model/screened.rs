//! Screened greedy: the pick of an int8 LM head through its 4-bit screen
//! (`t5edge_kernels::screen`), the same id the full int8 head's argmax gives,
//! from half the head's bytes plus a few re-scored rows. Built from the int8
//! head on first use; a head with a group size the screen cannot follow has
//! none and decodes from its logits as before.
//!
//! A float head (f32, f16, bf16) screens too, through the certified bound
//! widened by its GEMV's own rounding (`CertifiedHead::greedy_pick`): the
//! same id plain greedy's logits give, from a screen an eighth (a quarter)
//! of the head's bytes. That pays on every CPU (the f32 head of
//! t5-efficient-tiny-nl2 is 33 MB, past the L3), so a float head screens
//! single greedy rows unless told not to (`T5EDGE_SCREEN=0`); its screen is
//! built on the first pick.
//!
//! Whether plain int8 greedy screens is a speed question only (the ids are
//! the same), and the answer depends on the machine: where the full int8
//! head is bound by the bytes it reads (a small L2 and a slow L3, as on the
//! Intel VMs, or a board's DRAM) half the bytes should pay; where it is bound
//! by arithmetic (AVX2 without VNNI) the nibble unpacking costs about what
//! the bytes save (an AMD EPYC, side by side: from 3% slower to 10% faster
//! with the machine's other load; docs/EXACT.md). Building the screen costs
//! ~8 ms at start-up (its 4 MB no longer add to the peak: a mapped head's
//! pages are dropped behind the build, `build`), so plain
//! int8 greedy does not screen unless asked, except at the VNNI levels
//! (`avx512vnni`, `amx`), where the Intel Xeon measured it 23% faster on W1
//! (`vnni_screens`; the AMD EPYC with AVX-512 VNNI is unmeasured), and
//! there only after a head's first [`DEFER_STEPS`] decode steps
//! ([`Mode::Deferred`]: a one-shot 32-token answer never pays the build):
//! `T5EDGE_SCREEN=1` always,
//! `T5EDGE_SCREEN=auto` to measure ([`Mode::Measure`]: after [`WARM_PICKS`]
//! screened picks the next [`CALIBRATION_STEPS`] run both ways, timed, each
//! screened pick checked against the full one, and the screen stays only if
//! it was at least 5% faster). `--exact` screens unless `T5EDGE_SCREEN=0`
//! (the certified head, where it replaces two full passes).
//!
//! A batch of greedy rows is another matter: there the int8 head is a GEMM
//! bound by arithmetic, and the screen's multi-row kernel unpacks each block
//! of nibbles once for up to eight rows, so its pass costs about 0.7x the head's
//! on AVX2 without VNNI. A batch's picks therefore screen by default where
//! that kernel runs ([`ScreenedHead::batch_screens`]); the other levels run
//! the one-row kernel per row and do not, unless `T5EDGE_SCREEN=1`.

use super::certified::{CertScratch, CertifiedHead};
use super::linear::{Linear, LinearWeight, Rows};
use super::scratch;
use crate::weights::Int8Data;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use t5edge_kernels::ops;
use t5edge_kernels::screen::{self, Int4Screen, Pick, RowsScratch};

/// Screened picks a [`Mode::Measure`] head makes before it measures: the
/// first passes over the screen and the head meet cold caches and a pool
/// still waking, which once made a screened pick look 25% slower.
pub const WARM_PICKS: u64 = 16;
/// Picks a [`Mode::Measure`] head then times both ways before it decides.
pub const CALIBRATION_STEPS: u64 = 16;

/// Decode steps a [`Mode::Deferred`] head runs on its full int8 head
/// before it builds its screen. On the Intel Xeon (tiny-nl2) the build
/// costs a fresh process 6-9 ms (the head read once, the screen's 3.9 MB
/// of new memory written and moved onto huge pages) and a screened step
/// saves 0.07-0.10 ms, so the build pays back after 60-130 steps: a one-shot
/// 32-token `t5edge generate` ran 6 ms faster without it (kernels/BENCH.md).
/// As when renting skis until the rent paid equals the price, a process
/// that keeps decoding builds it once the full head has cost it about what
/// the build would, so it never pays much more than twice the better of
/// the two choices, and a short answer never pays for the build.
pub const DEFER_STEPS: u64 = 96;

/// Screened steps after which a head whose picks mostly go undecided stops
/// screening (its logits have margins too small for the screen's bounds, so
/// the screen only adds work). The ids are the same either way.
const TRIAL_STEPS: u64 = 32;

/// Whether a head screens its greedy picks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// As the process was told ([`set_choice`], from `T5EDGE_SCREEN`); [`Mode::Off`] if it was not.
    #[default]
    Process,
    /// Always (until the trial finds the margins too small).
    On,
    /// Never.
    Off,
    /// Measure both ways, then keep the faster (module docs).
    Measure,
    /// Always, after [`DEFER_STEPS`] decode steps on the full head: what an int8
    /// head does at the VNNI levels when nothing was asked.
    Deferred,
}

/// The lazily built screen of a model's LM head and its counters.
#[derive(Default)]
pub struct ScreenedHead {
    screen: OnceLock<Option<Int4Screen>>,
    /// A float head's screen, with what certifies its picks against its
    /// GEMV (`CertifiedHead::greedy_pick`).
    float_head: OnceLock<Option<CertifiedHead>>,
    mode: Mode,
    /// Picks asked for, picks the screen decided, rows re-scored (in the
    /// head's own format and kernel).
    pub steps: AtomicU64,
    pub decided: AtomicU64,
    pub rescored: AtomicU64,
    /// Set when the trial found the screen rarely decides.
    off: AtomicBool,
    /// Calibration: picks timed, and nanoseconds spent screening and in
    /// the full head over them.
    cal_steps: AtomicU64,
    cal_timed: AtomicU64,
    cal_screen_ns: AtomicU64,
    cal_full_ns: AtomicU64,
    /// The calibration's verdict, once made.
    verdict: OnceLock<bool>,
    /// Decode steps a [`Mode::Deferred`] head has left to its full head.
    deferred: AtomicU64,
}

impl ScreenedHead {
    /// The argmax of the int8 head `linear` for one hidden state `h` (as the
    /// head multiplies it), `banned` excluded, when the screen can tell it
    /// (or, while calibrating, from the full head in `logits`); `None` when
    /// the caller must compute the row's logits (no screen, screening off,
    /// or too many rows within the screen's bounds).
    pub fn pick(
        &self,
        linear: &Linear,
        h: &[f32],
        banned: Option<usize>,
        scratch: &mut CertScratch,
        logits: &mut Vec<f32>,
    ) -> Option<usize> {
        let calibrate = self.state(linear)?;
        let t0 = Instant::now();
        let pick = match &linear.weight {
            LinearWeight::Int8(w) => {
                let view = w.view();
                let s = self.screen.get_or_init(|| build(w)).as_ref()?;
                screen::argmax(&view, s, h, banned, scratch.screen())
            }
            // Never a head (the int8 policy gives it to `wo` alone), and no
            // screen bounds its 16-bit activations: the logits decide.
            LinearWeight::Int8A16(_) => return None,
            LinearWeight::F32(_) | LinearWeight::F16(_) | LinearWeight::Bf16(_) => {
                let c = self
                    .float_head
                    .get_or_init(|| CertifiedHead::for_greedy(linear).ok())
                    .as_ref()?;
                match c.greedy_pick(h, banned, scratch) {
                    Some((id, rescored)) => Pick::Id { id, rescored },
                    None => Pick::Undecided { candidates: 0 },
                }
            }
        };
        if calibrate && self.cal_steps.fetch_add(1, Ordering::Relaxed) >= WARM_PICKS {
            return Some(self.calibrate(linear, h, banned, pick, t0, logits));
        }
        match pick {
            Pick::Id { id, rescored } => {
                self.record(1, 1, rescored as u64);
                Some(id)
            }
            Pick::Undecided { .. } => {
                self.record(1, 0, 0);
                None
            }
        }
    }

    /// Counts `picks` picks, `decided` of them by the screen (re-scoring
    /// `rescored` rows), and runs the trial: from [`TRIAL_STEPS`] picks on, a
    /// head whose picks mostly went undecided stops screening. One row's
    /// picks and a batch's come through here alike.
    fn record(&self, picks: u64, decided: u64, rescored: u64) {
        self.rescored.fetch_add(rescored, Ordering::Relaxed);
        let steps = self.steps.fetch_add(picks, Ordering::Relaxed) + picks;
        let decided = self.decided.fetch_add(decided, Ordering::Relaxed) + decided;
        if steps >= TRIAL_STEPS && decided * 2 < steps {
            self.off.store(true, Ordering::Relaxed);
        }
    }

    /// The picks of `m` hidden states `h` (`[m, d]`) at once, row `i` never
    /// picking `banned[i]`, through one pass over the screen (a batch's
    /// decode step): `picks[i]` is `Pick::Id` with the full int8 head's
    /// argmax, or `Undecided` when that row's logits must be computed.
    /// `false` (and `picks` untouched) when the head does not screen
    /// batches.
    pub fn pick_rows(
        &self,
        linear: &Linear,
        h: &[f32],
        m: usize,
        banned: &[Option<usize>],
        scratch: &mut RowsScratch,
        picks: &mut Vec<Pick>,
    ) -> bool {
        if !self.batch_screens(linear) {
            return false;
        }
        let LinearWeight::Int8(w) = &linear.weight else {
            return false;
        };
        let view = w.view();
        let Some(s) = self.screen.get_or_init(|| build(w)).as_ref() else {
            return false;
        };
        let isa = t5edge_kernels::dispatch::active();
        screen::argmax_rows_with(isa, &view, s, h, m, banned, scratch, picks);
        let (mut decided, mut rescored) = (0, 0);
        for p in picks.iter() {
            if let Pick::Id { rescored: r, .. } = p {
                decided += 1;
                rescored += *r as u64;
            }
        }
        self.record(m as u64, decided, rescored);
        true
    }

    /// Whether a batch's greedy picks go through the screen of the int8
    /// head `linear` (another format has none): always with
    /// [`Mode::On`] (`T5EDGE_SCREEN=1`), never with [`Mode::Off`] (`0`) or
    /// once the trial found the margins too small; otherwise (unset, or
    /// `auto`, whose measuring is for single rows) where the CPU's level has
    /// the multi-row screen kernel ([`screen::rows_kernel`]): there a batch
    /// is bound by arithmetic, and the screen's pass takes about 0.75x the
    /// int8 head's time for the same rows (kernels/BENCH.md).
    pub fn batch_screens(&self, linear: &Linear) -> bool {
        if self.off.load(Ordering::Relaxed) || !matches!(linear.weight, LinearWeight::Int8(_)) {
            return false;
        }
        let mode = match self.mode {
            Mode::Process => choice(),
            m => Some(m),
        };
        match mode {
            Some(Mode::On) => true,
            Some(Mode::Off) => false,
            _ => screen::rows_kernel(t5edge_kernels::dispatch::active()),
        }
    }

    /// Whether a batch's greedy rows screen one at a time, as a lone row
    /// does: so for a float head, whose logits for `m` rows read the head
    /// once but cost `m` full products, where each row's screen reads an
    /// eighth (a quarter for f16 and bf16) of the bytes and a few rows
    /// (W2 f32, 16 rows, in docs/EXACT.md). An int8 head's batch takes the
    /// multi-row screen instead ([`ScreenedHead::batch_screens`]).
    pub fn row_by_row(&self, linear: &Linear) -> bool {
        !matches!(linear.weight, LinearWeight::Int8(_))
    }

    /// Whether this head screens its picks now (`Some`; `Some(true)` while it
    /// is still calibrating) or leaves them to the logits (`None`): its mode
    /// (or the process's), its calibration's verdict and its trial.
    fn state(&self, linear: &Linear) -> Option<bool> {
        // A float head screens unless told not to: its screen reads 4 bits
        // a weight where the head reads 16 or 32, on every CPU. An int8
        // head does where the VNNI screen kernel runs (module docs).
        let unset = match linear.weight {
            LinearWeight::Int8(_) | LinearWeight::Int8A16(_) if !vnni_screens() => Mode::Off,
            LinearWeight::Int8(_) => Mode::Deferred,
            _ => Mode::On,
        };
        let mode = match self.mode {
            Mode::Process => choice().unwrap_or(unset),
            m => m,
        };
        let calibrate = match mode {
            Mode::On => false,
            Mode::Deferred if self.deferred.load(Ordering::Relaxed) < DEFER_STEPS => return None,
            Mode::Deferred => false,
            Mode::Off | Mode::Process => return None,
            Mode::Measure => match self.verdict.get() {
                Some(false) => return None,
                Some(true) => false,
                None => true,
            },
        };
        (!self.off.load(Ordering::Relaxed)).then_some(calibrate)
    }

    /// Whether [`ScreenedHead::pick`] may answer at all: a decode step asks
    /// before it leaves a row's logits out.
    pub fn wanted(&self, linear: &Linear) -> bool {
        let wanted = self.state(linear).is_some();
        if !wanted && self.deferred.load(Ordering::Relaxed) < DEFER_STEPS {
            // A step on the full head: one fewer before a deferred head
            // builds its screen (counted for any head; only a deferred
            // one reads it).
            self.deferred.fetch_add(1, Ordering::Relaxed);
        }
        wanted
    }

    /// One calibration pick: the full head too, both timed; the answer is
    /// the full head's (the screen's, when it decided, must equal it).
    fn calibrate(
        &self,
        linear: &Linear,
        h: &[f32],
        banned: Option<usize>,
        pick: Pick,
        t0: Instant,
        logits: &mut Vec<f32>,
    ) -> usize {
        let t1 = Instant::now();
        let l = scratch::sized(logits, linear.n);
        linear.forward_rows(h, 1, l, Rows::Invariant);
        if let Some(b) = banned {
            l[b] = f32::NEG_INFINITY;
        }
        let full = ops::argmax(l).unwrap_or(0);
        let t2 = Instant::now();
        if let Pick::Id { id, .. } = pick {
            assert_eq!(id, full, "the screened pick differs from the full head's");
        }
        let ns = |d: std::time::Duration| d.as_nanos() as u64;
        // An undecided pick costs the screen and then the full head.
        let undecided = !matches!(pick, Pick::Id { .. });
        let screen = ns(t1 - t0) + if undecided { ns(t2 - t1) } else { 0 };
        self.cal_screen_ns.fetch_add(screen, Ordering::Relaxed);
        self.cal_full_ns.fetch_add(ns(t2 - t1), Ordering::Relaxed);
        if self.cal_timed.fetch_add(1, Ordering::Relaxed) + 1 >= CALIBRATION_STEPS {
            let (s, f) = (
                self.cal_screen_ns.load(Ordering::Relaxed),
                self.cal_full_ns.load(Ordering::Relaxed),
            );
            // Keep it only for a clear gain: 5% or more.
            let _ = self.verdict.set(s * 20 < f * 19);
        }
        full
    }

    /// The calibration's verdict (`None` before it ends or without one) and
    /// the mean time per pick it measured each way, in µs.
    pub fn calibration(&self) -> Option<(bool, f64, f64)> {
        let v = *self.verdict.get()?;
        let n = self.cal_timed.load(Ordering::Relaxed).max(1) as f64;
        let us = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / n / 1e3;
        Some((v, us(&self.cal_screen_ns), us(&self.cal_full_ns)))
    }

    /// A head in `mode` (tests compare [`Mode::On`] with [`Mode::Off`]).
    pub fn with_mode(mode: Mode) -> ScreenedHead {
        ScreenedHead {
            mode,
            ..Default::default()
        }
    }

    /// Whether the trial turned screening off (the head's picks mostly went
    /// undecided: margins too small for the screen's bounds).
    pub fn off_after_trial(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Whether the head has a screen (built by the first [`ScreenedHead::pick`]).
    pub fn built(&self) -> bool {
        matches!(self.screen.get(), Some(Some(_))) || matches!(self.float_head.get(), Some(Some(_)))
    }
}

/// The screen of int8 head `w`, or `None` if it can have none. A head
/// mapped from a file has its pages dropped behind the build (they come
/// back from the file if touched): a screened step reads the screen and a
/// few rows, so the head need not stay resident, and W1's peak memory is the
/// screen's 4 MB instead of the head's 8.2 MB plus the screen.
fn build(w: &Int8Data) -> Option<Int4Screen> {
    // Its memory would stack on this thread's idle spares (W1 peak RSS
    // +0.25 MB when they were kept).
    crate::model::scratch::free_spares();
    let view = w.view();
    match w {
        Int8Data::Mapped(m) => Int4Screen::from_int8_then(&view, &|r| {
            m.backing
                .release(m.data.start + r.start..m.data.start + r.end)
        }),
        Int8Data::Owned(_) => Int4Screen::from_int8(&view),
    }
    .ok()
}

/// Whether a single int8 greedy row screens when nothing was asked: at the
/// VNNI levels (`avx512vnni`, `amx`), whose screen kernel multiplies the
/// nibbles with `vpdpbusd`. On the Intel Xeon (AVX-512 VNNI, 2 MB of L2 a
/// core in front of a slow L3) W1 went 9.15-9.31 -> 7.05-7.39 ms side by
/// side, cold start 21.1-21.6 -> 23.4-24.4 ms (kernels/BENCH.md).
fn vnni_screens() -> bool {
    t5edge_kernels::dispatch::active().has_vnni()
}

static CHOICE: OnceLock<Mode> = OnceLock::new();

/// What every [`Mode::Process`] head does (`T5EDGE_SCREEN`, read in
/// `crate::runtime`); [`Mode::Off`] also keeps `--exact` off the screen.
/// The first setting counts.
pub fn set_choice(mode: Mode) {
    let _ = CHOICE.set(mode);
}

/// What [`set_choice`] set, if anything.
pub(crate) fn choice() -> Option<Mode> {
    CHOICE.get().copied()
}
