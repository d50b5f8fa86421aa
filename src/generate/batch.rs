//! A decode batch that rows join and leave between steps: the one token loop
//! of greedy, sampling and certified greedy decoding, step by step.
//!
//! [`super::generate`] and [`super::generate_stream_batch`] fill a batch once
//! and step it until it is empty; a server keeps one running and lets
//! newcomers join between steps ("continuous batching"): a finished row
//! leaves at the step that finished it, a cancelled one ([`DecodeBatch::remove`])
//! at once, and a newcomer whose encoder pass ([`Prefilled::new`]) is done
//! joins before the next step. Rows share only the decoder's linear layers
//! (attention, position bias and caches are per row), and every row carries
//! its own options, processors and random stream, so a row's tokens are the
//! ones it gets alone whatever shares its steps, as long as the kernels'
//! per-row arithmetic does not depend on the number of rows (see the kernels
//! crate's notes on batch invariance).

use super::drafted::{self, DraftRow, Drafts};
use super::processors::{self, Scratch};
use super::rng::DecodeRng;
use super::GenerateOptions;
use crate::model::certified::CertScratch;
use crate::model::Rows;
use crate::model::{DecodeScratch, SeqCache, T5Model};
use crate::Result;
use std::ops::ControlFlow;
use t5edge_kernels::ops;
use t5edge_kernels::screen::{Pick, RowsScratch};

/// A prompt after its encoder pass: the decoder cache with the cross-attention
/// keys and values, ready to join a [`DecodeBatch`]. Made without the batch,
/// so a caller may prefill on any thread.
pub struct Prefilled {
    cache: SeqCache,
}

impl Prefilled {
    /// Runs the encoder over `prompt` alone (the same bits as a batch of one)
    /// and sizes the cache for `opts.max_new_tokens` positions. Checks the
    /// prompt and the options.
    pub fn new(model: &T5Model, prompt: &[u32], opts: &GenerateOptions) -> Result<Prefilled> {
        opts.check(&[prompt])?;
        model.require_decoder()?;
        let enc = model.encode_packed(&[prompt])?;
        let cache = model.new_cache(&enc, opts.max_new_tokens)?;
        crate::model::scratch::give_back(enc);
        Ok(Prefilled { cache })
    }
}

/// One running row.
struct Row {
    key: u64,
    /// The decoder input so far, starting with the decoder start token.
    seq: Vec<u32>,
    opts: GenerateOptions,
    eos: u32,
    /// `Some` when sampling.
    rng: Option<DecodeRng>,
    /// Picks its tokens with the model's certified int8 head.
    certified: bool,
    /// Greedy with no processor but EOS suppression: its pick may come from
    /// the screen of an int8 head (the same id as the logits' argmax).
    screened: bool,
    /// A certified row's draft, when the model has a draft decoder: alone
    /// in the batch, the row decodes by drafts (`super::drafted`) until
    /// they stall.
    draft: Option<DraftRow>,
}

impl Row {
    /// The id this row may not pick next: EOS while it has generated fewer
    /// than `min_new_tokens`.
    fn banned(&self) -> Option<usize> {
        (self.seq.len() - 1 < self.opts.min_new_tokens).then_some(self.eos as usize)
    }
}

/// Rows `rows` of the `[_, d]` matrix `h`, one after another in `buf`.
fn gather_rows<'b>(h: &[f32], d: usize, rows: &[usize], buf: &'b mut Vec<f32>) -> &'b [f32] {
    let out = crate::model::scratch::sized(buf, rows.len() * d);
    for (slot, &i) in rows.iter().enumerate() {
        out[slot * d..(slot + 1) * d].copy_from_slice(&h[i * d..(i + 1) * d]);
    }
    out
}

/// A row that left the batch: its key and generated ids (without the decoder
/// start token; ending with EOS when one was produced).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub key: u64,
    pub ids: Vec<u32>,
}

/// The running batch. Once a step has sized its buffers and while no row
/// joins, a step allocates nothing (tests/no_alloc.rs).
pub struct DecodeBatch<'m> {
    model: &'m T5Model,
    rows: Vec<Row>,
    /// `caches[i]` is `rows[i]`'s: the decoder takes the caches as one slice.
    caches: Vec<SeqCache>,
    toks: Vec<u32>,
    /// The step's working memory, kept for the next batch on this thread.
    buf: StepBuffers,
    drafts: Drafts,
    /// Inside [`DecodeBatch::step`].
    stepping: bool,
}

/// A batch's step buffers, kept on its thread for the next batch when it
/// ends (as the encoder keeps its scratch): a warm call then sizes nothing
/// anew. Whether freed memory stays with the process for the next call is
/// otherwise the allocator's choice, and a Python process gave it back to the
/// OS after every call and faulted it in again (model/scratch.rs, `spare`).
#[derive(Default)]
struct StepBuffers {
    scratch: DecodeScratch,
    proc_scratch: Scratch,
    cert: CertScratch,
    /// One row's logits, for a screened row the screen left undecided (and
    /// the full head's, while the screen calibrates).
    row_logits: Vec<f32>,
    /// A batch's screened picks: the screened rows and their hidden states
    /// (when not every row is), the screen's buffers, banned ids and picks,
    /// each row's decided id, and the rows that need logits with their
    /// hidden states (their logits go to `row_logits`, a row each).
    sel: Vec<usize>,
    sel_h: Vec<f32>,
    rows_screen: RowsScratch,
    bans: Vec<Option<usize>>,
    picks: Vec<Pick>,
    row_pick: Vec<Option<u32>>,
    undecided: Vec<usize>,
    undecided_h: Vec<f32>,
}

/// The most float memory a batch's step buffers keep on a thread (a batch of
/// 64 rows of a 32k vocabulary holds 8 MB of logits).
const KEEP_STEP_BYTES: usize = 32 << 20;

thread_local! {
    static STEP_BUFFERS: std::cell::Cell<Option<Box<StepBuffers>>> =
        const { std::cell::Cell::new(None) };
}

impl Drop for DecodeBatch<'_> {
    fn drop(&mut self) {
        use std::mem::take;
        // The rows' caches, dropped after this, are the next call's spares.
        crate::model::scratch::end_call();
        if self.stepping || std::thread::panicking() {
            // A step cut short may leave a buffer's invariant broken (the
            // processors' `seen` stays all-false only between steps).
            return;
        }
        let b = take(&mut self.buf);
        let floats = [&b.row_logits, &b.sel_h, &b.undecided_h]
            .iter()
            .map(|v| v.capacity() * 4)
            .sum::<usize>();
        if b.scratch.capacity_bytes() + floats <= KEEP_STEP_BYTES {
            // Gone with the thread when it is already ending.
            let _ = STEP_BUFFERS.try_with(|c| c.set(Some(Box::new(b))));
        }
    }
}

impl<'m> DecodeBatch<'m> {
    /// An empty batch over `model`.
    pub fn new(model: &'m T5Model) -> DecodeBatch<'m> {
        // A second batch on this thread while one runs starts empty.
        let buf = STEP_BUFFERS
            .try_with(|c| c.take())
            .ok()
            .flatten()
            .map_or_else(StepBuffers::default, |b| *b);
        DecodeBatch {
            model,
            rows: Vec::new(),
            caches: Vec::new(),
            toks: Vec::new(),
            buf,
            drafts: Drafts::default(),
            stepping: false,
        }
    }

    /// Room for `n` rows without reallocating.
    pub fn reserve(&mut self, n: usize) {
        self.rows.reserve(n);
        self.caches.reserve(n);
        self.toks.reserve(n);
    }

    /// Rows running.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No row running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a prefilled prompt as row `key`: sampling from `rng` when one is
    /// given (a request alone samples from [`DecodeRng::new`]`(seed, 0)`),
    /// else greedy; beam search is not a row-wise strategy and is refused. Returns it at once as finished when `max_new_tokens` is 0.
    pub fn join(
        &mut self,
        key: u64,
        pre: Prefilled,
        opts: &GenerateOptions,
        rng: Option<DecodeRng>,
    ) -> Result<Option<Finished>> {
        opts.validate()?;
        if opts.num_beams > 1 {
            return Err(crate::Error::Request(
                "a decode batch runs greedy or sampling rows (num_beams 1)".into(),
            ));
        }
        if opts.max_new_tokens == 0 {
            return Ok(Some(Finished {
                key,
                ids: Vec::new(),
            }));
        }
        let (_, head) = self.model.require_decoder()?;
        let certified = opts.exact && rng.is_none() && head.certified.is_some();
        let screened = !certified
            && rng.is_none()
            && opts.repetition_penalty == 1.0
            && opts.no_repeat_ngram_size == 0;
        let mut seq = Vec::with_capacity(opts.max_new_tokens + 1);
        seq.push(self.model.config.decoder_start_token_id);
        let drafts = certified
            && self.model.draft.is_some()
            && head.certified.as_ref().is_some_and(|h| h.screens());
        let draft = drafts.then(|| DraftRow::new(&pre.cache));
        self.rows.push(Row {
            key,
            seq,
            eos: opts.eos(self.model),
            opts: opts.clone(),
            rng,
            certified,
            screened,
            draft,
        });
        self.caches.push(pre.cache);
        Ok(None)
    }

    /// Takes row `key` out (a cancelled request); its ids so far, or `None`
    /// if no such row runs.
    pub fn remove(&mut self, key: u64) -> Option<Vec<u32>> {
        let i = self.rows.iter().position(|r| r.key == key)?;
        self.caches.remove(i);
        let mut seq = self.rows.remove(i).seq;
        seq.remove(0);
        Some(seq)
    }

    /// The keys of the running rows, in batch order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.rows.iter().map(|r| r.key)
    }

    /// One decode step of every row: each feeds its last token, gets its next
    /// (processors, then argmax, a draw or the certified pick), and
    /// `on_token(key, id)` sees it at once; `Break` ends that row after the
    /// token. Rows that end (EOS, `max_new_tokens`, `Break`) leave the batch
    /// and are pushed to `finished`, the others keep their order.
    pub fn step(
        &mut self,
        on_token: &mut dyn FnMut(u64, u32) -> ControlFlow<()>,
        finished: &mut Vec<Finished>,
    ) -> Result<()> {
        // Cleared only when the step returns: a step a panic cut short
        // (caught by a caller, as the server's scheduler does) leaves its
        // buffers out of the ones kept for the next batch.
        self.stepping = true;
        // Home shares: each core reads the same layer and head rows every
        // step, which it then finds in its own L2
        // (t5edge_kernels::pool::with_home_shares).
        let r = t5edge_kernels::pool::with_home_shares(|| self.step_rows(on_token, finished));
        self.stepping = false;
        r
    }

    fn step_rows(
        &mut self,
        on_token: &mut dyn FnMut(u64, u32) -> ControlFlow<()>,
        finished: &mut Vec<Finished>,
    ) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let model = self.model;
        if let ([r], [cache]) = (self.rows.as_mut_slice(), self.caches.as_mut_slice()) {
            let head = model.lm_head.as_ref().and_then(|h| h.certified.as_deref());
            if let (Some(draft), Some(head)) = (r.draft.as_mut(), head) {
                // A certified row alone: a turn of drafts settles one or more ids.
                let key = r.key;
                let turn = drafted::Turn {
                    seq: &mut r.seq,
                    opts: &r.opts,
                    eos: r.eos,
                    cache,
                    draft,
                };
                let go_on = self.drafts.turn(
                    model,
                    head,
                    turn,
                    &mut self.buf.scratch,
                    &mut self.buf.cert,
                    &mut |id| on_token(key, id),
                )?;
                if r.draft.as_ref().is_some_and(|d| d.stalled()) {
                    r.draft = None;
                }
                if !go_on {
                    let r = self.rows.pop().expect("one row");
                    self.caches.clear();
                    let mut ids = r.seq;
                    ids.remove(0);
                    finished.push(Finished { key: r.key, ids });
                }
                return Ok(());
            }
        }
        let cfg = &model.config;
        self.toks.clear();
        self.toks.extend(
            self.rows
                .iter()
                .map(|r| *r.seq.last().unwrap_or(&cfg.decoder_start_token_id)),
        );
        model.decode_step(&self.toks, &mut self.caches, &mut self.buf.scratch)?;
        let (vocab, d) = (cfg.vocab_size, cfg.d_model);
        // One row screens as its head was told, and so does every row of a
        // float head's batch (`ScreenedHead::row_by_row`). In an int8 batch,
        // where that pays (`ScreenedHead::batch_screens`), one pass of the
        // multi-row screen picks for every screenable greedy row, and the
        // other rows (sampling, processors, picks the screen left undecided)
        // get their logits in one pass over just those rows; certified rows
        // pick as always.
        let (_, lm_head) = model.require_decoder()?;
        let screen = (self.rows.len() <= SCREEN_MAX_ROWS
            || lm_head.screen.row_by_row(&lm_head.linear))
            && lm_head.screen.wanted(&lm_head.linear);
        let batch_screen = self.rows.len() > SCREEN_MAX_ROWS
            && self.rows.iter().any(|r| r.screened)
            && lm_head.screen.batch_screens(&lm_head.linear);
        let need_logits = !batch_screen
            && self
                .rows
                .iter()
                .any(|r| !(r.certified || (screen && r.screened)));
        let (head_in, mut logits) = model.step_head(&mut self.buf.scratch, need_logits)?;
        if batch_screen {
            let m = self.rows.len();
            self.buf.sel.clear();
            self.buf
                .sel
                .extend((0..m).filter(|&i| self.rows[i].screened));
            let n_sel = self.buf.sel.len();
            // The screened rows' hidden states, contiguous (`head_in` itself
            // when every row is screened).
            let hs: &[f32] = if n_sel == m {
                head_in
            } else {
                gather_rows(head_in, d, &self.buf.sel, &mut self.buf.sel_h)
            };
            self.buf.bans.clear();
            self.buf
                .bans
                .extend(self.buf.sel.iter().map(|&i| self.rows[i].banned()));
            if !lm_head.screen.pick_rows(
                &lm_head.linear,
                hs,
                n_sel,
                &self.buf.bans,
                &mut self.buf.rows_screen,
                &mut self.buf.picks,
            ) {
                self.buf.picks.clear();
                self.buf
                    .picks
                    .resize(n_sel, Pick::Undecided { candidates: 0 });
            }
            self.buf.row_pick.clear();
            self.buf.row_pick.resize(m, None);
            for (&i, p) in self.buf.sel.iter().zip(&self.buf.picks) {
                if let Pick::Id { id, .. } = *p {
                    self.buf.row_pick[i] = Some(id as u32);
                }
            }
            // Slot s of `row_logits` is row `undecided[s]`'s.
            self.buf.undecided.clear();
            self.buf.undecided.extend(
                (0..m).filter(|&i| !self.rows[i].certified && self.buf.row_pick[i].is_none()),
            );
            let u = self.buf.undecided.len();
            if u > 0 {
                let hs = gather_rows(head_in, d, &self.buf.undecided, &mut self.buf.undecided_h);
                let l = crate::model::scratch::sized(&mut self.buf.row_logits, u * vocab);
                lm_head.linear.forward_rows(hs, u, l, Rows::Invariant);
            }
        }
        let mut keep = 0;
        for i in 0..self.rows.len() {
            let r = &mut self.rows[i];
            let h = &head_in[i * d..(i + 1) * d];
            // validate() allows only EOS suppression with exact; a screened
            // row has no other processor.
            let banned = r.banned();
            let next = match (&lm_head.certified, r.certified, logits.as_deref_mut()) {
                (Some(head), true, _) => head.argmax_with(h, banned, &mut self.buf.cert).0 as u32,
                (_, _, None) if batch_screen => match self.buf.row_pick[i] {
                    Some(id) => id,
                    None => {
                        let slot = self
                            .buf
                            .undecided
                            .iter()
                            .position(|&u| u == i)
                            .expect("an undecided row has a slot");
                        let l = &mut self.buf.row_logits[slot * vocab..(slot + 1) * vocab];
                        pick(l, r, &mut self.buf.proc_scratch)
                    }
                },
                (_, _, Some(all)) => pick(
                    &mut all[i * vocab..(i + 1) * vocab],
                    r,
                    &mut self.buf.proc_scratch,
                ),
                (_, _, None) if screen && r.screened => {
                    match lm_head.screen.pick(
                        &lm_head.linear,
                        h,
                        banned,
                        &mut self.buf.cert,
                        &mut self.buf.row_logits,
                    ) {
                        Some(id) => id as u32,
                        None => {
                            let l = crate::model::scratch::sized(&mut self.buf.row_logits, vocab);
                            lm_head.linear.forward_rows(h, 1, l, Rows::Invariant);
                            pick(l, r, &mut self.buf.proc_scratch)
                        }
                    }
                }
                (_, _, None) => unreachable!(
                    "logits are computed for every row that is not certified or screened"
                ),
            };
            r.seq.push(next);
            let go_on = on_token(r.key, next).is_continue();
            let more = r.seq.len() - 1 < r.opts.max_new_tokens;
            if next != r.eos && go_on && more {
                // Swapping kept rows forward preserves their order.
                self.rows.swap(keep, i);
                self.caches.swap(keep, i);
                keep += 1;
            }
        }
        // Rows past `keep` have ended; their caches are dropped here.
        for r in self.rows.drain(keep..) {
            let mut ids = r.seq;
            ids.remove(0);
            finished.push(Finished { key: r.key, ids });
        }
        self.caches.truncate(keep);
        Ok(())
    }
}

/// Rows up to which a step screens each greedy row's pick on its own (the
/// one-row screen); more rows take the multi-row pass.
const SCREEN_MAX_ROWS: usize = 1;

/// Row `r`'s next token from its logits `l`: processors, then argmax or a draw.
fn pick(l: &mut [f32], r: &mut Row, scratch: &mut Scratch) -> u32 {
    processors::process(l, &r.seq, &r.opts, r.eos, scratch);
    match r.rng.as_mut() {
        Some(rng) => {
            processors::warp(l, &r.opts, scratch);
            rng.categorical(l)
        }
        None => ops::argmax(l),
    }
    .unwrap_or(r.eos as usize) as u32
}

/// The whole-batch loop: prompts join in prompt order, up to
/// [`super::waves::rows_in_flight`] at a time (all of them unless their
/// caches would outgrow the cache budget), each group with one encoder pass,
/// and a waiting prompt joins as a row finishes; the batch steps until every
/// prompt is done. Row `s` samples from `rngs[s]`. Returns each row's ids in
/// prompt order, the same whatever the cap (rows share only the linear
/// layers' arithmetic, which is per row).
pub(crate) fn decode_loop(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
    rngs: Option<Vec<DecodeRng>>,
    on_token: &mut dyn FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    model.require_decoder()?;
    let n = prompts.len();
    let cap = super::waves::rows_in_flight(model, prompts, opts.max_new_tokens);
    let mut batch = DecodeBatch::new(model);
    batch.reserve(cap.min(n));
    let mut out = vec![Vec::new(); n];
    let mut finished = Vec::with_capacity(n);
    let mut rngs = rngs.map(|r| r.into_iter());
    let mut next = 0;
    while next < n || !batch.is_empty() {
        if next < n && batch.len() < cap {
            let end = (next + cap - batch.len()).min(n);
            let enc = model.encode_packed(&prompts[next..end])?;
            let d = model.config.d_model;
            let mut row = 0;
            for s in next..end {
                let e = &enc[row * d..(row + prompts[s].len()) * d];
                row += prompts[s].len();
                let pre = Prefilled {
                    cache: model.new_cache(e, opts.max_new_tokens)?,
                };
                let rng = rngs.as_mut().and_then(|r| r.next());
                if let Some(f) = batch.join(s as u64, pre, opts, rng)? {
                    out[s] = f.ids;
                }
            }
            crate::model::scratch::give_back(enc);
            next = end;
            continue;
        }
        batch.step(&mut |k, id| on_token(k as usize, id), &mut finished)?;
    }
    for f in finished {
        out[f.key as usize] = f.ids;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> bool {
        let b = STEP_BUFFERS.take();
        let some = b.is_some();
        STEP_BUFFERS.set(b);
        some
    }

    /// A batch leaves its step buffers for the next one on its thread, but
    /// not after a step a panic cut short: a caller that catches it (the
    /// server's scheduler does) must not hand the next batch buffers whose
    /// invariants the step may have left broken.
    #[test]
    fn step_buffers_are_kept_unless_a_step_was_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::synth::preset("t5-efficient-tiny-nl2").unwrap();
        let over = [
            "d_model=32",
            "d_ff=64",
            "d_kv=8",
            "num_heads=4",
            "vocab_size=256",
        ];
        let over: Vec<String> = over.iter().map(|s| s.to_string()).collect();
        let cfg = crate::synth::with_overrides(&cfg, &over).unwrap();
        crate::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
        let model = T5Model::load(dir.path()).unwrap();
        let opts = GenerateOptions::default()
            .max_new_tokens(4)
            .min_new_tokens(4)
            .repetition_penalty(1.3);
        std::thread::spawn(move || {
            let run = |panic_at: Option<usize>| {
                let mut b = DecodeBatch::new(&model);
                let pre = Prefilled::new(&model, &[5, 6, 7, 1], &opts).unwrap();
                b.join(0, pre, &opts, None).unwrap();
                let mut n = 0;
                let mut done = Vec::new();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    while !b.is_empty() {
                        let mut on = |_, _| {
                            n += 1;
                            assert_ne!(Some(n), panic_at, "a caller's panic inside a step");
                            ControlFlow::Continue(())
                        };
                        b.step(&mut on, &mut done).unwrap();
                    }
                }))
                .is_ok()
            };
            assert!(run(None));
            assert!(kept(), "a finished batch keeps its buffers");
            assert!(!run(Some(2)));
            assert!(!kept(), "a step cut short keeps none");
        })
        .join()
        .unwrap();
    }
}
