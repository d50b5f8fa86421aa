//! Sentence embeddings: the mean of the encoder's final hidden states.

use crate::model::T5Model;
use crate::Result;

/// Embeds each sequence as the mean of its encoder output rows (the final,
/// layer-normed `last_hidden_state`), optionally scaled to unit L2 norm.
///
/// This is mask-aware mean pooling: the encoder packs sequences without
/// padding, so each mean runs over that sequence's own rows only, and a batch
/// gives each sequence the embedding it gets alone.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
/// # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
/// #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
/// # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
/// let model = t5edge::T5Model::load(dir.path())?;
/// let e = t5edge::embed(&model, &[&[37, 12, 1], &[5, 1]], true)?;
/// assert_eq!(e.len(), 2);
/// assert_eq!(e[0].len(), model.config.d_model);
/// let norm: f32 = e[0].iter().map(|v| v * v).sum::<f32>().sqrt();
/// assert!((norm - 1.0).abs() < 1e-5);
/// # Ok::<(), t5edge::Error>(())
/// ```
pub fn embed(model: &T5Model, batch: &[&[u32]], normalize: bool) -> Result<Vec<Vec<f32>>> {
    let d = model.config.d_model;
    let enc = model.encode_batch(batch)?;
    Ok(enc
        .iter()
        .map(|rows| {
            let n = rows.len() / d;
            let mut sum = vec![0f64; d];
            for row in rows.chunks_exact(d) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            let mut mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
            if normalize {
                let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > 0.0 {
                    mean.iter_mut().for_each(|v| *v /= norm);
                }
            }
            mean.into_iter().map(|v| v as f32).collect()
        })
        .collect())
}
