//! A generation request as the JSON front ends receive it (a JSONL line, an
//! HTTP body): the prompt, as text or ids, and [`GenerateOptions`] fields
//! under HF's names; and the JSON they answer with.

use super::{GenerateOptions, Generation};
use crate::{Error, Result, T5Model, Tokenizer};

/// What to encode: text for the checkpoint's tokenizer, or token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl Prompt {
    /// The prompt's ids, checked against the model (every id below
    /// `vocab_size`, not empty) and against `opts.limits`. Text needs `tok`;
    /// an empty text is a lone `</s>`, as HF's tokenizer makes it.
    pub fn ids(
        &self,
        model: &T5Model,
        tok: Option<&Tokenizer>,
        opts: &GenerateOptions,
    ) -> Result<Vec<u32>> {
        let ids = match self {
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Text(text) => Self::need(tok)?.encode(text)?,
        };
        Self::checked(ids, model, opts)
    }

    /// [`Prompt::ids`] of each prompt, the texts tokenized together
    /// ([`Tokenizer::encode_each`]: over the pool's threads when there is
    /// enough text); the first prompt's error in input order.
    pub fn ids_of_all(
        prompts: &[Prompt],
        model: &T5Model,
        tok: Option<&Tokenizer>,
        opts: &GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let texts: Vec<&str> = prompts
            .iter()
            .filter_map(|p| match p {
                Prompt::Text(t) => Some(t.as_str()),
                Prompt::Ids(_) => None,
            })
            .collect();
        let mut encoded = match tok {
            Some(t) if !texts.is_empty() => t.encode_each(&texts),
            _ => Vec::new(),
        }
        .into_iter();
        prompts
            .iter()
            .map(|p| {
                let ids = match p {
                    Prompt::Ids(ids) => ids.clone(),
                    Prompt::Text(_) => {
                        Self::need(tok)?;
                        encoded.next().unwrap_or_else(|| {
                            Err(Error::Other("a prompt's text was not tokenized".into()))
                        })?
                    }
                };
                Self::checked(ids, model, opts)
            })
            .collect()
    }

    /// The tokenizer text needs, or the error that says it is missing.
    fn need(tok: Option<&Tokenizer>) -> Result<&Tokenizer> {
        tok.ok_or_else(|| {
            Error::Request("text needs the checkpoint's tokenizer.json (give input_ids)".into())
        })
    }

    /// `ids` checked against the model and `opts.limits`.
    fn checked(ids: Vec<u32>, model: &T5Model, opts: &GenerateOptions) -> Result<Vec<u32>> {
        if ids.is_empty() {
            return Err(Error::Request("input_ids is empty".into()));
        }
        model.check_ids(&ids)?;
        opts.check(&[&ids])?;
        Ok(ids)
    }
}

/// One request: `{"text": ...}` or `{"input_ids": [...]}` plus any
/// [`GenerateOptions`] field (`{"input_ids": [37, 1], "num_beams": 4}`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub options: GenerateOptions,
}

impl GenerateRequest {
    /// Parses a JSON object; options it does not give come from `base`.
    /// Errors name what is wrong: JSON syntax (with the column), a missing or
    /// doubled prompt, an unknown field, a value of the wrong type or out of
    /// range.
    pub fn from_json(json: &str, base: &GenerateOptions) -> Result<GenerateRequest> {
        Self::from_value(parse_json(json)?, base)
    }

    /// [`GenerateRequest::from_json`] for an already parsed value.
    pub fn from_value(value: serde_json::Value, base: &GenerateOptions) -> Result<GenerateRequest> {
        let mut fields = object(
            value,
            "a request is a JSON object: {\"text\": ...} or {\"input_ids\": [...]}",
        )?;
        let prompt = Prompt::take(&mut fields, "text", "input_ids")?;
        let options = base.overlay(fields)?;
        Ok(GenerateRequest { prompt, options })
    }
}

/// Parses one JSON request. serde says "at line 1 column N": the line is the
/// request's own, which only misleads in a file, so only the column is kept;
/// the caller names the line.
pub fn parse_json(json: &str) -> Result<serde_json::Value> {
    serde_json::from_str(json).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        Error::Request(format!("invalid JSON (column {}): {msg}", e.column()))
    })
}

type Fields = serde_json::Map<String, serde_json::Value>;

/// `value` as an object, else the error `what`.
fn object(value: serde_json::Value, what: &str) -> Result<Fields> {
    match value {
        serde_json::Value::Object(f) => Ok(f),
        _ => Err(Error::Request(what.into())),
    }
}

/// Refuses the fields left over once a request has taken its own.
fn no_more_fields(fields: Fields, known: &str) -> Result<()> {
    match fields.keys().next() {
        Some(k) => Err(Error::Request(format!(
            "unknown field `{k}`, expected {known}"
        ))),
        None => Ok(()),
    }
}

impl Prompt {
    /// Takes a prompt out of `fields`: the string field `text` or the id list
    /// `ids` (exactly one of them), e.g. `"text"`/`"input_ids"` for a
    /// generation request, `"source"`/`"source_ids"` for a score pair.
    pub fn take(fields: &mut Fields, text: &str, ids: &str) -> Result<Prompt> {
        match (fields.remove(text), fields.remove(ids)) {
            (Some(_), Some(_)) => Err(Error::Request(format!(
                "give either {text} or {ids}, not both"
            ))),
            (Some(serde_json::Value::String(t)), None) => Ok(Prompt::Text(t)),
            (Some(other), None) => Err(Error::Request(format!(
                "{text} must be a string, found {other}"
            ))),
            (None, Some(v)) => Ok(Prompt::Ids(serde_json::from_value(v).map_err(|e| {
                Error::Request(format!(
                    "{ids} must be a list of token ids (integers from 0 to 2^32-1): {e}"
                ))
            })?)),
            (None, None) => Err(Error::Request(format!(
                "the request has neither {text} nor {ids}"
            ))),
        }
    }

    /// One encoder input of a JSONL file (`t5edge encode --input`):
    /// `{"text": ...}` or `{"input_ids": [...]}`, nothing else.
    pub fn from_json(json: &str) -> Result<Prompt> {
        let mut fields = object(
            parse_json(json)?,
            "an input is a JSON object: {\"text\": ...} or {\"input_ids\": [...]}",
        )?;
        let p = Prompt::take(&mut fields, "text", "input_ids")?;
        no_more_fields(fields, "text or input_ids")?;
        Ok(p)
    }

    /// The ids of a score target: given ids as they are; text tokenized
    /// without the `</s>` the tokenizer closes it with, unless `append_eos`
    /// (given ids get it appended too). Checked against the model; an empty
    /// target is refused, there being nothing to score.
    pub fn target_ids(
        &self,
        model: &T5Model,
        tok: Option<&Tokenizer>,
        append_eos: bool,
    ) -> Result<Vec<u32>> {
        let eos = model.config.eos_token_id;
        let mut ids = match self {
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Text(text) => {
                let Some(t) = tok else {
                    return Err(Error::Request(
                        "a text target needs the checkpoint's tokenizer.json (give target ids)"
                            .into(),
                    ));
                };
                let mut ids = t.encode(text)?;
                if ids.last() == Some(&eos) {
                    ids.pop();
                }
                ids
            }
        };
        if append_eos {
            ids.push(eos);
        }
        if ids.is_empty() {
            return Err(Error::Request("the target has no tokens to score".into()));
        }
        model.check_ids(&ids)?;
        Ok(ids)
    }
}

/// One pair of `t5edge score --input`: `{"source": ..., "target": ...}`, or
/// `source_ids` / `target_ids` lists instead of either text, plus
/// `"append_eos": true` to score the target's closing `</s>` too.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRequest {
    pub source: Prompt,
    pub target: Prompt,
    pub append_eos: bool,
}

impl ScoreRequest {
    /// Parses one JSONL line; `append_eos` is the command line's default.
    pub fn from_json(json: &str, append_eos: bool) -> Result<ScoreRequest> {
        let mut fields = object(
            parse_json(json)?,
            "a pair is a JSON object: {\"source\": ..., \"target\": ...}",
        )?;
        let source = Prompt::take(&mut fields, "source", "source_ids")?;
        let target = Prompt::take(&mut fields, "target", "target_ids")?;
        let append_eos = match fields.remove("append_eos") {
            None => append_eos,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => {
                return Err(Error::Request(format!(
                    "append_eos must be true or false, found {other}"
                )))
            }
        };
        no_more_fields(
            fields,
            "source, source_ids, target, target_ids or append_eos",
        )?;
        Ok(ScoreRequest {
            source,
            target,
            append_eos,
        })
    }

    /// The source's and the target's ids, checked (see [`Prompt::ids`] and
    /// [`Prompt::target_ids`]).
    pub fn ids(
        &self,
        model: &T5Model,
        tok: Option<&Tokenizer>,
        opts: &GenerateOptions,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let source = self.source.ids(model, tok, opts)?;
        let target = self.target.target_ids(model, tok, self.append_eos)?;
        Ok((source, target))
    }
}

/// One document of a `t5edge rerank --documents` file: a JSONL line
/// `{"text": ...}` (documents are text: they go into the template).
pub fn document_from_json(json: &str) -> Result<String> {
    let mut fields = object(
        parse_json(json)?,
        "a document is a JSON object: {\"text\": ...}",
    )?;
    let text = match fields.remove("text") {
        Some(serde_json::Value::String(t)) => t,
        Some(other) => {
            return Err(Error::Request(format!(
                "text must be a string, found {other}"
            )))
        }
        None => {
            return Err(Error::Request(
                "the document has no text field: {\"text\": ...}".into(),
            ))
        }
    };
    no_more_fields(fields, "text")?;
    Ok(text)
}

impl Generation {
    /// The JSON answer to one prompt: `input_ids`, and `ids`/`text` of the
    /// best sequence (`text` null without a tokenizer), plus `sequences`
    /// (ids), `texts` and `scores` when there is more than one sequence or
    /// beam search ran.
    pub fn to_json(
        &self,
        input_ids: &[u32],
        tok: Option<&Tokenizer>,
        opts: &GenerateOptions,
    ) -> Result<serde_json::Value> {
        let text =
            |ids: &[u32]| -> Result<Option<String>> { tok.map(|t| t.decode(ids)).transpose() };
        let mut v = serde_json::json!({
            "input_ids": input_ids,
            "ids": self.best(),
            "text": text(self.best())?,
        });
        if opts.num_beams > 1 || self.sequences.len() > 1 {
            v["sequences"] = serde_json::json!(self.sequences);
            if tok.is_some() {
                let texts: Result<Vec<_>> = self.sequences.iter().map(|s| text(s)).collect();
                v["texts"] = serde_json::json!(texts?);
            }
            if let Some(s) = &self.scores {
                v["scores"] = serde_json::json!(s);
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<GenerateRequest> {
        GenerateRequest::from_json(json, &GenerateOptions::default().max_new_tokens(7))
    }

    #[test]
    fn options_overlay_the_base() {
        let r = req(r#"{"input_ids": [5, 1], "num_beams": 3, "early_stopping": "never"}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Ids(vec![5, 1]));
        assert_eq!(r.options.num_beams, 3);
        assert_eq!(r.options.max_new_tokens, 7, "absent fields keep the base");
        assert_eq!(r.options.early_stopping, super::super::EarlyStopping::Never);
        let r = req(r#"{"text": "hi", "early_stopping": true}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Text("hi".into()));
        assert_eq!(
            r.options.early_stopping,
            super::super::EarlyStopping::Finished
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |j: &str| req(j).unwrap_err().to_string();
        assert!(err(r#"{"text": "a", "num_beam": 2}"#).contains("unknown field `num_beam`"));
        assert!(err(r#"{"text": "a", "top_k": "many"}"#).contains("invalid type"));
        assert!(err(r#"{"text": "a", "top_p": 2.0}"#).contains("top_p 2 must be in (0, 1]"));
        assert!(err(r#"{"text": "a", "input_ids": [1]}"#).contains("not both"));
        assert!(err(r#"{"num_beams": 2}"#).contains("neither text nor input_ids"));
        assert!(err(r#"{"input_ids": [1, -2]}"#).contains("input_ids must be a list of token ids"));
        assert!(err(r#"{"text": 3}"#).contains("text must be a string"));
        assert!(err("[1, 2]").contains("a request is a JSON object"));
        let e = err(r#"{"text": "a",, }"#);
        assert!(e.contains("invalid JSON (column 14)"), "{e}");
        assert!(!e.contains("line 1"), "{e}");
        // limits and exact are the server's, not the request's.
        assert!(err(r#"{"text": "a", "limits": {}}"#).contains("unknown field `limits`"));
        assert!(err(r#"{"text": "a", "exact": true}"#).contains("unknown field `exact`"));
    }

    #[test]
    fn score_pairs_encode_inputs_and_documents_parse() {
        let r = ScoreRequest::from_json(r#"{"source": "a", "target_ids": [5]}"#, false).unwrap();
        assert_eq!(r.source, Prompt::Text("a".into()));
        assert_eq!(r.target, Prompt::Ids(vec![5]));
        assert!(!r.append_eos);
        let r = ScoreRequest::from_json(
            r#"{"source_ids": [1], "target": "b", "append_eos": true}"#,
            false,
        )
        .unwrap();
        assert!(r.append_eos);
        let err = |j: &str| ScoreRequest::from_json(j, false).unwrap_err().to_string();
        assert!(err(r#"{"source": "a"}"#).contains("neither target nor target_ids"));
        assert!(err(r#"{"source": "a", "target": "b", "x": 1}"#).contains("unknown field `x`"));
        assert!(err(r#"{"source": "a", "target": "b", "append_eos": 1}"#).contains("true or false"));
        assert!(err(r#"{"source": "a", "source_ids": [1], "target": "b"}"#)
            .contains("either source or source_ids"));
        assert_eq!(
            Prompt::from_json(r#"{"input_ids": [3, 1]}"#).unwrap(),
            Prompt::Ids(vec![3, 1])
        );
        assert!(Prompt::from_json(r#"{"text": "a", "num_beams": 2}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field `num_beams`"));
        assert_eq!(document_from_json(r#"{"text": "d"}"#).unwrap(), "d");
        assert!(document_from_json(r#""d""#)
            .unwrap_err()
            .to_string()
            .contains("a document is a JSON object"));
    }

    #[test]
    fn cli_defaults_are_the_library_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: GenerateOptions,
        }
        let parsed = Cli::try_parse_from(["t5edge"]).unwrap().o;
        assert_eq!(parsed, GenerateOptions::default());
        let parsed = Cli::try_parse_from(["t5edge", "--early-stopping", "--num-beams", "2"])
            .unwrap()
            .o;
        assert_eq!(parsed.early_stopping, super::super::EarlyStopping::Finished);
        assert_eq!(parsed.num_beams, 2);
    }
}
