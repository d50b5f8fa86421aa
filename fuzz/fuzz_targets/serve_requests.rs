//! Arbitrary HTTP request bodies through the parsers `t5edge serve` runs
//! (t5edge::serve::requests) and the JSONL batch line's
//! (GenerateRequest::from_json): parsed, or refused with an error, never a
//! panic. The first byte picks the endpoint; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use t5edge::generate::{GenerateOptions, GenerateRequest};
use t5edge::serve::requests;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let base = GenerateOptions::default();
    match which % 6 {
        0 => {
            if let Ok(g) = requests::generate(&body, &base) {
                // What parses is a request the library accepts.
                assert!(g.request.options.validate().is_ok());
            }
        }
        1 => {
            if let Ok(e) = requests::embeddings(&body) {
                assert!(!e.inputs.is_empty());
            }
        }
        2 => {
            let _ = requests::encode(&body);
        }
        3 => {
            let _ = requests::score(&body);
        }
        5 => {
            if let Ok(r) = requests::rerank(&body) {
                assert!(!r.documents.is_empty());
            }
        }
        _ => {
            if let Ok(r) = GenerateRequest::from_json(&body, &base) {
                assert!(r.options.validate().is_ok());
            }
        }
    }
});
