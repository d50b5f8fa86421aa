//! The HTTP request bodies, parsed from JSON into what the library runs:
//! pure functions of the body (no model), so the fuzz target
//! (fuzz/fuzz_targets/serve_requests.rs) drives exactly what the server
//! parses. Every error is an [`Error::Request`] naming the field.

use crate::generate::{parse_json, GenerateOptions, GenerateRequest, Prompt, ScoreRequest};
use crate::rerank::RerankOptions;
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

/// `POST /v1/encode`: `{"text": ...}` or `{"input_ids": [...]}`, as a line
/// of `t5edge encode --input` ([`Prompt::from_json`]).
pub fn encode(body: &str) -> Result<Prompt> {
    Prompt::from_json(body)
}

/// `POST /v1/score`: a pair as a line of `t5edge score --input`
/// ([`ScoreRequest`]): `source`/`source_ids`, `target`/`target_ids`, and
/// `append_eos` (default false: the target as given).
pub fn score(body: &str) -> Result<ScoreRequest> {
    ScoreRequest::from_json(body, false)
}

/// `POST /v1/rerank`: `{"query": ..., "documents": [...]}` plus any of
/// `template`, `true_token`, `false_token` ([`RerankOptions`]'s fields;
/// monoT5's defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Rerank {
    pub query: String,
    pub documents: Vec<String>,
    pub options: RerankOptions,
}

/// Parses a `/v1/rerank` body.
pub fn rerank(body: &str) -> Result<Rerank> {
    let mut fields = object(parse_json(body)?, "{\"query\": ..., \"documents\": [...]}")?;
    let string = |fields: &mut Map<String, Value>, name: &str| -> Result<Option<String>> {
        match fields.remove(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::Request(format!(
                "{name} must be a string, found {other}"
            ))),
        }
    };
    let query = string(&mut fields, "query")?
        .ok_or_else(|| Error::Request("the request has no query".into()))?;
    let documents: Vec<String> = match fields.remove("documents") {
        None => return Err(Error::Request("the request has no documents".into())),
        Some(v) => serde_json::from_value(v)
            .map_err(|_| Error::Request("documents must be a list of strings".into()))?,
    };
    if documents.is_empty() {
        return Err(Error::Request("documents is an empty list".into()));
    }
    let mut options = RerankOptions::default();
    if let Some(t) = string(&mut fields, "template")? {
        options.template = t;
    }
    if let Some(t) = string(&mut fields, "true_token")? {
        options.true_token = t;
    }
    if let Some(t) = string(&mut fields, "false_token")? {
        options.false_token = t;
    }
    refuse_unknown(&fields)?;
    Ok(Rerank {
        query,
        documents,
        options,
    })
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
    fn score_encode_and_rerank_name_their_fields() {
        let s = score(r#"{"source_ids": [5, 1], "target_ids": [7]}"#).unwrap();
        assert_eq!(s.target, Prompt::Ids(vec![7]));
        assert!(!s.append_eos);
        let err = |b: &str| score(b).unwrap_err().to_string();
        assert!(err(r#"{"source": "a"}"#).contains("neither target nor target_ids"));
        assert!(err(r#"{"source": "a", "target": "b", "target_ids": [1]}"#).contains("not both"));
        assert!(err(r#"{"source": "a", "target": "b", "x": 1}"#).contains("unknown field `x`"));
        assert_eq!(
            encode(r#"{"text": "a"}"#).unwrap(),
            Prompt::Text("a".into())
        );
        assert!(encode(r#"{"text": "a", "n": 1}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field `n`"));
        let r = rerank(r#"{"query": "q", "documents": ["a", "b"], "true_token": "yes"}"#).unwrap();
        assert_eq!((r.query.as_str(), r.documents.len()), ("q", 2));
        assert_eq!(r.options.true_token, "yes");
        let err = |b: &str| rerank(b).unwrap_err().to_string();
        assert!(err(r#"{"documents": ["a"]}"#).contains("no query"));
        assert!(err(r#"{"query": "q", "documents": []}"#).contains("empty list"));
        assert!(err(r#"{"query": "q", "documents": [1]}"#).contains("list of strings"));
        assert!(err(r#"{"query": "q", "documents": ["a"], "top_k": 1}"#)
            .contains("unknown field `top_k`"));
    }
}
