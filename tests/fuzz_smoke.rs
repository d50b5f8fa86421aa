//! A stable-toolchain stand-in for the cargo-fuzz targets in `fuzz/`: the same
//! entry points fed random and mutated bytes. Nothing may panic; whatever loads
//! must also run. Case counts are capped so the suite takes seconds.

use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::weights::{writer, TensorFile, WeightStore};
use t5edge::{synth, T5Config, T5Model};

/// The micro config the load/generate targets use (the fuzz crate has the same).
const MICRO: &str = r#"{"vocab_size": 16, "d_model": 8, "d_ff": 16, "d_kv": 4,
    "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1,
    "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false}"#;

fn micro() -> &'static (T5Config, Vec<u8>, T5Model) {
    static M: OnceLock<(T5Config, Vec<u8>, T5Model)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = T5Config::from_json(MICRO).unwrap();
        let t = synth::tensors(
            &cfg,
            &synth::SynthOptions {
                seed: 1,
                norm_jitter: 0.1,
                ..Default::default()
            },
        );
        let bytes = writer::serialize(&t, &Default::default());
        let model = load(&cfg, &bytes).unwrap();
        (cfg, bytes, model)
    })
}

fn load(cfg: &T5Config, bytes: &[u8]) -> t5edge::Result<T5Model> {
    let f = TensorFile::from_bytes(Path::new("fuzz.safetensors"), bytes)?;
    let store = WeightStore::from_files(vec![f])?;
    T5Model::from_store(cfg.clone(), &store)
}

/// Loads; if that works the model must run (a file that loads is a model).
fn load_and_run(bytes: &[u8]) {
    let cfg = &micro().0;
    if let Ok(m) = load(cfg, bytes) {
        let logits = m.forward(&[3, 4, 1], &[0, 2]).unwrap();
        assert_eq!(logits.len(), 2 * cfg.vocab_size);
        let opts = GenerateOptions::default().max_new_tokens(3);
        greedy(&m, &[&[5, 1]], &opts).unwrap();
    }
}

/// A mutation of the valid file: byte overwrites, a truncation, and a number
/// spliced over a digit run of the header (offsets, shapes, the length prefix).
#[derive(Debug, Clone)]
struct Mutation {
    writes: Vec<(usize, u8)>,
    truncate: Option<usize>,
    splice: Option<(usize, u64)>,
    prefix: Option<u64>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        prop::option::weighted(0.2, any::<usize>()),
        prop::option::weighted(
            0.5,
            (
                any::<usize>(),
                prop_oneof![0..64u64, any::<u64>(), Just(u64::MAX), Just(1 << 32)],
            ),
        ),
        prop::option::weighted(0.1, any::<u64>()),
    )
        .prop_map(|(writes, truncate, splice, prefix)| Mutation {
            writes,
            truncate,
            splice,
            prefix,
        })
}

fn apply(base: &[u8], m: &Mutation) -> Vec<u8> {
    let n = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let mut header = base[8..8 + n].to_vec();
    let data = &base[8 + n..];
    if let Some((at, num)) = m.splice {
        // Replace the digit run at (or after) a random header position.
        let digits: Vec<usize> = (0..header.len())
            .filter(|&i| header[i].is_ascii_digit())
            .collect();
        if !digits.is_empty() {
            let s = digits[at % digits.len()];
            let e = (s..header.len())
                .find(|&i| !header[i].is_ascii_digit())
                .unwrap_or(header.len());
            header.splice(s..e, num.to_string().into_bytes());
        }
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    if let Some(p) = m.prefix {
        out[..8].copy_from_slice(&p.to_le_bytes());
    }
    let len = out.len();
    for &(i, b) in &m.writes {
        // Bias writes toward the header, where the structure is.
        let i = if i % 2 == 0 {
            i % (8 + header.len()).min(len)
        } else {
            i % len
        };
        out[i] = b;
    }
    if let Some(t) = m.truncate {
        out.truncate(t % (len + 1));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = TensorFile::from_bytes(Path::new("r"), &bytes);
        load_and_run(&bytes);
    }

    #[test]
    fn header_shaped_bytes_never_panic(json in "\\{(\"[a-z.]{0,6}\":\\{\"dtype\":\"(F32|F16|BF16|I8|U8|I64|F64|C64|F4|X)\",\"shape\":\\[[0-9,]{0,8}\\],\"data_offsets\":\\[[0-9]{0,3},[0-9]{0,3}\\]\\},?){0,3}\\}", data_len in 0usize..64) {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b.extend(std::iter::repeat_n(0x3f, data_len));
        let _ = TensorFile::from_bytes(Path::new("h"), &b);
    }

    #[test]
    fn mutated_checkpoints_never_panic(m in mutation()) {
        let bytes = apply(&micro().1, &m);
        load_and_run(&bytes);
    }

    #[test]
    fn config_json_never_panics(s in "\\{(\"(vocab_size|d_model|d_kv|d_ff|num_heads|num_layers|relative_attention_num_buckets|relative_attention_max_distance|eos_token_id|layer_norm_epsilon|feed_forward_proj|tie_word_embeddings)\": *(-?[0-9]{1,22}(\\.[0-9])?|\"[a-z-]{0,12}\"|true|null|\\[[0-9]{0,3}\\]),? *){0,5}\\}") {
        if let Ok(c) = T5Config::from_json(&s) {
            // Whatever parses is internally consistent.
            c.validate().unwrap();
            prop_assert!(c.eos_token_id < c.vocab_size as u32);
        }
    }

    #[test]
    fn arbitrary_ids_never_panic(ids in prop::collection::vec(prop_oneof![0u32..20, any::<u32>()], 0..24), max_new in 0usize..6) {
        let (cfg, _, m) = micro();
        let opts = GenerateOptions::default().max_new_tokens(max_new);
        let r = greedy(m, &[&ids], &opts);
        let valid = !ids.is_empty() && ids.iter().all(|&i| (i as usize) < cfg.vocab_size);
        prop_assert_eq!(r.is_ok(), valid, "{:?}", r.err());
        if let Ok(out) = r {
            prop_assert!(out[0].len() <= max_new);
            prop_assert!(out[0].iter().all(|&i| (i as usize) < cfg.vocab_size));
        }
        let _ = m.forward(&ids, &ids);
    }
}

/// The serve_requests target's entry: every endpoint's body parser and the
/// JSONL line's; what parses is a request the library accepts.
fn parse_request(which: u8, body: &str) {
    use t5edge::generate::GenerateRequest;
    use t5edge::serve::requests;
    let base = GenerateOptions::default();
    match which % 6 {
        0 => {
            if let Ok(g) = requests::generate(body, &base) {
                assert!(g.request.options.validate().is_ok());
            }
        }
        1 => {
            if let Ok(e) = requests::embeddings(body) {
                assert!(!e.inputs.is_empty());
            }
        }
        2 => drop(requests::encode(body)),
        3 => drop(requests::score(body)),
        5 => {
            if let Ok(r) = requests::rerank(body) {
                assert!(!r.documents.is_empty());
            }
        }
        _ => {
            if let Ok(r) = GenerateRequest::from_json(body, &base) {
                assert!(r.options.validate().is_ok());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_bodies_never_panic(
        which in any::<u8>(),
        body in "\\{(\"(text|input_ids|input|target|target_ids|stream|model|encoding_format|user|max_new_tokens|min_new_tokens|num_beams|num_return_sequences|do_sample|temperature|top_k|top_p|repetition_penalty|no_repeat_ngram_size|early_stopping|seed|eos_token_id|length_penalty|x)\": *(-?[0-9]{1,21}(\\.[0-9]{1,3})?(e[0-9]{1,3})?|\"[a-z ]{0,8}\"|true|false|null|\\[(-?[0-9]{1,11},?|\"[a-z]{0,3}\",?|\\[[0-9,]{0,6}\\],?){0,4}\\]|\\{\\}),? *){0,5}\\}?"
    ) {
        parse_request(which, &body);
    }

    #[test]
    fn random_request_bytes_never_panic(which in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        parse_request(which, &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn micro_checkpoint_is_valid_to_start_from() {
    // The mutations start from a file that loads and runs.
    load_and_run(&micro().1);
    assert!(load(&micro().0, &micro().1).is_ok());
}
