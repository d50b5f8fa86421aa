//! The fast T5 tokenizer against the `tokenizers` crate (the oracle): the
//! same ids for thousands of random and real-looking texts, the same strings
//! back from decoding, for the synthetic tokenizer and (when present) the
//! genuine T5 one; and the binary cache loads to the same tokenizer, is
//! ignored when stale and refused when damaged.

mod common;
mod support;

use std::path::{Path, PathBuf};
use support::TempDir;
use t5edge::tokenizer::fast::T5Fast;
use t5edge::tokenizer::{write_cache, Tokenizer, CACHE_NAME};

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "The",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "near",
    "riverbank",
    "while",
    "children",
    "watch",
    "translate",
    "English",
    "German",
    "French",
    "summarize",
    "question",
    "answer",
    "context",
    "hello",
    "world",
    "Hello",
    "World",
    "running",
    "unbelievable",
    "antidisestablishmentarianism",
    "x",
    "a",
    "I",
    "isn't",
    "don't",
    "e.g.",
    "U.S.A.",
    "3.14159",
    "2024",
    "1,000,000",
    "$5",
    "50%",
    "C++",
    "foo_bar",
    "http://example.com/a?b=c&d=e",
    "#tag",
    "@user",
    "email@example.org",
    "zzzzqqq",
    "QWERTY",
    "mIxEd",
    "naïve",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "`",
    "~",
    "^",
    "|",
    "\\",
    "/",
    "<",
    ">",
    "<>",
    "<extra_id_0>",
    "<extra_id_5>",
    "<extra_id_99>",
    "<extra_id_150>",
    "<extra_id_",
    "</s>",
    "<pad>",
    "<unk>",
    "</s",
    "<s>",
    "...",
    "--",
    "!?",
    ";",
    ":",
    ",",
    ".",
    "-",
    "+",
    "=",
    "*",
    "&",
    "%",
    "$",
    "#",
    "@",
    "!",
    "?",
];
const SPACES: &[&str] = &[" ", " ", " ", " ", "  ", "   ", "\t", "\n", " \n ", "", ""];
const SENTENCES: &[&str] = &[
    "translate English to German: The quick brown fox jumps over the lazy dog near the riverbank while the children watch.",
    "summarize: State authorities dispatched emergency crews Tuesday to survey the damage after an onslaught of severe weather in Mississippi.",
    "cola sentence: The course is jumping well.",
    "stsb sentence1: The rhino grazed on the grass. sentence2: A rhino is grazing in a field.",
    "question: What is the capital of France? context: Paris is the capital and most populous city of France.",
    "The <extra_id_0> walks in <extra_id_1> park",
    "Thank you <extra_id_0> me to your party <extra_id_1> week.",
    "",
    "   ",
    "\t\n",
    "a",
    "</s>",
    "<extra_id_0><extra_id_1>",
    "x<extra_id_5>y",
    "Hello,world!!!  It's 10:30am -- (approx.) $1,234.56; 99% sure.",
    "def f(x): return x**2 + 3*x - 1  # comment",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
];

fn random_text(r: &mut Rng) -> String {
    let mut s = String::new();
    match r.below(4) {
        // Raw printable ASCII soup.
        0 => {
            for _ in 0..r.below(60) {
                let c = match r.below(10) {
                    0 => ' ',
                    1 => '\t',
                    2 => '\n',
                    _ => (0x21 + r.below(94) as u8) as char,
                };
                s.push(c);
            }
        }
        // Words with spacing, glued punctuation and sentinels.
        1 | 2 => {
            for _ in 0..r.below(25) {
                s.push_str(r.pick(WORDS));
                s.push_str(r.pick(SPACES));
            }
        }
        // A real-looking sentence, perhaps cut or spliced.
        _ => {
            let t = r.pick(SENTENCES);
            let cut = r.below(t.len() + 1);
            s.push_str(&t[..cut]);
            if r.below(2) == 0 {
                s.push_str(&format!("<extra_id_{}>", r.below(110)));
                s.push_str(&t[cut..]);
            }
        }
    }
    s
}

/// Checks encode and decode of `n` random texts plus the fixed ones.
fn check_parity(json: &Path, n: usize, seed: u64) {
    let ours = Tokenizer::from_file(json, usize::MAX).unwrap();
    assert!(
        ours.is_fast(),
        "{}: the T5 pipeline should take the fast path",
        json.display()
    );
    let oracle = tokenizers::Tokenizer::from_file(json).unwrap();
    let mut r = Rng(seed);
    let mut texts: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    texts.extend(WORDS.iter().map(|s| s.to_string()));
    texts.extend((0..n).map(|_| random_text(&mut r)));
    let mut fast_hits = 0;
    for t in &texts {
        let want = oracle.encode(t.as_str(), true).unwrap().get_ids().to_vec();
        let got = ours.encode(t).unwrap();
        assert_eq!(got, want, "{}: encode {t:?}", json.display());
        let ascii = t
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\n');
        match ours.encode_fast(t) {
            Some(ids) => {
                fast_hits += 1;
                assert_eq!(ids, want);
            }
            None => assert!(!ascii, "fast path refused printable ASCII {t:?}"),
        }
        let want_text = oracle.decode(&want, true).unwrap();
        assert_eq!(ours.decode(&want).unwrap(), want_text, "decode of {t:?}");
    }
    assert!(
        fast_hits * 10 >= texts.len() * 9,
        "fast path covered only {fast_hits}/{}",
        texts.len()
    );
    // A batch: the same ids in the same order, whatever the pool (its
    // texts go to several threads past a few KB; a few leave the fast path).
    texts.extend(["Übergröße café", "emoji 🦀 ok", ""].map(String::from));
    let want: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| oracle.encode(t.as_str(), true).unwrap().get_ids().to_vec())
        .collect();
    for threads in [1, 3] {
        let got = t5edge_kernels::pool::Pool::new(threads).install(|| ours.encode_batch(&texts));
        assert!(
            got.unwrap() == want,
            "{}: a batch on {threads} threads",
            json.display()
        );
    }
    // Random id sequences: specials, sentinels, ids past the vocabulary.
    let v = oracle.get_vocab_size(true) as u32;
    for _ in 0..n {
        let ids: Vec<u32> = (0..r.below(40))
            .map(|_| match r.below(6) {
                0 => r.below(4) as u32,
                1 => v - 1 - r.below(100.min(v as usize)) as u32,
                2 => v + r.below(5) as u32,
                _ => r.below(v as usize) as u32,
            })
            .collect();
        let known: Vec<u32> = ids.iter().copied().filter(|&i| i < v).collect();
        let want = oracle.decode(&known, true).unwrap();
        assert_eq!(ours.decode(&ids).unwrap(), want, "decode {ids:?}");
    }
    for id in 0..v {
        assert_eq!(ours.id_to_token(id), oracle.id_to_token(id));
    }
    assert_eq!(ours.vocab_size(), v as usize);
}

/// Texts outside the fast path still tokenize exactly (through the crate).
fn check_fallback(json: &Path) {
    let ours = Tokenizer::from_file(json, usize::MAX).unwrap();
    let oracle = tokenizers::Tokenizer::from_file(json).unwrap();
    for t in [
        "Übergröße café",
        "naïve résumé",
        "a\rb",
        "tab\u{b}vt",
        "emoji 🦀 ok",
        "▁x",
        "ｆｕｌｌ",
    ] {
        assert!(
            ours.encode_fast(t).is_none(),
            "{t:?} should leave the fast path"
        );
        let want = oracle.encode(t, true).unwrap().get_ids().to_vec();
        assert_eq!(ours.encode(t).unwrap(), want, "{t:?}");
    }
}

fn synth_json(tag: &str) -> (TempDir, PathBuf) {
    let d = TempDir::new(tag);
    let p = d.join("tokenizer.json");
    let json = t5edge::synth::tokenizer_json(512);
    std::fs::write(&p, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    (d, p)
}

fn genuine_t5() -> Option<PathBuf> {
    let p = common::shared_root().join("tokenizers/t5/tokenizer.json");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "skipping: no genuine T5 tokenizer at {} (set T5EDGE_SHARED)",
            p.display()
        );
        None
    }
}

#[test]
fn synthetic_tokenizer_matches_the_crate() {
    let (_d, p) = synth_json("tokpar-synth");
    check_parity(&p, 4000, 1);
    check_fallback(&p);
}

#[test]
fn genuine_t5_tokenizer_matches_the_crate() {
    let Some(p) = genuine_t5() else { return };
    check_parity(&p, 4000, 2);
    check_fallback(&p);
}

#[test]
fn cache_loads_the_same_tokenizer_and_stale_or_damaged_ones_are_ignored() {
    let mut jsons = vec![synth_json("tokpar-cache")];
    if let Some(p) = genuine_t5() {
        let d = TempDir::new("tokpar-cache-t5");
        std::fs::copy(&p, d.join("tokenizer.json")).unwrap();
        let p = d.join("tokenizer.json");
        jsons.push((d, p));
    }
    for (d, p) in &jsons {
        let cache = d.join(CACHE_NAME);
        assert!(
            write_cache(p, &cache).unwrap(),
            "cache not written for {}",
            p.display()
        );
        let bytes = std::fs::read(&cache).unwrap();
        let fresh = T5Fast::from_cache(&bytes).expect("cache reads back");
        let from_json = T5Fast::from_json(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(fresh.to_cache(), from_json.to_cache());
        // Loading through the cache still agrees with the crate.
        check_parity(p, 300, 3);
        // Damaged: every truncation and some bit flips are refused or harmless.
        for cut in (0..bytes.len()).step_by(bytes.len() / 200 + 1) {
            assert!(T5Fast::from_cache(&bytes[..cut]).is_none());
        }
        let mut r = Rng(9);
        for _ in 0..200 {
            let mut b = bytes.clone();
            let i = r.below(b.len());
            b[i] ^= 1 << r.below(8);
            if let Some(t) = T5Fast::from_cache(&b) {
                let _ = t.encode("The quick brown fox <extra_id_0> jumps.");
                let _ = t.decode(&[0, 1, 2, 3, 4, 5, 100, 1000]);
            }
        }
        std::fs::write(&cache, b"garbage").unwrap();
        check_parity(p, 100, 4);
        // Stale: the JSON changed after the cache was written (a piece's score
        // moves); the cache must be ignored, so results follow the new JSON.
        assert!(write_cache(p, &cache).unwrap());
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let vocab = v["model"]["vocab"].as_array_mut().unwrap();
        let i = vocab.iter().position(|e| e[0] == "\u{2581}the").unwrap();
        vocab[i][1] = serde_json::json!(-1000.0);
        std::fs::write(p, serde_json::to_vec(&v).unwrap()).unwrap();
        check_parity(p, 300, 5);
    }
}

#[test]
fn other_pipelines_use_the_crate() {
    let d = TempDir::new("tokpar-other");
    let p = d.join("tokenizer.json");
    let mut json = t5edge::synth::tokenizer_json(512);
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    std::fs::write(&p, serde_json::to_vec(&json).unwrap()).unwrap();
    let ours = Tokenizer::from_file(&p, 512).unwrap();
    assert!(!ours.is_fast());
    let oracle = tokenizers::Tokenizer::from_file(&p).unwrap();
    let t = "The Quick Brown FOX";
    assert_eq!(
        ours.encode(t).unwrap(),
        oracle.encode(t, true).unwrap().get_ids()
    );
    assert!(!write_cache(&p, &d.join(CACHE_NAME)).unwrap());
}

#[test]
fn fast_path_refuses_a_vocabulary_larger_than_the_model() {
    let (_d, p) = synth_json("tokpar-small");
    let Err(e) = Tokenizer::from_file(&p, 100) else {
        panic!("a 100-row model took a larger tokenizer")
    };
    assert!(e.to_string().contains("100"), "{e}");
}
