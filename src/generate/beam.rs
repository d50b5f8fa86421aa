//! Beam search, a port of HF's vectorized `_beam_search` (transformers 4.57)
//! for one prompt: the same candidate selection (top `2 * num_beams` of all
//! beams' accumulated log-probabilities), the same finishing rules (EOS or the
//! length limit), the same length penalty and `early_stopping` heuristics, the
//! same `-1e9` masking in f32. The scores are HF's `sequences_scores`.

use super::{processors, EarlyStopping, GenerateOptions};
use crate::model::{SeqCache, T5Model};
use crate::Result;

/// One finished beam-search hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated ids (no decoder start token; ends with EOS unless it stopped
    /// at `max_new_tokens`).
    pub ids: Vec<u32>,
    /// Sum of the token log-probabilities (after the logits processors) divided
    /// by `ids.len() ^ length_penalty`: HF's `sequences_scores`.
    pub score: f32,
}

const NEG: f32 = -1.0e9;

/// Indices of the `k` largest `vals`, largest first, ties to the lower index.
fn top_indices(vals: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..vals.len()).collect();
    let k = k.min(vals.len());
    idx.select_nth_unstable_by(
        k.saturating_sub(1).min(vals.len().saturating_sub(1)),
        |&a, &b| vals[b].total_cmp(&vals[a]).then(a.cmp(&b)),
    );
    idx.truncate(k);
    idx.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]).then(a.cmp(&b)));
    idx
}

/// Beam-searches one prompt; returns the best `num_return_sequences`
/// hypotheses, best first.
pub fn beam_search(
    model: &T5Model,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<Vec<Hypothesis>> {
    opts.check(&[prompt])?;
    model.require_decoder()?;
    let cfg = &model.config;
    let (nb, vocab, eos) = (opts.num_beams, cfg.vocab_size, opts.eos(model));
    let k = 2 * nb;
    let start = cfg.decoder_start_token_id;
    let prompt_len = 1usize;
    let max_length = prompt_len + opts.max_new_tokens;
    let lp = opts.length_penalty as f64;
    if opts.max_new_tokens == 0 {
        return Ok(vec![
            Hypothesis {
                ids: vec![],
                score: 0.0
            };
            opts.num_return_sequences
        ]);
    }

    let enc = model.encode(prompt)?;
    let first = model.new_cache(&enc, opts.max_new_tokens)?;
    drop(enc);
    let mut caches: Vec<SeqCache> = vec![first; nb];
    let mut running: Vec<Vec<u32>> = vec![vec![start]; nb];
    let mut running_scores: Vec<f32> = (0..nb).map(|b| if b == 0 { 0.0 } else { NEG }).collect();
    // HF's `sequences`, `beam_scores`, `is_sent_finished`.
    let mut fin_seqs: Vec<Vec<u32>> = vec![vec![start]; nb];
    let mut fin_scores: Vec<f32> = vec![NEG; nb];
    let mut fin_done: Vec<bool> = vec![false; nb];
    let mut unsatisfied = true;
    let mut cur_len = prompt_len;
    let mut scratch = crate::model::DecodeScratch::new();
    let mut toks: Vec<u32> = Vec::with_capacity(nb);
    let mut proc_scratch = processors::Scratch::default();

    loop {
        // a. logits of every running beam's last token.
        // The model step works in a scratch kept across steps; the beam
        // bookkeeping below is HF's, per step, on num_beams-sized vectors.
        toks.clear();
        toks.extend(running.iter().map(|s| *s.last().unwrap_or(&start)));
        // Home shares: each core reads the same layer and head rows every
        // step (t5edge_kernels::pool::with_home_shares).
        let lp_all = t5edge_kernels::pool::with_home_shares(|| {
            model.decode_step(&toks, &mut caches, &mut scratch)?;
            model.step_logits(&mut scratch)
        })?;
        // b. log-softmax, processors, accumulate.
        for (b, row) in lp_all.chunks_exact_mut(vocab).enumerate() {
            processors::log_softmax(row);
            processors::process(row, &running[b], opts, eos, &mut proc_scratch);
            let base = running_scores[b];
            row.iter_mut().for_each(|v| *v += base);
        }
        // c. top 2*num_beams continuations over all beams.
        let top = top_indices(lp_all, k);
        let cand_scores: Vec<f32> = top.iter().map(|&i| lp_all[i]).collect();
        let cand_beam: Vec<usize> = top.iter().map(|&i| i / vocab).collect();
        let cand_tok: Vec<u32> = top.iter().map(|&i| (i % vocab) as u32).collect();
        // d. which candidates finish (EOS, or the length limit).
        let at_limit = cur_len + 1 >= max_length;
        let hits: Vec<bool> = cand_tok.iter().map(|&t| at_limit || t == eos).collect();
        // e. the best num_beams unfinished continue.
        let run_vals: Vec<f32> = cand_scores
            .iter()
            .zip(&hits)
            .map(|(&s, &h)| s + if h { NEG } else { 0.0 })
            .collect();
        let next = top_indices(&run_vals, nb);
        // f. merge the top num_beams candidates that finished into the finished set.
        let penalty = ((cur_len + 1 - prompt_len) as f64).powf(lp);
        let full = opts.early_stopping == EarlyStopping::Finished && fin_done.iter().all(|&d| d);
        let mut merged_scores = fin_scores.clone();
        let mut merged_done = fin_done.clone();
        for c in 0..k {
            let did = hits[c] && c < nb;
            let mut s = (cand_scores[c] as f64 / penalty) as f32;
            if full {
                s += NEG;
            }
            if !unsatisfied {
                s += NEG;
            }
            if !did {
                s += NEG;
            }
            merged_scores.push(s);
            merged_done.push(did);
        }
        let keep = top_indices(&merged_scores, nb);
        let cand_seq = |c: usize| {
            let mut s = running[cand_beam[c]].clone();
            s.push(cand_tok[c]);
            s
        };
        let new_fin: Vec<Vec<u32>> = keep
            .iter()
            .map(|&m| {
                if m < nb {
                    fin_seqs[m].clone()
                } else {
                    cand_seq(m - nb)
                }
            })
            .collect();
        fin_scores = keep.iter().map(|&m| merged_scores[m]).collect();
        fin_done = keep.iter().map(|&m| merged_done[m]).collect();
        fin_seqs = new_fin;

        // g. the next running beams, their caches reordered.
        let new_running: Vec<Vec<u32>> = next.iter().map(|&c| cand_seq(c)).collect();
        running_scores = next.iter().map(|&c| run_vals[c]).collect();
        let mut old: Vec<Option<SeqCache>> = caches.into_iter().map(Some).collect();
        let mut uses = vec![0usize; nb];
        for &c in &next {
            uses[cand_beam[c]] += 1;
        }
        caches = next
            .iter()
            .map(|&c| {
                let b = cand_beam[c];
                uses[b] -= 1;
                if uses[b] == 0 {
                    old[b].take().unwrap_or_default()
                } else {
                    old[b].clone().unwrap_or_default()
                }
            })
            .collect();
        running = new_running;

        cur_len += 1;
        let best_len = if opts.early_stopping == EarlyStopping::Never && lp > 0.0 {
            max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible = (running_scores[0] as f64 / (best_len as f64).powf(lp)) as f32;
        let min_fin = fin_scores.iter().copied().fold(f32::INFINITY, f32::min);
        unsatisfied = unsatisfied
            && fin_done
                .iter()
                .any(|&d| best_possible > if d { min_fin } else { NEG });
        let exists_open =
            !(fin_done.iter().all(|&d| d) && opts.early_stopping == EarlyStopping::Finished);
        let valid = !hits.iter().all(|&h| h);
        if !(unsatisfied && exists_open && valid) {
            break;
        }
    }
    Ok(fin_seqs
        .into_iter()
        .zip(fin_scores)
        .take(opts.num_return_sequences)
        .map(|(mut s, score)| Hypothesis {
            ids: s.split_off(1),
            score,
        })
        .collect())
}
