//! `t5edge rerank`: documents sorted by a monoT5-style model's p(true) for a
//! query (the library's [`crate::rerank`]).

use super::common::{at_line, read_lines, ModelArgs, WeightArgs};
use crate::generate::document_from_json;
use crate::rerank::{rerank, RerankOptions, DEFAULT_TEMPLATE};
use crate::{Error, Result, Tokenizer};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// The query.
    #[arg(long)]
    query: String,
    /// A file of documents: one JSON object {"text": ...} per line when it
    /// ends in .jsonl, else one document per line. A blank or malformed line
    /// stops the command, naming the line.
    #[arg(long, conflicts_with = "docs")]
    documents: Option<PathBuf>,
    /// The input template; {query} and {document} are replaced.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    template: String,
    /// The vocabulary piece whose probability is the score.
    #[arg(long, default_value = "\u{2581}true")]
    true_token: String,
    /// The vocabulary piece it is weighed against.
    #[arg(long, default_value = "\u{2581}false")]
    false_token: String,
    /// Print {"results": [{"index": i, "score": p, "text": ...}, ...]}, best
    /// first. Otherwise one line per document: score, index, text (tab-separated).
    #[arg(long)]
    json: bool,
    /// The documents (instead of --documents).
    #[arg(value_name = "DOC")]
    docs: Vec<String>,
}

/// The documents of `path`: JSONL objects for a .jsonl file, else lines.
fn read_documents(path: &Path) -> Result<Vec<String>> {
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let lines = read_lines(path)?;
    if lines.is_empty() {
        return Err(Error::Request(format!("{}: no documents", path.display())));
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let doc = if line.trim().is_empty() {
                Err(Error::Request("blank line: no document".into()))
            } else if jsonl {
                document_from_json(&line)
            } else {
                Ok(line)
            };
            doc.map_err(|e| at_line(path, i, e))
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let docs = match &a.documents {
        Some(path) => read_documents(path)?,
        None if a.docs.is_empty() => {
            return Err(Error::Request(
                "give the documents: --documents FILE or DOC...".into(),
            ))
        }
        None => a.docs.clone(),
    };
    let opts = RerankOptions {
        template: a.template.clone(),
        true_token: a.true_token.clone(),
        false_token: a.false_token.clone(),
    };
    // Refuse a bad template before loading anything.
    opts.fill(&a.query, "")?;
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    let tok = Tokenizer::from_dir(&dir, model.config.vocab_size)?;
    let ranked = rerank(&model, &tok, &a.query, &docs, &opts)?;
    if a.json {
        let results: Vec<_> = ranked
            .iter()
            .map(|r| serde_json::json!({"index": r.index, "score": r.score, "text": docs[r.index]}))
            .collect();
        out!("{}", serde_json::json!({ "results": results }))?;
    } else {
        for r in &ranked {
            out!("{:.6}\t{}\t{}", r.score, r.index, docs[r.index])?;
        }
    }
    Ok(())
}
