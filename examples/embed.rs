//! Mean-pooled, normalized encoder embeddings and their cosine similarities.
//!
//! `cargo run --release --example embed -- [MODEL_DIR_OR_HUB_ID]`
//! Without a model, a tiny random-weight T5 is synthesized in a temp dir.

use t5edge::{embed, T5Model, Tokenizer};

fn main() -> t5edge::Result<()> {
    run(std::env::args().nth(1))
}

/// Embeds with the model `model` (a directory or hub id), or a synthesized one.
fn run(model: Option<String>) -> t5edge::Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| t5edge::Error::Other(e.to_string()))?;
    let dir = match model {
        Some(m) if std::path::Path::new(&m).is_dir() => m.into(),
        Some(m) => t5edge::hub::resolve(&m)?,
        None => {
            let cfg =
                t5edge::synth::preset("t5-efficient-tiny-nl2").map_err(t5edge::Error::Other)?;
            let cfg = t5edge::synth::with_overrides(
                &cfg,
                &["d_model=64".into(), "vocab_size=1000".into()],
            )
            .map_err(t5edge::Error::Other)?;
            t5edge::synth::write_checkpoint(tmp.path(), &cfg, &Default::default(), true)?;
            tmp.path().to_path_buf()
        }
    };
    let model = T5Model::load(&dir)?;
    let tok = Tokenizer::from_dir(&dir, model.config.vocab_size)?;
    let texts = ["the quick brown fox", "the lazy dog", "hello world"];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t))
        .collect::<t5edge::Result<_>>()?;
    let refs: Vec<&[u32]> = ids.iter().map(|v| &v[..]).collect();
    let e = embed(&model, &refs, true)?;
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            let cos: f32 = e[i].iter().zip(&e[j]).map(|(a, b)| a * b).sum();
            println!("cos({:?}, {:?}) = {cos:.4}", texts[i], texts[j]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn example_runs() {
        super::run(Default::default()).unwrap();
    }
}
