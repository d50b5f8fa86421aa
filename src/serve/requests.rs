//! The HTTP request bodies, parsed from JSON into what the library runs:
//! pure functions of the body (no model), so the fuzz target
//! (fuzz/fuzz_targets/serve_requests.rs) drives exactly what the server
//! parses. Every error is an [`Error::Request`] naming the field.

use crate::generate::{parse_json, GenerateOptions, GenerateRequest, Prompt};
use crate::{Error, Result};
use serde_json::{Map, Value};

/// `POST /v1/generate`: the library's [`GenerateRequest`] plus `stream`.
#[derive(Clone, Debug, PartialEq)]
pub struct Generate {
    pub request: GenerateRequest,
    /// Answer as server-sent events, one per piece of text.
    pub stream: bool,
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(Error::Request(format!(
            "a request is a JSON object: {what}"
        ))),
    }
}

fn refuse_unknown(fields: &Map<String, Value>) -> Result<()> {
    match fields.keys().next() {
        Some(k) => Err(Error::Request(format!("unknown field `{k}`"))),
        None => Ok(()),
    }
}

/// Parses a `/v1/generate` body; options it does not give come from `base`.
pub fn generate(body: &str, base: &GenerateOptions) -> Result<Generate> {
    let mut fields = object(
        parse_json(body)?,
        "{\"text\": ...} or {\"input_ids\": [...]}",
    )?;
    let stream = match fields.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(Error::Request(format!(
                "stream must be true or false, found {other}"
            )))
        }
    };
    let request = GenerateRequest::from_value(Value::Object(fields), base)?;
    Ok(Generate { request, stream })
}

/// `POST /v1/encode`: `{"text": ...}` or `{"input_ids": [...]}`.
pub fn encode(body: &str) -> Result<Prompt> {
    let mut fields = object(
        parse_json(body)?,
        "{\"text\": ...} or {\"input_ids\": [...]}",
    )?;
    let p = Prompt::take(&mut fields)?;
    refuse_unknown(&fields)?;
    Ok(p)
}

/// `POST /v1/score`: the source as `text`/`input_ids`, the target as
/// `target` (text, scored without a closing `</s>`) or `target_ids`.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub source: Prompt,
    pub target: Prompt,
}

/// Parses a `/v1/score` body.
pub fn score(body: &str) -> Result<Score> {
    let mut fields = object(
        parse_json(body)?,
        "{\"text\": ..., \"target\": ...} (or input_ids, target_ids)",
    )?;
    let source = Prompt::take(&mut fields)?;
    let (t, ti) = (fields.remove("target"), fields.remove("target_ids"));
    let target = match (t, ti) {
        (Some(Value::String(s)), None) => Prompt::Text(s),
        (Some(Value::String(_)), Some(_)) => {
            return Err(Error::Request(
                "give either target or target_ids, not both".into(),
            ))
        }
        (Some(other), _) => {
            return Err(Error::Request(format!(
                "target must be a string, found {other}"
            )))
        }
        (None, Some(v)) => Prompt::Ids(serde_json::from_value(v).map_err(|e| {
            Error::Request(format!(
                "target_ids must be a list of token ids (integers from 0 to 2^32-1): {e}"
            ))
        })?),
        (None, None) => {
            return Err(Error::Request(
                "the request has neither target nor target_ids".into(),
            ))
        }
    };
    refuse_unknown(&fields)?;
    Ok(Score { source, target })
}

/// `POST /v1/embeddings` in OpenAI's shape: `input` a string, a list of
/// strings, a list of ids or a list of id lists; `model`, `encoding_format`
/// (`"float"` only) and `user` accepted; anything else refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub inputs: Vec<Prompt>,
    pub model: Option<String>,
}

/// Parses a `/v1/embeddings` body.
pub fn embeddings(body: &str) -> Result<Embeddings> {
    let mut fields = object(parse_json(body)?, "{\"input\": ...}")?;
    let input = fields
        .remove("input")
        .ok_or_else(|| Error::Request("the request has no input".into()))?;
    let bad = || {
        Error::Request(
            "input must be a string, a list of strings, a list of token ids or a list of token id lists"
                .into(),
        )
    };
    let ids = |v: Value| -> Result<Vec<u32>> { serde_json::from_value(v).map_err(|_| bad()) };
    let inputs = match input {
        Value::String(s) => vec![Prompt::Text(s)],
        Value::Array(items) if items.is_empty() => {
            return Err(Error::Request("input is an empty list".into()))
        }
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(Prompt::Text(s)),
                    _ => Err(bad()),
                })
                .collect::<Result<_>>()?,
            Value::Number(_) => vec![Prompt::Ids(ids(Value::Array(items))?)],
            Value::Array(_) => items
                .into_iter()
                .map(|v| ids(v).map(Prompt::Ids))
                .collect::<Result<_>>()?,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let model = match fields.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(Error::Request(format!(
                "model must be a string, found {other}"
            )))
        }
    };
    match fields.remove("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "float" => {}
        Some(other) => {
            return Err(Error::Request(format!(
                "encoding_format {other} is not supported (only \"float\")"
            )))
        }
    }
    match fields.remove("user") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(Error::Request(format!(
                "user must be a string, found {other}"
            )))
        }
    }
    refuse_unknown(&fields)?;
    Ok(Embeddings { inputs, model })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_takes_stream_and_the_library_fields() {
        let g = generate(
            r#"{"input_ids": [5, 1], "stream": true, "num_beams": 2}"#,
            &GenerateOptions::default(),
        )
        .unwrap();
        assert!(g.stream);
        assert_eq!(g.request.options.num_beams, 2);
        let e = generate(r#"{"text": "a", "stream": 1}"#, &Default::default()).unwrap_err();
        assert!(
            e.to_string().contains("stream must be true or false"),
            "{e}"
        );
        let e = generate(r#"{"text": "a", "streem": true}"#, &Default::default()).unwrap_err();
        assert!(e.to_string().contains("unknown field `streem`"), "{e}");
    }

    #[test]
    fn embeddings_take_openai_shapes() {
        let e = embeddings(r#"{"input": "hi", "model": "t5"}"#).unwrap();
        assert_eq!(e.inputs, vec![Prompt::Text("hi".into())]);
        let e = embeddings(r#"{"input": ["a", "b"], "encoding_format": "float"}"#).unwrap();
        assert_eq!(e.inputs.len(), 2);
        let e = embeddings(r#"{"input": [3, 4, 1]}"#).unwrap();
        assert_eq!(e.inputs, vec![Prompt::Ids(vec![3, 4, 1])]);
        let e = embeddings(r#"{"input": [[3, 1], [4, 1]]}"#).unwrap();
        assert_eq!(e.inputs.len(), 2);
        let err = |b: &str| embeddings(b).unwrap_err().to_string();
        assert!(err(r#"{"input": []}"#).contains("empty list"));
        assert!(err(r#"{"input": ["a", 3]}"#).contains("input must be"));
        assert!(err(r#"{"input": "a", "dimensions": 3}"#).contains("unknown field `dimensions`"));
        assert!(err(r#"{"input": "a", "encoding_format": "base64"}"#).contains("not supported"));
        assert!(err(r#"{"inputs": "a"}"#).contains("no input"));
    }

    #[test]
    fn score_and_encode_name_their_fields() {
        let s = score(r#"{"input_ids": [5, 1], "target_ids": [7]}"#).unwrap();
        assert_eq!(s.target, Prompt::Ids(vec![7]));
        let err = |b: &str| score(b).unwrap_err().to_string();
        assert!(err(r#"{"text": "a"}"#).contains("neither target nor target_ids"));
        assert!(err(r#"{"text": "a", "target": "b", "target_ids": [1]}"#).contains("not both"));
        assert!(err(r#"{"text": "a", "target": "b", "x": 1}"#).contains("unknown field `x`"));
        assert_eq!(
            encode(r#"{"text": "a"}"#).unwrap(),
            Prompt::Text("a".into())
        );
        assert!(encode(r#"{"text": "a", "n": 1}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field `n`"));
    }
}
