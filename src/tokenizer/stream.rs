//! Text as it is generated: the pieces a streaming front end (the CLI's
//! `--stream`, Python's `generate_stream`, the server's SSE events) hands
//! out, one token at a time.

use super::Tokenizer;
use crate::Result;

/// Turns a growing list of ids into pieces of text: each [`TextStream::push`]
/// returns what the decoded prefix gained. A token can change how earlier
/// ones decode (SentencePiece spacing, a byte sequence still incomplete), so
/// a piece is released only once the decoded text extends what is already
/// out; until then `push` returns an empty string and the text catches up
/// with a later token. The concatenated pieces are the decoded text of the
/// ids pushed so far whenever the decoding of a prefix is a prefix of the
/// decoding of the whole, which holds for T5's tokenizer.
///
/// The tokenizer is passed to each push rather than held, so a stream can
/// live where a borrow cannot (an async response body that owns its state).
/// Without a tokenizer the pieces are the ids, comma-separated.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    out: String,
}

impl TextStream {
    pub fn new() -> TextStream {
        TextStream::default()
    }

    /// Adds one id; returns the new text it releases (possibly empty).
    pub fn push(&mut self, id: u32, tok: Option<&Tokenizer>) -> Result<String> {
        self.ids.push(id);
        let Some(tok) = tok else {
            let piece = if self.ids.len() == 1 {
                id.to_string()
            } else {
                format!(",{id}")
            };
            self.out.push_str(&piece);
            return Ok(piece);
        };
        let text = tok.decode(&self.ids)?;
        Ok(match text.strip_prefix(self.out.as_str()) {
            Some(piece) => {
                let piece = piece.to_string();
                self.out = text;
                piece
            }
            None => String::new(),
        })
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The text released so far.
    pub fn text(&self) -> &str {
        &self.out
    }
}
