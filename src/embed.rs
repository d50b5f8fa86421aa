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
        .map(|rows| mean_pool(rows, d, normalize))
        .collect())
}

/// [`embed`] of each input alone, bit for bit what `embed(model, &[input],
/// normalize)` gives it (a batch packed into one pass may differ in the
/// last bits: a product's summation order can depend on the rows sharing
/// it). Many inputs run at once, one a pool thread, each input's encoder
/// on that thread (an input's values do not depend on the thread count);
/// few run one after another, each over every thread. The first input's
/// error in input order.
pub fn embed_each_alone(
    model: &T5Model,
    batch: &[&[u32]],
    normalize: bool,
) -> Result<Vec<Vec<f32>>> {
    let alone = |ids: &[u32]| -> Result<Vec<f32>> {
        let mut e = embed(model, &[ids], normalize)?;
        Ok(e.remove(0))
    };
    // Two inputs a thread at least, so that the last ones do not leave a
    // thread idle for long, and short enough inputs that one thread's pass
    // is not worth splitting: past that, one input over every thread is as
    // fast as several at once.
    let threads = t5edge_kernels::pool::current_threads();
    let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
    if threads < 2 || batch.len() < 2 * threads || longest > CONCURRENT_MAX_LEN {
        return batch.iter().map(|ids| alone(ids)).collect();
    }
    t5edge_kernels::pool::map(batch.len(), 1, true, |i| alone(batch[i]))
        .into_iter()
        .collect()
}

/// The longest input [`embed_each_alone`] runs beside others.
const CONCURRENT_MAX_LEN: usize = 256;

/// The mean of an input's encoder rows, optionally at unit L2 norm.
fn mean_pool(rows: &[f32], d: usize, normalize: bool) -> Vec<f32> {
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
}
