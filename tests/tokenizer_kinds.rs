//! mT5- and umT5-style `tokenizer.json` files, as HF's converter writes them
//! from a SentencePiece model (tests/fixtures/tokenizers, made by
//! tools/refs/make_tokenizer_refs.py): they load for a model whose
//! vocabulary is larger than the tokenizer's (mT5: 250,100 pieces for
//! 250,112 rows), and encode and decode multilingual text to HF's fast
//! tokenizer's ids and text; and ByT5's byte tokenizer against HF's
//! `ByT5Tokenizer`.

use std::path::{Path, PathBuf};
use t5edge::Tokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

#[test]
fn mt5_and_umt5_style_tokenizers_match_hf() {
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("refs.json")).unwrap())
            .unwrap();
    for (kind, r) in refs["kinds"].as_object().unwrap() {
        let path = fixtures().join(format!("{kind}.json"));
        let len = r["tokenizer_len"].as_u64().unwrap() as usize;
        // A model padded past the tokenizer, as mT5's and umT5's are.
        let tok = Tokenizer::from_file(&path, len + 12).unwrap();
        assert_eq!(tok.vocab_size(), len, "{kind}");
        let e = Tokenizer::from_file(&path, len - 1).err().unwrap();
        assert!(e.to_string().contains("rows"), "{kind}: {e}");
        for c in r["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let want: Vec<u32> = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tok.encode(text).unwrap(), want, "{kind}: {text:?}");
            assert_eq!(
                tok.decode(&want).unwrap(),
                c["decoded"].as_str().unwrap(),
                "{kind}: decode {text:?}"
            );
        }
    }
}

/// ByT5 (a `T5ForConditionalGeneration` whose tokenizer is HF's Python
/// `ByT5Tokenizer`, with no tokenizer.json): chosen from the directory's
/// `tokenizer_config.json` or `config.json`, and its ids and decoded text are
/// `ByT5Tokenizer`'s, special tokens and sentinels in the text included.
#[test]
fn byt5_tokenizer_matches_hf() {
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("refs.json")).unwrap())
            .unwrap();
    let r = &refs["byt5"];
    let len = r["tokenizer_len"].as_u64().unwrap() as usize;
    let dir = std::env::temp_dir().join(format!("t5edge-byt5-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for (file, json) in [
        (
            "tokenizer_config.json",
            r#"{"tokenizer_class": "ByT5Tokenizer", "extra_ids": 125}"#,
        ),
        ("config.json", r#"{"tokenizer_class": "ByT5Tokenizer"}"#),
    ] {
        let _ = std::fs::remove_file(dir.join("tokenizer_config.json"));
        std::fs::write(dir.join(file), json).unwrap();
        let tok = Tokenizer::from_dir(&dir, len).unwrap();
        assert_eq!(tok.vocab_size(), len);
        for c in r["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["ids"]);
            assert_eq!(tok.encode(text).unwrap(), want, "byt5 ({file}): {text:?}");
            assert_eq!(
                tok.decode(&want).unwrap(),
                c["decoded"].as_str().unwrap(),
                "byt5: decode {text:?}"
            );
        }
        for c in r["decodes"].as_array().unwrap() {
            assert_eq!(
                tok.decode(&ids(&c["ids"])).unwrap(),
                c["decoded"].as_str().unwrap()
            );
        }
        let e = Tokenizer::from_dir(&dir, len - 1).err().unwrap();
        assert!(e.to_string().contains("ByT5Tokenizer"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
