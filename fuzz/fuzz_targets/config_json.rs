//! Arbitrary text as config.json: parsed and validated, or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = t5edge::T5Config::from_json(s) {
            c.validate().expect("a parsed config validates");
            assert!((c.eos_token_id as usize) < c.vocab_size);
        }
    }
});
