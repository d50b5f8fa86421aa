//! ByT5's tokenizer: UTF-8 bytes, no vocabulary file.
//!
//! ByT5 checkpoints are `T5ForConditionalGeneration` (`model_type: "t5"`), but
//! their tokenizer is HF's Python `ByT5Tokenizer`, so they ship no
//! `tokenizer.json`: a directory whose `tokenizer_config.json` or
//! `config.json` names `ByT5Tokenizer` gets this one. It does what
//! `ByT5Tokenizer` (transformers 4.57) does:
//! * ids 0, 1, 2 are `<pad>`, `</s>`, `<unk>`; byte `b` is id `b + 3`;
//!   `<extra_id_N>` is id `259 + N` for `N < extra_ids` (125 by default);
//! * those strings in the text are their tokens, matched leftmost, the
//!   longest at a position; whitespace on both sides of `<pad>`, `</s>` and
//!   `<unk>` is dropped (their `lstrip`/`rstrip`), not around sentinels;
//! * `</s>` closes the ids unless they already end with it;
//! * decoding skips the special tokens and drops bytes that are not valid
//!   UTF-8 (`errors="ignore"`).

/// The byte offset: ids below it are the three special tokens.
const OFFSET: u32 = 3;
const SPECIAL: [&str; 3] = ["<pad>", "</s>", "<unk>"];

pub struct ByT5 {
    extra_ids: u32,
}

impl ByT5 {
    pub fn new(extra_ids: u32) -> ByT5 {
        ByT5 { extra_ids }
    }

    /// Ids of every token: specials, bytes and sentinels.
    pub fn len(&self) -> usize {
        (OFFSET + 256 + self.extra_ids) as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The special token starting `s`, if any: its id, its length, and
    /// whether it strips the whitespace around it.
    fn special_at(&self, s: &str) -> Option<(u32, usize, bool)> {
        for (id, t) in SPECIAL.iter().enumerate() {
            if s.starts_with(t) {
                return Some((id as u32, t.len(), true));
            }
        }
        let rest = s.strip_prefix("<extra_id_")?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with('>') {
            return None;
        }
        // "<extra_id_07>" is not a sentinel: the number is written plainly.
        let n: u32 = rest[..digits].parse().ok()?;
        if n >= self.extra_ids || (digits > 1 && rest.starts_with('0')) {
            return None;
        }
        Some((OFFSET + 256 + n, "<extra_id_>".len() + digits, false))
    }

    /// Token ids of `text`, ending with `</s>`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() + 1);
        let mut seg_start = 0;
        let mut i = 0;
        let mut strip_next = false;
        while i < text.len() {
            let Some((id, len, strips)) = self.special_at(&text[i..]) else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                continue;
            };
            let mut seg = &text[seg_start..i];
            if strip_next {
                seg = seg.trim_start();
            }
            if strips {
                seg = seg.trim_end();
            }
            ids.extend(seg.bytes().map(|b| b as u32 + OFFSET));
            ids.push(id);
            strip_next = strips;
            i += len;
            seg_start = i;
        }
        let mut seg = &text[seg_start..];
        if strip_next {
            seg = seg.trim_start();
        }
        ids.extend(seg.bytes().map(|b| b as u32 + OFFSET));
        if ids.last() != Some(&1) {
            ids.push(1);
        }
        ids
    }

    /// Text of `ids`, special tokens (and ids past the vocabulary) skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&id| (OFFSET..OFFSET + 256).contains(&id))
            .map(|&id| (id - OFFSET) as u8)
            .collect();
        // Python's decode("utf-8", errors="ignore"): invalid sequences vanish.
        let mut out = String::with_capacity(bytes.len());
        for chunk in bytes.utf8_chunks() {
            out.push_str(chunk.valid());
        }
        out
    }

    /// The token of one id: a special token's string, or the byte as a
    /// one-character string (Latin-1), as `ByT5Tokenizer` names it.
    pub fn piece(&self, id: u32) -> Option<String> {
        match id {
            0..OFFSET => Some(SPECIAL[id as usize].to_string()),
            _ if id < OFFSET + 256 => Some(char::from((id - OFFSET) as u8).to_string()),
            _ if id < OFFSET + 256 + self.extra_ids => {
                Some(format!("<extra_id_{}>", id - OFFSET - 256))
            }
            _ => None,
        }
    }
}

/// Whether `dir` holds a ByT5 checkpoint's tokenizer settings, and its
/// number of sentinels: `tokenizer_config.json` (else `config.json`) names
/// `ByT5Tokenizer`.
pub fn detect(dir: &std::path::Path) -> Option<u32> {
    let read = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
    };
    let tc = read("tokenizer_config.json");
    let class = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .and_then(|v| v.get("tokenizer_class")?.as_str().map(String::from))
    };
    let named = class(&tc).or_else(|| class(&read("config.json")))?;
    if named != "ByT5Tokenizer" {
        return None;
    }
    let extra = tc
        .as_ref()
        .and_then(|v| v.get("extra_ids")?.as_u64())
        .unwrap_or(125);
    u32::try_from(extra).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_specials_and_sentinels() {
        let t = ByT5::new(125);
        assert_eq!(t.encode("hi"), vec![107, 108, 1]);
        assert_eq!(t.encode("a </s> b"), vec![100, 1, 101, 1]);
        assert_eq!(t.encode("x <extra_id_0> y"), vec![123, 35, 259, 35, 124, 1]);
        assert_eq!(t.encode("<extra_id_125>").len(), 15);
        assert_eq!(t.encode(""), vec![1]);
        assert_eq!(t.decode(&[107, 108, 1, 0, 300]), "hi");
        assert_eq!(t.len(), 384);
    }
}
