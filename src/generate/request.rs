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
            Prompt::Text(text) => match tok {
                Some(t) => t.encode(text)?,
                None => {
                    return Err(Error::Request(
                        "text needs the checkpoint's tokenizer.json (give input_ids)".into(),
                    ))
                }
            },
        };
        if ids.is_empty() {
            return Err(Error::Request("input_ids is empty".into()));
        }
        model.check_ids(&ids)?;
        opts.check(&[&ids])?;
        Ok(ids)
    }
}

impl Prompt {
    /// Takes the prompt out of a request's fields: `text` (a string) or
    /// `input_ids` (a list of ids), exactly one of them.
    pub fn take(fields: &mut serde_json::Map<String, serde_json::Value>) -> Result<Prompt> {
        let text = fields.remove("text");
        let ids = fields.remove("input_ids");
        Ok(match (text, ids) {
            (Some(_), Some(_)) => {
                return Err(Error::Request(
                    "give either text or input_ids, not both".into(),
                ))
            }
            (Some(serde_json::Value::String(t)), None) => Prompt::Text(t),
            (Some(other), None) => {
                return Err(Error::Request(format!(
                    "text must be a string, found {other}"
                )))
            }
            (None, Some(v)) => Prompt::Ids(serde_json::from_value(v).map_err(|e| {
                Error::Request(format!(
                    "input_ids must be a list of token ids (integers from 0 to 2^32-1): {e}"
                ))
            })?),
            (None, None) => {
                return Err(Error::Request(
                    "the request has neither text nor input_ids".into(),
                ))
            }
        })
    }
}

/// Parses a request body as JSON; a syntax error says where, by column (the
/// line is the request's own, which only misleads in a file; the caller
/// names the line).
pub fn parse_json(json: &str) -> Result<serde_json::Value> {
    serde_json::from_str(json).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        Error::Request(format!("invalid JSON (column {}): {msg}", e.column()))
    })
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
        let serde_json::Value::Object(mut fields) = value else {
            return Err(Error::Request(
                "a request is a JSON object: {\"text\": ...} or {\"input_ids\": [...]}".into(),
            ));
        };
        let prompt = Prompt::take(&mut fields)?;
        let options = base.overlay(fields)?;
        Ok(GenerateRequest { prompt, options })
    }
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
