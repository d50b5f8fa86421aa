//! The encoder's last hidden states for a batch of inputs of different
//! lengths, as one padded `[batch, max_len, d_model]` array with the mask, and
//! the files `t5edge encode --output` writes them to.
//!
//! The encoder runs packed (no padding, see `model::encoder`), so each input's
//! rows are the ones it gets alone; padding rows are zero here, where HF's
//! padded `last_hidden_state` holds whatever the masked positions computed.

use crate::model::T5Model;
use crate::weights::writer::{self, OutTensor};
use crate::weights::DType;
use crate::{Error, Result};
use std::ops::Range;
use std::path::Path;

/// Tokens the encoder takes in one packed pass. Bounds the working memory
/// (activations are a few times `tokens x d_ff` floats) whatever the batch;
/// a pass this size already keeps every core busy in the linear layers.
pub const TOKENS_PER_PASS: usize = 8192;

/// Consecutive groups of `lens` whose sum stays within `budget` (a single
/// item above it gets a group of its own).
pub(crate) fn passes(lens: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, &n) in lens.iter().enumerate() {
        if i > start && sum + n > budget {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += n;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// The encoder states of a batch, padded to its longest input.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedBatch {
    /// `[batch, max_len, d_model]`, the final layer norm applied (HF's
    /// `last_hidden_state`); rows past an input's length are zero.
    pub states: Vec<f32>,
    /// `[batch, max_len]` input ids, padded with the model's `pad_token_id`.
    pub input_ids: Vec<u32>,
    /// Each input's number of tokens.
    pub lengths: Vec<usize>,
    pub max_len: usize,
    pub d_model: usize,
}

impl EncodedBatch {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Input `i`'s own rows, `[lengths[i], d_model]`.
    pub fn states_of(&self, i: usize) -> &[f32] {
        let start = i * self.max_len * self.d_model;
        &self.states[start..start + self.lengths[i] * self.d_model]
    }

    /// Input `i`'s ids, without padding.
    pub fn ids_of(&self, i: usize) -> &[u32] {
        &self.input_ids[i * self.max_len..i * self.max_len + self.lengths[i]]
    }

    /// `[batch, max_len]`: 1 at an input's tokens, 0 at padding (HF's
    /// `attention_mask`).
    pub fn attention_mask(&self) -> Vec<u8> {
        self.lengths
            .iter()
            .flat_map(|&n| (0..self.max_len).map(move |j| (j < n) as u8))
            .collect()
    }

    /// Writes a safetensors file: `last_hidden_state` F32 `[batch, max_len,
    /// d_model]`, `attention_mask` and `input_ids` I64 `[batch, max_len]`
    /// (torch's dtype for both). Atomic; an existing file is kept unless
    /// `force`.
    pub fn write_safetensors(&self, path: &Path, force: bool) -> Result<()> {
        let (b, t) = (self.len(), self.max_len);
        let i64s = |v: &mut dyn Iterator<Item = i64>| -> Vec<u8> {
            v.flat_map(|x| x.to_le_bytes()).collect()
        };
        let tensors = [
            OutTensor::f32("last_hidden_state", vec![b, t, self.d_model], &self.states),
            OutTensor {
                name: "attention_mask".into(),
                dtype: DType::I64,
                shape: vec![b, t],
                data: i64s(&mut self.attention_mask().into_iter().map(i64::from)),
            },
            OutTensor {
                name: "input_ids".into(),
                dtype: DType::I64,
                shape: vec![b, t],
                data: i64s(&mut self.input_ids.iter().map(|&x| x as i64)),
            },
        ];
        let meta = [("format".to_string(), "pt".to_string())].into();
        writer::write_safetensors(path, &tensors, &meta, force)
    }

    /// Writes the states alone as a NumPy `.npy` file (`<f4`, shape `(batch,
    /// max_len, d_model)`, C order): `np.load` gives the array directly. A
    /// `.npy` holds one array, so the mask is not in it; padding rows are
    /// zero, and the safetensors output carries the mask and the ids.
    pub fn write_npy(&self, path: &Path, force: bool) -> Result<()> {
        let header = npy_header(&[self.len(), self.max_len, self.d_model]);
        writer::write_atomic(path, force, |w| {
            w.write_all(&header)?;
            for chunk in self.states.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Ok(())
        })
    }

    /// Writes to `path` in the format its extension names: `.safetensors`
    /// or `.npy`.
    pub fn write(&self, path: &Path, force: bool) -> Result<()> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => self.write_safetensors(path, force),
            Some("npy") => self.write_npy(path, force),
            _ => Err(Error::Request(format!(
                "{}: the output format is named by the extension: .safetensors (states, mask and ids) or .npy (states)",
                path.display()
            ))),
        }
    }
}

/// A version 1.0 `.npy` header for little-endian f32 of `shape`, padded so
/// the data starts 64-aligned as NumPy writes it.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + header length (2) + dict + '\n'.
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Encodes every input of `batch` (ragged lengths) and pads the states into
/// one array. Inputs go through the encoder packed, up to
/// [`TOKENS_PER_PASS`] tokens a pass; each input gets the rows it gets alone
/// up to the last bits of the f32 sums (a product's summation order may
/// depend on how many rows share the pass).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
/// # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
/// #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
/// # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
/// let model = t5edge::T5Model::load(dir.path())?;
/// let e = t5edge::encode::encode_padded(&model, &[&[37, 12, 1], &[5, 1]])?;
/// assert_eq!((e.len(), e.max_len, e.d_model), (2, 3, 64));
/// assert_eq!(e.attention_mask(), [1, 1, 1, 1, 1, 0]);
/// assert!(e.states[(3 + 2) * 64..].iter().all(|&v| v == 0.0), "padding is zero");
/// # Ok::<(), t5edge::Error>(())
/// ```
pub fn encode_padded(model: &T5Model, batch: &[&[u32]]) -> Result<EncodedBatch> {
    let d = model.config.d_model;
    for (i, ids) in batch.iter().enumerate() {
        if ids.is_empty() {
            return Err(Error::Request(format!("input {i} has no tokens")));
        }
        model
            .check_ids(ids)
            .map_err(|e| Error::Request(format!("input {i}: {}", request_msg(e))))?;
    }
    let lengths: Vec<usize> = batch.iter().map(|s| s.len()).collect();
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let mut states = vec![0.0f32; batch.len() * max_len * d];
    let mut input_ids = vec![model.config.pad_token_id; batch.len() * max_len];
    for (i, ids) in batch.iter().enumerate() {
        input_ids[i * max_len..i * max_len + ids.len()].copy_from_slice(ids);
    }
    for pass in passes(&lengths, TOKENS_PER_PASS) {
        let out = model.encode_batch(&batch[pass.clone()])?;
        for (i, rows) in pass.zip(out) {
            states[i * max_len * d..i * max_len * d + rows.len()].copy_from_slice(&rows);
        }
    }
    Ok(EncodedBatch {
        states,
        input_ids,
        lengths,
        max_len,
        d_model: d,
    })
}

/// The message of a request error, without the "invalid request: " its
/// display adds (for prefixing with where it happened).
pub(crate) fn request_msg(e: Error) -> String {
    match e {
        Error::Request(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stay_within_the_budget() {
        assert_eq!(passes(&[3, 3, 3], 6), [0..2, 2..3]);
        assert_eq!(passes(&[10, 1, 1], 6), [0..1, 1..3]);
        assert_eq!(passes(&[1, 10, 1], 6), [0..1, 1..2, 2..3]);
        assert!(passes(&[], 6).is_empty());
    }

    #[test]
    fn npy_header_is_numpy_s() {
        let h = npy_header(&[2, 3, 4]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let n = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(n + 10, h.len());
        let dict = std::str::from_utf8(&h[10..]).unwrap();
        assert!(dict.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }"));
        assert!(dict.ends_with('\n'));
    }
}
