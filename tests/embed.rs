//! Embeddings against HF: the mean over rows of HF's encoder `last_hidden_state`
//! (../shared goldens `<p>.encoder_hidden`), when ../shared is present.

mod common;

use common::{shared_dir, Arrays};

#[test]
fn embed_matches_mean_of_hf_encoder_hidden() {
    let Some(shared) = shared_dir("embed_matches_mean_of_hf_encoder_hidden") else {
        return;
    };
    for name in ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"] {
        let model = t5edge::T5Model::load(&shared.join("models").join(name)).unwrap();
        let g = Arrays::open(
            &shared
                .join("goldens")
                .join(name)
                .join("goldens.safetensors"),
        );
        let d = model.config.d_model;
        let mut worst = 0.0f32;
        for p in ["empty", "hello", "short", "span", "medium", "long", "xlong"] {
            let ids = g.ids(&format!("{p}.input_ids"));
            let hidden = g.f32(&format!("{p}.encoder_hidden"));
            let t = ids.len();
            let mean: Vec<f32> = (0..d)
                .map(|j| (0..t).map(|r| hidden[r * d + j] as f64).sum::<f64>() as f32 / t as f32)
                .collect();
            let got = t5edge::embed(&model, &[&ids], false).unwrap().remove(0);
            let scale = mean.iter().map(|v| v.abs()).fold(0.0, f32::max);
            for (a, b) in got.iter().zip(&mean) {
                let diff = (a - b).abs();
                worst = worst.max(diff / scale);
                assert!(diff <= 1e-4 * scale, "{name} {p}: {a} vs HF {b}");
            }
        }
        eprintln!("{name}: embeddings within {worst:e} (relative to max |value|) of HF");
    }
}
