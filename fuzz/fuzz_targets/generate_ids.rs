//! Arbitrary token ids (and a max_new_tokens) against a micro synthetic model
//! built once in memory: generated, or refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::weights::{writer, TensorFile, WeightStore};
use t5edge::{synth, T5Config, T5Model};

const MICRO: &str = r#"{"vocab_size": 16, "d_model": 8, "d_ff": 16, "d_kv": 4,
    "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1,
    "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16}"#;

fn model() -> &'static T5Model {
    static M: OnceLock<T5Model> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = T5Config::from_json(MICRO).unwrap();
        let t = synth::tensors(
            &cfg,
            &synth::SynthOptions {
                seed: 3,
                norm_jitter: 0.1, ..Default::default() },
        );
        let bytes = writer::serialize(&t, &Default::default());
        let f = TensorFile::from_bytes(Path::new("micro"), &bytes).unwrap();
        T5Model::from_store(cfg, &WeightStore::from_files(vec![f]).unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let m = model();
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // First byte: max_new_tokens (0..=7) and whether ids are small (mostly valid).
    let max_new = (first & 7) as usize;
    let ids: Vec<u32> = if first & 8 != 0 {
        rest.iter().map(|&b| (b % 20) as u32).collect()
    } else {
        rest.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let ids = &ids[..ids.len().min(64)];
    let valid = !ids.is_empty() && ids.iter().all(|&i| i < 16);
    let opts = GenerateOptions::default().max_new_tokens(max_new);
    match greedy(m, &[ids], &opts) {
        Ok(out) => {
            assert!(valid);
            assert!(out[0].len() <= max_new && out[0].iter().all(|&i| i < 16));
        }
        Err(_) => assert!(!valid),
    }
    let _ = m.forward(ids, ids);
});
