//! Certified greedy by drafts: the int8 copy of the decoder
//! ([`T5Model::draft`]) proposes several tokens one step at a time, and the
//! full-precision decoder checks them all in one pass, so a step of
//! `--exact` reads the f32 decoder's weights once for several tokens instead
//! of once a token. The ids are exactly those of one certified step at a
//! time:
//!
//! - The check feeds the drafted tokens with `alone`
//!   ([`T5Model::decode_positions`]): every position gets the bits a step
//!   of its own gives it, so its hidden state `h'` is one-step's.
//! - A drafted position's pick comes from the certified head twice over.
//!   Drafting, the screen of the draft's hidden state `h` widened by a
//!   radius `r` leaves every row that can win for any state within `r` of
//!   `h` ([`CertifiedHead::argmax_near`]). Checking, when `‖h' − h‖ <= r`
//!   the full-precision pick for `h'` is the best of those rows re-scored
//!   ([`CertifiedHead::argmax_among`]); when it is farther, or the screen
//!   left too many rows, it is the usual certified pick of `h'`.
//! - The first position whose pick differs from the draft's ends the turn:
//!   its pick is kept (it is the certified one), both caches drop the
//!   positions after it, and the next turn drafts from there.
//!
//! So the draft decides only how much work a turn saves, never an id. The
//! radius follows the distances seen (`DraftRow::rho`, relative to `‖h‖`):
//! a wider one leaves more rows to re-score, a narrower one more misses. A
//! drafted position the screen leaves undecided costs the head twice (the
//! draft's pick and the check's), so a turn stops drafting there, and a row
//! whose turns keep stalling so goes back to one step at a time
//! ([`DraftRow::stalled`]): a head with margins too small for the screen
//! (the gated synth's) would otherwise decode at half speed.

use super::GenerateOptions;
use crate::model::certified::{CertScratch, CertifiedHead};
use crate::model::{DecodeScratch, SeqCache, T5Model};
use crate::Result;
use std::ops::ControlFlow;

/// Tokens a turn drafts at most: the check reads the f32 decoder once for
/// this many, and a miss wastes at most this many draft steps.
const DRAFT_TOKENS: usize = 16;

/// The first radius, relative to `‖h‖`, before any distance was seen.
const FIRST_RHO: f64 = 1.0 / 32.0;

/// A drafted position's pick when the screen left it undecided: no id.
const NO_PICK: u32 = u32::MAX;

/// The narrowest radius, relative to `‖h‖`.
const MIN_RHO: f64 = 1.0 / 4096.0;

/// A drafting row's reusable buffers, and its radius.
pub(super) struct Drafts {
    /// The draft decoder's working memory (the check uses the batch's).
    scratch: DecodeScratch,
    /// The check's inputs: the row's last token, then the drafted ones.
    ids: Vec<u32>,
    picks: Vec<u32>,
    /// `[picks, d_model]`: each drafted position's hidden state as the head
    /// multiplies it.
    hd: Vec<f32>,
    /// Each drafted position's rows within its radius, end to end, and its
    /// span of them with the radius (`None`: the screen left too many).
    rows: Vec<usize>,
    near: Vec<usize>,
    spans: Vec<Option<(usize, usize, f64)>>,
}

impl Default for Drafts {
    fn default() -> Drafts {
        Drafts {
            scratch: DecodeScratch::new(),
            ids: Vec::new(),
            picks: Vec::new(),
            hd: Vec::new(),
            rows: Vec::new(),
            near: Vec::new(),
            spans: Vec::new(),
        }
    }
}

/// What a drafting row keeps between turns: the draft decoder's cache, the
/// radius, and how many turns in a row stalled.
pub(super) struct DraftRow {
    cache: SeqCache,
    /// The radius of the next draft, relative to its `‖h‖`.
    rho: f64,
    stalls: u32,
}

/// Turns in a row that stall before a row stops drafting.
const MAX_STALLS: u32 = 2;

impl DraftRow {
    /// The draft beside `cache` (the row's, before its first position): the
    /// same cross-attention keys and values, computed once in full
    /// precision, and room for as many positions.
    pub(super) fn new(cache: &SeqCache) -> DraftRow {
        let layers = cache.cross_k.len();
        let inner = cache
            .cross_k
            .first()
            .map_or(0, |k| k.len() / cache.enc_len.max(1));
        let mut d = SeqCache::new(layers, inner, cache.capacity);
        d.cross_k.clone_from(&cache.cross_k);
        d.cross_v.clone_from(&cache.cross_v);
        d.enc_len = cache.enc_len;
        DraftRow {
            cache: d,
            rho: FIRST_RHO,
            stalls: 0,
        }
    }

    /// Whether the row's turns keep stalling (the screen left the first
    /// drafted position undecided, [`MAX_STALLS`] turns in a row): drafting
    /// costs it more than it saves.
    pub(super) fn stalled(&self) -> bool {
        self.stalls >= MAX_STALLS
    }
}

/// The row a turn advances: its ids so far (starting with the decoder start
/// token), options and EOS, its cache and its draft.
pub(super) struct Turn<'a> {
    pub seq: &'a mut Vec<u32>,
    pub opts: &'a GenerateOptions,
    pub eos: u32,
    pub cache: &'a mut SeqCache,
    pub draft: &'a mut DraftRow,
}

impl Drafts {
    /// One turn of row `t`: drafts up to [`DRAFT_TOKENS`] tokens, checks
    /// them, and hands each certified id to `on_token` as it is settled.
    /// Returns whether the row goes on (no EOS, `Break` or
    /// `max_new_tokens`). `main` is the full-precision decoder's scratch.
    pub(super) fn turn(
        &mut self,
        model: &T5Model,
        head: &CertifiedHead,
        t: Turn<'_>,
        main: &mut DecodeScratch,
        cert: &mut CertScratch,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<bool> {
        let (decoder, _) = model.require_decoder()?;
        let draft = model
            .draft
            .as_deref()
            .expect("a drafting row's model has a draft");
        let d = model.config.d_model;
        let start = model.config.decoder_start_token_id;
        let last = *t.seq.last().unwrap_or(&start);
        // Positions fed so far: every id but the last.
        let fed = t.seq.len() - 1;
        debug_assert_eq!(t.cache.len, fed);
        let dr = t.draft;
        if dr.cache.len < fed {
            // The row stepped without drafting (in a batch of several).
            let behind = &t.seq[dr.cache.len..fed];
            model.decode_positions(draft, behind, &mut dr.cache, &mut self.scratch)?;
        }
        let generated = fed;
        let budget = t.opts.max_new_tokens.saturating_sub(generated).max(1);
        let banned = |i: usize| (generated + i < t.opts.min_new_tokens).then_some(t.eos as usize);

        // Draft, one step at a time.
        self.ids.clear();
        self.ids.push(last);
        self.picks.clear();
        self.hd.clear();
        self.rows.clear();
        self.spans.clear();
        for i in 0..DRAFT_TOKENS.min(budget) {
            model.decode_positions(draft, &self.ids[i..i + 1], &mut dr.cache, &mut self.scratch)?;
            let h = model.step_head_input(&mut self.scratch)?;
            let radius = dr.rho * norm(h);
            let pick = match head.argmax_near(h, banned(i), radius, cert, &mut self.near) {
                Some(id) => {
                    let a = self.rows.len();
                    self.rows.extend_from_slice(&self.near);
                    self.spans.push(Some((a, self.rows.len(), radius)));
                    id
                }
                None => {
                    // Too many rows (or a margin too small for any radius):
                    // a narrower radius next time. The position ends the
                    // draft (each one more would cost the head twice), so
                    // no later draft feeds on its pick, and the check's
                    // own pick settles it: it needs none.
                    dr.rho = (dr.rho / 2.0).max(MIN_RHO);
                    self.spans.push(None);
                    NO_PICK as usize
                }
            } as u32;
            self.hd.extend_from_slice(h);
            self.picks.push(pick);
            if pick == t.eos || pick == NO_PICK {
                break;
            }
            self.ids.push(pick);
        }
        let n = self.picks.len();
        if self.spans[0].is_none() {
            // The start token's turn does not count: its position is unlike
            // the others.
            dr.stalls += u32::from(fed > 0);
        } else {
            dr.stalls = 0;
        }

        // Check every drafted position in one pass of the full decoder.
        model.decode_positions(decoder, &self.ids[..n], t.cache, main)?;
        let hf = model.step_head_input(main)?;
        let mut kept = n;
        let mut go_on = true;
        let mut farthest = 0f64;
        for i in 0..n {
            let (h, hd) = (&hf[i * d..(i + 1) * d], &self.hd[i * d..(i + 1) * d]);
            let dist = distance(h, hd);
            let id = match self.spans[i] {
                Some((a, b, radius)) if dist <= radius => head.argmax_among(h, &self.rows[a..b]),
                _ => None,
            };
            let id = match id {
                Some(id) => id as u32,
                None => head.argmax_with(h, banned(i), cert).0 as u32,
            };
            // The distance where a radius was used, relative to the
            // draft's norm. (An undecided position, such as the first one
            // after the start token, says nothing of the radius the screen
            // can afford.)
            let hn = norm(hd);
            if self.spans[i].is_some() && hn > 0.0 && dist.is_finite() {
                farthest = farthest.max(dist / hn);
            }
            t.seq.push(id);
            let more = t.seq.len() - 1 < t.opts.max_new_tokens;
            go_on = on_token(id).is_continue() && id != t.eos && more;
            if !go_on || id != self.picks[i] {
                kept = i + 1;
                break;
            }
        }
        // The next radius: a quarter more than this turn's farthest
        // distance (the candidates grow fast with the radius, and a miss
        // costs a screen pass).
        if farthest > 0.0 {
            dr.rho = (1.25 * farthest).max(MIN_RHO);
        }
        // Positions past the last kept one were fed a token that is not the
        // row's: drop them from both caches.
        truncate(t.cache, fed + kept);
        truncate(&mut dr.cache, fed + kept);
        Ok(go_on)
    }
}

/// Drops the positions of `c` from `len` on.
fn truncate(c: &mut SeqCache, len: usize) {
    if c.len <= len {
        return;
    }
    for (k, v) in c.self_k.iter_mut().zip(c.self_v.iter_mut()) {
        let inner = k.len() / c.len;
        k.truncate(len * inner);
        v.truncate(len * inner);
    }
    c.len = len;
}

/// `‖v‖₂` in f64.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// `‖a − b‖₂`, rounded up: each difference and square is within 2⁻⁵³
/// relative in f64, far inside the margin.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    s.sqrt() * (1.0 + 1e-9)
}
