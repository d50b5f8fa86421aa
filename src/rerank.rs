//! Reranking the monoT5 way: each document goes into a template with the
//! query ("Query: {query} Document: {document} Relevant:"), the decoder
//! takes one step from its start token, and the document's score is
//! p(true) = softmax over the logits of two label tokens ("▁true" and
//! "▁false") at that step. Documents come back sorted by it.

use crate::score::forced_logits;
use crate::{Error, Result, T5Model, Tokenizer};

/// monoT5's input template.
pub const DEFAULT_TEMPLATE: &str = "Query: {query} Document: {document} Relevant:";

/// How documents become model inputs and which tokens are the labels.
#[derive(Clone, Debug, PartialEq)]
pub struct RerankOptions {
    /// The input text: `{query}` and `{document}` are replaced (each at most
    /// once, `{document}` required; text put in is not searched again).
    pub template: String,
    /// The vocabulary piece of the "relevant" label (`▁true` in T5's).
    pub true_token: String,
    /// The vocabulary piece of the "not relevant" label (`▁false`).
    pub false_token: String,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            template: DEFAULT_TEMPLATE.into(),
            true_token: "\u{2581}true".into(),
            false_token: "\u{2581}false".into(),
        }
    }
}

/// One document's place in the ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The document's position in the input list.
    pub index: usize,
    /// p(true) against p(false): in (0, 1), higher is more relevant.
    pub score: f64,
}

impl RerankOptions {
    /// The template with `query` and `document` put in.
    pub fn fill(&self, query: &str, document: &str) -> Result<String> {
        let t = &self.template;
        let count = |p: &str| t.matches(p).count();
        if count("{document}") != 1 || count("{query}") > 1 {
            return Err(Error::Request(format!(
                "the template {t:?} must hold {{document}} once and {{query}} at most once"
            )));
        }
        // Split on the placeholders of the template only, so a query that
        // contains "{document}" stays text.
        let mut out = String::with_capacity(t.len() + query.len() + document.len());
        let mut rest = t.as_str();
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(r) = tail.strip_prefix("{query}") {
                out.push_str(query);
                rest = r;
            } else if let Some(r) = tail.strip_prefix("{document}") {
                out.push_str(document);
                rest = r;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The ids of the two label pieces in `tok`'s vocabulary.
    pub fn label_ids(&self, tok: &Tokenizer) -> Result<(u32, u32)> {
        let id = |piece: &str, which: &str| {
            tok.token_to_id(piece).ok_or_else(|| {
                Error::Request(format!(
                    "the {which} label {piece:?} is not a token of the tokenizer's vocabulary (name the piece as the vocabulary spells it, \u{2581} marking a word's leading space)"
                ))
            })
        };
        Ok((
            id(&self.true_token, "true")?,
            id(&self.false_token, "false")?,
        ))
    }
}

/// p(true) of each encoder input (already templated and tokenized): one
/// decoder step from the start token, the softmax of the two label logits.
/// All inputs go through one batched pass (see `score::forced_logits`); an
/// error names the input (0-based) when there are several.
pub fn relevance(
    model: &T5Model,
    inputs: &[&[u32]],
    true_id: u32,
    false_id: u32,
) -> Result<Vec<f64>> {
    model.check_ids(&[true_id, false_id])?;
    let start = [model.config.decoder_start_token_id];
    let decs = vec![&start[..]; inputs.len()];
    let mut p = vec![0.0; inputs.len()];
    forced_logits(model, inputs, &decs, |i, _, row| {
        // softmax([t, f])[0] = 1 / (1 + e^(f - t)), in f64.
        let (t, f) = (row[true_id as usize] as f64, row[false_id as usize] as f64);
        p[i] = 1.0 / (1.0 + (f - t).exp());
    })
    .map_err(|e| match e {
        // forced_logits counts pairs; here each pair is a document.
        Error::Request(m) if m.starts_with("pair ") => {
            Error::Request(format!("document {}", &m["pair ".len()..]))
        }
        other => other,
    })?;
    Ok(p)
}

/// Ranks `documents` for `query`: each is templated, tokenized with `tok`,
/// scored by [`relevance`], and the list comes back best first (ties keep
/// the input order).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
/// # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
/// #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
/// # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
/// use t5edge::rerank::{rerank, RerankOptions};
/// let model = t5edge::T5Model::load(dir.path())?;
/// let tok = t5edge::Tokenizer::from_dir(dir.path(), model.config.vocab_size)?;
/// // A T5 vocabulary has ▁true and ▁false (the default); this synthetic
/// // one does not, so two of its words stand in.
/// let opts = RerankOptions { true_token: "▁the".into(), false_token: "▁of".into(), ..Default::default() };
/// let ranked = rerank(&model, &tok, "quick fox", &["the lazy dog", "a brown fox"], &opts)?;
/// assert_eq!(ranked.len(), 2);
/// assert!(ranked[0].score >= ranked[1].score);
/// # Ok::<(), t5edge::Error>(())
/// ```
pub fn rerank<S: AsRef<str>>(
    model: &T5Model,
    tok: &Tokenizer,
    query: &str,
    documents: &[S],
    opts: &RerankOptions,
) -> Result<Vec<Ranked>> {
    let (t, f) = opts.label_ids(tok)?;
    let texts = documents
        .iter()
        .map(|d| opts.fill(query, d.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let inputs = tok.encode_batch(&texts)?;
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    Ok(rank(relevance(model, &refs, t, f)?))
}

/// Scores in input order to a ranking, best first; ties keep input order.
pub fn rank(scores: Vec<f64>) -> Vec<Ranked> {
    let mut r: Vec<Ranked> = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| Ranked { index, score })
        .collect();
    r.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_takes_the_text_once() {
        let o = RerankOptions::default();
        assert_eq!(
            o.fill("who {document}?", "it {query}").unwrap(),
            "Query: who {document}? Document: it {query} Relevant:"
        );
        let o = RerankOptions {
            template: "{x} {document}".into(),
            ..o
        };
        assert_eq!(o.fill("q", "d").unwrap(), "{x} d");
        let bad = RerankOptions {
            template: "{query} only".into(),
            ..Default::default()
        };
        assert!(bad
            .fill("q", "d")
            .unwrap_err()
            .to_string()
            .contains("{document} once"));
    }

    #[test]
    fn ranking_is_best_first_and_stable() {
        let r = rank(vec![0.2, 0.9, 0.2, 0.5]);
        let order: Vec<usize> = r.iter().map(|x| x.index).collect();
        assert_eq!(order, [1, 3, 0, 2]);
    }
}
