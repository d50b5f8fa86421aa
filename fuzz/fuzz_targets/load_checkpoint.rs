//! Arbitrary bytes as the weights of a fixed micro config: refused, or a model
//! that runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use t5edge::weights::{TensorFile, WeightStore};
use t5edge::{T5Config, T5Model};

const MICRO: &str = r#"{"vocab_size": 16, "d_model": 8, "d_ff": 16, "d_kv": 4,
    "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1,
    "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false}"#;

fuzz_target!(|data: &[u8]| {
    let cfg = T5Config::from_json(MICRO).unwrap();
    let Ok(f) = TensorFile::from_bytes(Path::new("fuzz"), data) else {
        return;
    };
    let Ok(store) = WeightStore::from_files(vec![f]) else {
        return;
    };
    if let Ok(m) = T5Model::from_store(cfg, &store) {
        let logits = m.forward(&[3, 4, 1], &[0, 2]).unwrap();
        assert_eq!(logits.len(), 2 * 16);
    }
});
