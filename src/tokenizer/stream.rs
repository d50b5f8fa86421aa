//! Text as it is generated: the pieces a streaming front end (the CLI's
//! `--stream`, Python's `generate_stream`, an HTTP server) hands out, one
//! token at a time.

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
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    out: String,
}

impl<'t> TextStream<'t> {
    pub fn new(tok: &'t Tokenizer) -> TextStream<'t> {
        TextStream {
            tok,
            ids: Vec::new(),
            out: String::new(),
        }
    }

    /// Adds one id; returns the new text it releases (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
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
