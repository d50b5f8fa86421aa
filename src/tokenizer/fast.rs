//! A fast path for T5's SentencePiece-Unigram pipeline, exact to the
//! `tokenizers` crate (0.23) on the text it accepts.
//!
//! It covers a `tokenizer.json` whose pipeline is T5's: normalizer
//! `Precompiled` (or none), pre-tokenizer `WhitespaceSplit` + `Metaspace`
//! (`▁`, prepend always), a template post-processor appending one special
//! token, decoder `Metaspace`, and a `Unigram` model without byte fallback.
//! Encoding covers only text whose every byte is printable ASCII or ' ', '\t',
//! '\n' that the normalizer leaves alone (or, for the whitespace, turns into
//! whitespace); [`T5Fast::encode`] returns `None` for anything else and the
//! caller asks the crate. Decoding covers every id.
//!
//! What the crate does, and this mirrors (tokenizers 0.23.2):
//! * added tokens (all `normalized: false`, no strip/single-word) are cut out
//!   of the raw text first, leftmost-longest (`added_vocabulary.rs`);
//! * each remaining segment is split on whitespace, each word gets `▁`;
//! * each word is segmented by `Unigram::encode_optimized`: a Viterbi over
//!   byte positions where a candidate replaces the best path into its end only
//!   if strictly better (so the earliest start, then the shortest piece, wins
//!   ties); a character with no single-character piece gets `<unk>` at
//!   `min_score - 10`, and runs of `<unk>` fuse into one token, whose id is
//!   the fused string's if the vocabulary has it;
//! * a piece that occurs twice in the vocabulary has its last id;
//! * decoding skips special tokens (by content), maps `▁` to a space and drops
//!   the `▁`s of the first token left.
//!
//! Loading reads `tokenizer.t5edge` (written by `t5edge quantize`), a compact
//! binary cache keyed to the hash of `tokenizer.json`; without it (or when it
//! is stale) `tokenizer.json` is parsed with borrowed strings.

use std::borrow::Cow;
use std::path::Path;

const MAGIC: &[u8; 8] = b"T5EDTOK1";
/// The crate's penalty for an unknown character (`K_UNK_PENALTY`).
const UNK_PENALTY: f64 = 10.0;
const META: char = '\u{2581}';
/// `META` in UTF-8, as a word's lattice starts with it.
const META_BYTES: &[u8] = "\u{2581}".as_bytes();

/// The cache file written beside `tokenizer.json`.
pub const CACHE_NAME: &str = "tokenizer.t5edge";

pub struct T5Fast {
    /// Piece bytes back to back; valid UTF-8 with every offset a char boundary.
    blob: Vec<u8>,
    offs: Vec<u32>,
    scores: Vec<f64>,
    /// Ids sorted by piece bytes; of equal pieces only the last id.
    sorted: Vec<u32>,
    unk_id: u32,
    unk_score: f64,
    eos_id: u32,
    /// Added tokens: (id, special).
    added: Vec<(u32, bool)>,
    /// Contents of the special added tokens, sorted (decode skips them).
    special: Vec<Vec<u8>>,
    /// Bytes (< 128) the fast encoder accepts.
    ok: [bool; 128],
    json_len: u64,
    json_hash: u64,
    /// Where the lattice's piece search starts, built on first use.
    starts: std::sync::OnceLock<Box<Starts>>,
}

/// The ranges of `sorted` whose pieces start with each first byte, and
/// with `▁`: the widest of a word's searches, the same at every position,
/// which took a quarter of a rerank's tokenizing.
struct Starts {
    first: [(u32, u32); 256],
    meta: (u32, u32),
}

/// A fast non-cryptographic 64-bit hash, to tell a stale cache.
pub fn hash64(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = K ^ (b.len() as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    h ^= h >> 29;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 32)
}

impl T5Fast {
    /// Loads from the cache beside `json_path` if it is fresh, else from the
    /// JSON. `None` when the pipeline is not T5's (or anything is off): the
    /// caller then uses the crate, which also reports any error.
    pub fn load(json_path: &Path) -> Option<T5Fast> {
        let json = map(json_path)?;
        let (len, hash) = (json.len() as u64, hash64(&json));
        let cache = json_path.with_file_name(CACHE_NAME);
        if let Some(bytes) = map(&cache) {
            if let Some(t) = Self::from_cache(&bytes) {
                if t.json_len == len && t.json_hash == hash {
                    return Some(t);
                }
            }
        }
        Self::from_json(&json)
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        if i >= self.len() {
            return None;
        }
        let b = &self.blob[self.offs[i] as usize..self.offs[i + 1] as usize];
        std::str::from_utf8(b).ok()
    }

    /// The id of the vocabulary piece `piece` (last of duplicates).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.lookup(piece.as_bytes())
    }

    fn piece_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.blob[self.offs[i] as usize..self.offs[i + 1] as usize]
    }

    /// The part of `sorted[lo..hi]` (pieces sharing their first `len`
    /// bytes) whose byte `len` is `c`.
    fn narrow(&self, lo: usize, hi: usize, len: usize, c: u8) -> (usize, usize) {
        let range = &self.sorted[lo..hi];
        let a = range.partition_point(|&id| {
            let p = self.piece_bytes(id);
            p.len() <= len || p[len] < c
        });
        let z = range.partition_point(|&id| {
            let p = self.piece_bytes(id);
            p.len() <= len || p[len] <= c
        });
        (lo + a, lo + z)
    }

    /// `(lo, hi, len)`: the range of `sorted` whose pieces start with the
    /// first `len` bytes of `w` (not empty), `len` 3 where `w` starts with
    /// `▁`, else 1. The same ranges as narrowing byte by byte from the whole
    /// of `sorted`; no piece is a part of `▁`'s three bytes (pieces are
    /// whole characters), so nothing is skipped.
    fn start(&self, w: &[u8]) -> (usize, usize, usize) {
        let t = self.starts.get_or_init(|| {
            let n = self.sorted.len();
            let mut first = [(0u32, 0u32); 256];
            for (c, r) in first.iter_mut().enumerate() {
                let (lo, hi) = self.narrow(0, n, 0, c as u8);
                *r = (lo as u32, hi as u32);
            }
            let mut m = (0, n);
            for (len, &c) in META_BYTES.iter().enumerate() {
                m = self.narrow(m.0, m.1, len, c);
            }
            Box::new(Starts {
                first,
                meta: (m.0 as u32, m.1 as u32),
            })
        });
        let ((lo, hi), len) = if w.starts_with(META_BYTES) {
            (t.meta, META_BYTES.len())
        } else {
            (t.first[w[0] as usize], 1)
        };
        (lo as usize, hi as usize, len)
    }

    /// The id the crate gives the exact string `s` (last of duplicates).
    fn lookup(&self, s: &[u8]) -> Option<u32> {
        let i = self.sorted.partition_point(|&id| self.piece_bytes(id) < s);
        let id = *self.sorted.get(i)?;
        (self.piece_bytes(id) == s).then_some(id)
    }

    // ---- parsing -------------------------------------------------------

    /// Parses just what is needed from `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Option<T5Fast> {
        use serde::Deserialize;
        use serde_json::Value;
        #[derive(Deserialize)]
        struct Piece<'a>(#[serde(borrow)] Cow<'a, str>, f64);
        #[derive(Deserialize)]
        struct Model<'a> {
            #[serde(rename = "type")]
            ty: Option<String>,
            unk_id: Option<usize>,
            #[serde(borrow)]
            vocab: Vec<Piece<'a>>,
            #[serde(default)]
            byte_fallback: bool,
        }
        #[derive(Deserialize)]
        struct Added<'a> {
            id: u32,
            #[serde(borrow)]
            content: Cow<'a, str>,
            #[serde(default)]
            single_word: bool,
            #[serde(default)]
            lstrip: bool,
            #[serde(default)]
            rstrip: bool,
            normalized: Option<bool>,
            #[serde(default)]
            special: bool,
        }
        #[derive(Deserialize)]
        struct Json<'a> {
            #[serde(borrow, default)]
            added_tokens: Vec<Added<'a>>,
            normalizer: Option<Value>,
            pre_tokenizer: Option<Value>,
            post_processor: Option<Value>,
            decoder: Option<Value>,
            #[serde(default)]
            truncation: Option<Value>,
            #[serde(default)]
            padding: Option<Value>,
            #[serde(borrow)]
            model: Model<'a>,
        }
        let j: Json = serde_json::from_slice(json).ok()?;
        if j.truncation.is_some() || j.padding.is_some() {
            return None;
        }
        let m = &j.model;
        if m.ty.as_deref() != Some("Unigram") || m.byte_fallback || m.vocab.is_empty() {
            return None;
        }
        let unk_id = m.unk_id.filter(|&u| u < m.vocab.len())?;
        // Pre-tokenizer: WhitespaceSplit then Metaspace prepending always.
        let pre = j.pre_tokenizer.as_ref()?;
        let seq = pre.get("pretokenizers")?.as_array()?;
        if pre.get("type")?.as_str()? != "Sequence"
            || seq.len() != 2
            || seq[0].get("type")?.as_str()? != "WhitespaceSplit"
            || metaspace_scheme(&seq[1])? != "always"
        {
            return None;
        }
        if metaspace_scheme(j.decoder.as_ref()?)? == "never" {
            return None;
        }
        let eos_id = template_suffix(j.post_processor.as_ref()?)?;
        let ok = ascii_ok(j.normalizer.as_ref())?;

        let n = m.vocab.len();
        let n32 = u32::try_from(n).ok()?;
        let mut blob = Vec::with_capacity(n * 8);
        let mut offs = Vec::with_capacity(n + 1);
        let mut scores = Vec::with_capacity(n);
        offs.push(0u32);
        for Piece(s, score) in &m.vocab {
            blob.extend_from_slice(s.as_bytes());
            offs.push(u32::try_from(blob.len()).ok()?);
            scores.push(*score);
        }
        let mut sorted: Vec<u32> = (0..n32).collect();
        let piece = |id: u32| &blob[offs[id as usize] as usize..offs[id as usize + 1] as usize];
        // Stable: equal pieces stay in id order; keep the last of each run.
        sorted.sort_by(|&a, &b| piece(a).cmp(piece(b)));
        let mut dedup: Vec<u32> = Vec::with_capacity(n);
        for &id in &sorted {
            match dedup.last_mut() {
                Some(last) if piece(*last) == piece(id) => *last = id,
                _ => dedup.push(id),
            }
        }
        let mut added = Vec::with_capacity(j.added_tokens.len());
        let mut special = Vec::new();
        for a in &j.added_tokens {
            if a.single_word || a.lstrip || a.rstrip || a.normalized != Some(false) {
                return None;
            }
            if a.content.is_empty() || added.iter().any(|&(id, _)| id == a.id) {
                return None;
            }
            added.push((a.id, a.special));
            if a.special {
                special.push(a.content.as_bytes().to_vec());
            }
        }
        let min_score = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let t = T5Fast {
            blob,
            offs,
            scores,
            sorted: dedup,
            unk_id: unk_id as u32,
            unk_score: min_score - UNK_PENALTY,
            eos_id,
            added,
            special,
            ok,
            json_len: json.len() as u64,
            json_hash: hash64(json),
            starts: Default::default(),
        };
        t.check_added(
            &j.added_tokens
                .iter()
                .map(|a| a.content.as_bytes())
                .collect::<Vec<_>>(),
        )?;
        Some(t.finish())
    }

    /// Every added token must be the model's own piece at its id (then the
    /// crate's ids, vocabulary size and id-to-token all agree with ours).
    fn check_added(&self, contents: &[&[u8]]) -> Option<()> {
        for (&(id, _), c) in self.added.iter().zip(contents) {
            if self.lookup(c)? != id {
                return None;
            }
        }
        let mut seen = std::collections::HashSet::new();
        contents.iter().all(|c| seen.insert(*c)).then_some(())
    }

    fn finish(mut self) -> T5Fast {
        self.special.sort();
        self.special.dedup();
        self
    }

    /// The binary cache (little-endian).
    pub fn to_cache(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(self.blob.len() + self.len() * 16 + 1024);
        o.extend_from_slice(MAGIC);
        o.extend_from_slice(&self.json_len.to_le_bytes());
        o.extend_from_slice(&self.json_hash.to_le_bytes());
        for v in [
            self.len() as u32,
            self.unk_id,
            self.eos_id,
            self.added.len() as u32,
            self.sorted.len() as u32,
            self.blob.len() as u32,
        ] {
            o.extend_from_slice(&v.to_le_bytes());
        }
        o.extend(self.ok.iter().map(|&b| b as u8));
        for &(id, sp) in &self.added {
            o.extend_from_slice(&id.to_le_bytes());
            o.push(sp as u8);
        }
        for s in &self.scores {
            o.extend_from_slice(&s.to_le_bytes());
        }
        for v in self.offs.iter().chain(&self.sorted) {
            o.extend_from_slice(&v.to_le_bytes());
        }
        o.extend_from_slice(&self.blob);
        o
    }

    /// Reads the cache, checking every field so a damaged file is refused
    /// (never trusted into a panic).
    pub fn from_cache(b: &[u8]) -> Option<T5Fast> {
        let mut r = Reader(b);
        if r.take(8)? != MAGIC {
            return None;
        }
        let json_len = r.u64()?;
        let json_hash = r.u64()?;
        let n = r.u32()? as usize;
        let unk_id = r.u32()?;
        let eos_id = r.u32()?;
        let n_added = r.u32()? as usize;
        let n_sorted = r.u32()? as usize;
        let n_blob = r.u32()? as usize;
        if n == 0 || unk_id as usize >= n || n_sorted > n || n_added > n {
            return None;
        }
        let mut ok = [false; 128];
        for (o, &v) in ok.iter_mut().zip(r.take(128)?) {
            *o = v == 1;
        }
        let mut added = Vec::with_capacity(n_added);
        for _ in 0..n_added {
            let id = r.u32()?;
            let sp = r.take(1)?[0] == 1;
            if id as usize >= n {
                return None;
            }
            added.push((id, sp));
        }
        let scores: Vec<f64> = r
            .take(n.checked_mul(8)?)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let u32s = |bytes: &[u8]| -> Vec<u32> {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect()
        };
        let offs = u32s(r.take((n + 1) * 4)?);
        let sorted = u32s(r.take(n_sorted * 4)?);
        let blob = r.take(n_blob)?.to_vec();
        if !r.0.is_empty() || scores.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let text = std::str::from_utf8(&blob).ok()?;
        if offs[0] != 0 || offs[n] as usize != n_blob {
            return None;
        }
        for w in offs.windows(2) {
            if w[0] > w[1] || !text.is_char_boundary(w[1] as usize) {
                return None;
            }
        }
        if sorted.iter().any(|&id| id as usize >= n) {
            return None;
        }
        let min_score = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let mut t = T5Fast {
            blob,
            offs,
            scores,
            sorted,
            unk_id,
            unk_score: min_score - UNK_PENALTY,
            eos_id,
            added,
            special: vec![],
            ok,
            json_len,
            json_hash,
            starts: Default::default(),
        };
        if t.sorted
            .windows(2)
            .any(|w| t.piece_bytes(w[0]) >= t.piece_bytes(w[1]))
        {
            return None;
        }
        t.special = t
            .added
            .iter()
            .filter(|a| a.1)
            .map(|&(id, _)| t.piece_bytes(id).to_vec())
            .collect();
        Some(t.finish())
    }

    // ---- encoding ------------------------------------------------------

    /// The ids of `text` followed by the end token, or `None` when the text
    /// is outside what the fast path covers.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        let b = text.as_bytes();
        if !b.iter().all(|&c| c < 128 && self.ok[c as usize]) {
            return None;
        }
        let mut ids = Vec::with_capacity(b.len() / 3 + 2);
        let mut seg = 0;
        let mut i = 0;
        while i < b.len() {
            match self.added_at(&b[i..]) {
                Some((id, len)) => {
                    self.encode_segment(&text[seg..i], &mut ids);
                    ids.push(id);
                    i += len;
                    seg = i;
                }
                None => i += 1,
            }
        }
        self.encode_segment(&text[seg..], &mut ids);
        ids.push(self.eos_id);
        Some(ids)
    }

    /// The longest added token at the start of `b`.
    fn added_at(&self, b: &[u8]) -> Option<(u32, usize)> {
        let mut best: Option<(u32, usize)> = None;
        for &(id, _) in &self.added {
            let p = self.piece_bytes(id);
            if b.starts_with(p) && !matches!(best, Some((_, l)) if l >= p.len()) {
                best = Some((id, p.len()));
            }
        }
        best
    }

    fn encode_segment(&self, seg: &str, ids: &mut Vec<u32>) {
        let mut word = String::with_capacity(64);
        for w in seg
            .split(|c: char| c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            word.clear();
            word.push(META);
            word.push_str(w);
            self.viterbi(word.as_bytes(), ids);
        }
    }

    /// `Unigram::encode_optimized` + `tokenize` on one word (`▁` then ASCII).
    fn viterbi(&self, w: &[u8], ids: &mut Vec<u32>) {
        #[derive(Clone, Copy)]
        struct Node {
            id: u32,
            score: f64,
            start: Option<usize>,
        }
        let size = w.len();
        let mut best = vec![
            Node {
                id: 0,
                score: 0.0,
                start: None
            };
            size + 1
        ];
        let mut s = 0;
        while s < size {
            let here = best[s].score;
            // Only the leading `▁` is multi-byte.
            let mblen = if w[s] < 128 { 1 } else { META.len_utf8() };
            let mut single = false;
            // Narrow [lo, hi) of sorted pieces starting with w[s..s+len],
            // from the table's range for the first byte or for `▁`.
            let (mut lo, mut hi, mut len) = self.start(&w[s..]);
            loop {
                if lo < hi && self.piece_bytes(self.sorted[lo]).len() == len {
                    let id = self.sorted[lo];
                    let cand = here + self.scores[id as usize];
                    let t = &mut best[s + len];
                    if t.start.is_none() || cand > t.score {
                        *t = Node {
                            id,
                            score: cand,
                            start: Some(s),
                        };
                    }
                    if len == mblen {
                        single = true;
                    }
                }
                if s + len >= size || lo >= hi {
                    break;
                }
                (lo, hi) = self.narrow(lo, hi, len, w[s + len]);
                len += 1;
            }
            if !single {
                let cand = here + self.unk_score;
                let t = &mut best[s + mblen];
                if t.start.is_none() || cand > t.score {
                    *t = Node {
                        id: self.unk_id,
                        score: cand,
                        start: Some(s),
                    };
                }
            }
            s += mblen;
        }
        // Backtrack, fusing runs of <unk>.
        let first = ids.len();
        let mut end = size;
        let mut unk_run: Option<usize> = None; // end of the current <unk> run
        while end > 0 {
            let node = best[end];
            let Some(start) = node.start else {
                // Unreachable for a lattice built above; be safe.
                ids.push(self.unk_id);
                break;
            };
            if node.id == self.unk_id {
                unk_run.get_or_insert(end);
            } else {
                if let Some(e) = unk_run.take() {
                    ids.push(self.lookup(&w[end..e]).unwrap_or(self.unk_id));
                }
                ids.push(node.id);
            }
            end = start;
        }
        if let Some(e) = unk_run {
            ids.push(self.lookup(&w[..e]).unwrap_or(self.unk_id));
        }
        ids[first..].reverse();
    }

    // ---- decoding ------------------------------------------------------

    fn is_special(&self, piece: &[u8]) -> bool {
        self.special
            .binary_search_by(|s| s.as_slice().cmp(piece))
            .is_ok()
    }

    /// Text of `ids`: unknown ids and special tokens skipped, `▁` a space,
    /// the first token's `▁`s dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::with_capacity(ids.len() * 6);
        let mut first = true;
        for &id in ids {
            let Some(p) = self.piece(id) else { continue };
            if self.is_special(p.as_bytes()) {
                continue;
            }
            for c in p.chars() {
                if c == META {
                    if !first {
                        out.push(' ');
                    }
                } else {
                    out.push(c);
                }
            }
            first = false;
        }
        out
    }
}

/// `always`, `first` or `never` for a Metaspace with replacement `▁`.
fn metaspace_scheme(v: &serde_json::Value) -> Option<&str> {
    if v.get("type")?.as_str()? != "Metaspace" || v.get("replacement")?.as_str()? != "\u{2581}" {
        return None;
    }
    if v.get("add_prefix_space").and_then(|a| a.as_bool()) == Some(false) {
        return Some("never");
    }
    match v.get("prepend_scheme") {
        None => Some("always"),
        Some(s) => s.as_str(),
    }
}

/// The id a single-sequence template appends: `$A` then one special token.
fn template_suffix(v: &serde_json::Value) -> Option<u32> {
    if v.get("type")?.as_str()? != "TemplateProcessing" {
        return None;
    }
    let single = v.get("single")?.as_array()?;
    if single.len() != 2 || single[0].get("Sequence")?.get("id")?.as_str()? != "A" {
        return None;
    }
    let name = single[1].get("SpecialToken")?.get("id")?.as_str()?;
    let ids = v.get("special_tokens")?.get(name)?.get("ids")?.as_array()?;
    if ids.len() != 1 {
        return None;
    }
    u32::try_from(ids[0].as_u64()?).ok()
}

/// Which ASCII bytes the fast encoder takes, given the normalizer: printable
/// ASCII that it leaves alone, and ' ', '\t', '\n' that it leaves as
/// (non-empty) whitespace. `None` for a normalizer other than Precompiled.
fn ascii_ok(norm: Option<&serde_json::Value>) -> Option<[bool; 128]> {
    use tokenizers::normalizers::NormalizerWrapper;
    let pre = match norm {
        None => None,
        Some(v) => match serde_json::from_value::<NormalizerWrapper>(v.clone()).ok()? {
            NormalizerWrapper::Precompiled(p) => Some(p),
            _ => return None,
        },
    };
    let mut ok = [false; 128];
    for c in 0u8..128 {
        let ws = matches!(c, b' ' | b'\t' | b'\n');
        if !(ws || (0x21..0x7f).contains(&c)) {
            continue;
        }
        let s = (c as char).to_string();
        let mapped = pre
            .as_ref()
            .and_then(|p| p.transform(&s).map(str::to_owned));
        ok[c as usize] = match mapped {
            None => true,
            Some(m) if m == s => true,
            Some(m) => ws && !m.is_empty() && m.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n')),
        };
    }
    Some(ok)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A file's bytes, mapped for the length of a load: read into the heap,
/// the 3.2 MB of tokenizer.json and its cache were ~800 pages of new memory,
/// 10% of a `t5edge generate` cold start on the Intel Xeon VM, where first
/// touches are dear (kernels/BENCH.md); mapped, a load reads the page cache.
fn map(path: &Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only and private, held only while `load` hashes and
    // parses it (every value it keeps is copied out). Another process
    // truncating the file in those milliseconds would make a read fault
    // (SIGBUS), the cost of mapping the weights too (README, robustness).
    unsafe { memmap2::Mmap::map(&file) }.ok()
}
