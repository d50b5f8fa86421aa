//! Converting a loaded model's linear layers to another weight format, per a
//! policy that says which layers may go to int8.

use super::gather;
use super::linear::{Linear, WeightFormat};
use super::T5Model;
use crate::error::{Error, Result};

/// Which format each kind of layer gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatPolicy {
    /// Attention projections and the FFN input projections.
    pub body: WeightFormat,
    /// The FFN output projection `wo`, the layer T5 is known to be fragile in
    /// (its inputs are large and spiky; HF keeps it in fp32 under fp16).
    pub ffn_out: WeightFormat,
    pub lm_head: WeightFormat,
    /// int8 scale group along K (0 = one scale per output row).
    pub group_size: usize,
}

impl FormatPolicy {
    /// What `--dtype NAME` means.
    pub fn for_dtype(f: WeightFormat) -> FormatPolicy {
        let ffn_out = match f {
            // `wo`'s inputs carry outliers an int8 row scale flattens
            // (docs/QUANTIZATION.md): int8 weights, 16-bit activations.
            WeightFormat::Int8 => WeightFormat::Int8A16,
            other => other,
        };
        FormatPolicy {
            body: f,
            ffn_out,
            lm_head: f,
            group_size: 0,
        }
    }

    pub fn all(f: WeightFormat) -> FormatPolicy {
        FormatPolicy {
            body: f,
            ffn_out: f,
            lm_head: f,
            group_size: 0,
        }
    }
}

/// Bytes a layer of `n x k` weights takes in `f` (int8: data, scales, sums).
fn layer_bytes(l: &Linear, f: WeightFormat) -> u64 {
    let w = (l.n * l.k) as u64;
    match f {
        WeightFormat::Int8 | WeightFormat::Int8A16 => w + 12 * l.n as u64,
        other => w * other.bytes_per_weight() as u64,
    }
}

fn conv(l: &mut Linear, to: WeightFormat, group: usize, what: &str) -> Result<()> {
    *l = l
        .convert(to, group)
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    Ok(())
}

impl T5Model {
    /// Every linear layer with the format `policy` gives it, and its name.
    fn layers_with_formats(&self, policy: FormatPolicy) -> Vec<(&Linear, WeightFormat)> {
        let mut out = Vec::new();
        for b in &self.encoder.blocks {
            for l in [&b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ffn.wi] {
                out.push((l, policy.body));
            }
            if let Some(up) = &b.ffn.wi_up {
                out.push((up, policy.body));
            }
            out.push((&b.ffn.wo, policy.ffn_out));
        }
        for b in self.decoder.iter().flat_map(|d| &d.blocks) {
            for a in [&b.self_attn, &b.cross_attn] {
                for l in [&a.q, &a.k, &a.v, &a.o] {
                    out.push((l, policy.body));
                }
            }
            out.push((&b.ffn.wi, policy.body));
            if let Some(up) = &b.ffn.wi_up {
                out.push((up, policy.body));
            }
            out.push((&b.ffn.wo, policy.ffn_out));
        }
        if let Some(head) = &self.lm_head {
            out.push((&head.linear, policy.lm_head));
        }
        out
    }

    /// Refuses a conversion the machine has no memory for, before any of it
    /// runs: the converted layers are new allocations (the mapped originals
    /// are page cache, which the kernel can reclaim), plus the widest layer's
    /// f32 copy that a conversion passes through. Says what it needs.
    pub fn check_convert_fits(&self, dir: &std::path::Path, policy: FormatPolicy) -> Result<()> {
        let mut needed = 0u64;
        let mut widest = 0u64;
        for (l, f) in self.layers_with_formats(policy) {
            if l.format() != f {
                needed += layer_bytes(l, f);
                widest = widest.max((l.n * l.k * 4) as u64);
            }
        }
        if needed == 0 {
            return Ok(());
        }
        crate::memory::check_fits(
            dir,
            &format!(
                "converting the weights to {} at load ({} converted, {} working copy)",
                policy.body.name(),
                crate::memory::gb(needed),
                crate::memory::gb(widest)
            ),
            needed + widest,
            "run it in the stored format (no --dtype), or convert it once with `t5edge quantize` (streams one tensor at a time) and load the result",
        )
    }

    /// Converts every linear layer as `policy` says (in place, from the current
    /// weights; the embedding lookup keeps its table). The int8 matrices it
    /// makes are gathered into one buffer per stack ([`gather`]).
    pub fn convert(&mut self, policy: FormatPolicy) -> Result<()> {
        let g = policy.group_size;
        for (i, b) in self.encoder.blocks.iter_mut().enumerate() {
            let what = format!("encoder block {i} attention");
            convert_attention(&mut b.attn, policy, &what, true)?;
            convert_ffn(&mut b.ffn, policy, &format!("encoder block {i}"))?;
        }
        gather::encoder(&mut self.encoder);
        if let Some(d) = &mut self.decoder {
            convert_decoder(d, policy)?;
        }
        if let Some(head) = &mut self.lm_head {
            conv(&mut head.linear, policy.lm_head, g, "lm_head")?;
            // The screen (built lazily) belongs to the old weights.
            head.screen = Default::default();
        }
        Ok(())
    }
}

/// Converts every linear layer of `decoder` as `policy` says (`policy.body`
/// and `policy.ffn_out`): the model's own ([`T5Model::convert`]). The int8
/// matrices it makes are gathered into one buffer, in the order a step
/// reads them ([`gather`]).
pub(super) fn convert_decoder(decoder: &mut super::Decoder, policy: FormatPolicy) -> Result<()> {
    convert_decoder_layers(decoder, policy, true)
}

/// [`convert_decoder`] for `--exact`'s int8 draft
/// ([`super::T5Model::draft`], made by
/// [`super::T5Model::enable_certified_head`]), which takes its
/// cross-attention keys and values from the full-precision decoder's cache:
/// its cross-attention K and V projections never run, so they stay the
/// shared full-precision ones rather than being quantized for nothing.
pub(super) fn convert_draft(decoder: &mut super::Decoder, policy: FormatPolicy) -> Result<()> {
    convert_decoder_layers(decoder, policy, false)
}

fn convert_decoder_layers(
    decoder: &mut super::Decoder,
    policy: FormatPolicy,
    cross_kv: bool,
) -> Result<()> {
    for (i, b) in decoder.blocks.iter_mut().enumerate() {
        let what = format!("decoder block {i} attention");
        convert_attention(&mut b.self_attn, policy, &what, true)?;
        let what = format!("decoder block {i} cross-attention");
        convert_attention(&mut b.cross_attn, policy, &what, cross_kv)?;
        convert_ffn(&mut b.ffn, policy, &format!("decoder block {i}"))?;
    }
    gather::decoder(decoder);
    Ok(())
}

/// Converts an attention layer's projections to `policy.body` (K and V only
/// with `kv`); errors name the projection after `what`.
fn convert_attention(
    a: &mut super::attention::AttentionWeights,
    policy: FormatPolicy,
    what: &str,
    kv: bool,
) -> Result<()> {
    let g = policy.group_size;
    for (name, l) in [
        ("q", &mut a.q),
        ("k", &mut a.k),
        ("v", &mut a.v),
        ("o", &mut a.o),
    ] {
        if kv || !matches!(name, "k" | "v") {
            conv(l, policy.body, g, &format!("{what} {name}"))?;
        }
    }
    Ok(())
}

/// Converts a feed-forward block as `policy` says (`wo` gets
/// `policy.ffn_out`); errors name the layer after `block`.
fn convert_ffn(ffn: &mut super::ffn::FeedForward, policy: FormatPolicy, block: &str) -> Result<()> {
    let g = policy.group_size;
    conv(&mut ffn.wi, policy.body, g, &format!("{block} wi"))?;
    if let Some(up) = &mut ffn.wi_up {
        conv(up, policy.body, g, &format!("{block} wi_1"))?;
    }
    conv(&mut ffn.wo, policy.ffn_out, g, &format!("{block} wo"))
}
