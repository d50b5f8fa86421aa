//! Converting a loaded model's linear layers to another weight format, per a
//! policy that says which layers may go to int8.

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
            // int8 `wo` measurably hurts (docs/QUANTIZATION.md); f16 keeps it.
            WeightFormat::Int8 => WeightFormat::F16,
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

fn conv(l: &mut Linear, to: WeightFormat, group: usize, what: &str) -> Result<()> {
    *l = l
        .convert(to, group)
        .map_err(|e| Error::Other(format!("{what}: {e}")))?;
    Ok(())
}

impl T5Model {
    /// Converts every linear layer as `policy` says (in place, from the current
    /// weights; the embedding lookup keeps its table).
    pub fn convert(&mut self, policy: FormatPolicy) -> Result<()> {
        let g = policy.group_size;
        for (i, b) in self.encoder.blocks.iter_mut().enumerate() {
            for (name, l) in [
                ("q", &mut b.attn.q),
                ("k", &mut b.attn.k),
                ("v", &mut b.attn.v),
                ("o", &mut b.attn.o),
            ] {
                conv(
                    l,
                    policy.body,
                    g,
                    &format!("encoder block {i} attention {name}"),
                )?;
            }
            conv(
                &mut b.ffn.wi,
                policy.body,
                g,
                &format!("encoder block {i} wi"),
            )?;
            if let Some(up) = &mut b.ffn.wi_up {
                conv(up, policy.body, g, &format!("encoder block {i} wi_1"))?;
            }
            conv(
                &mut b.ffn.wo,
                policy.ffn_out,
                g,
                &format!("encoder block {i} wo"),
            )?;
        }
        let blocks = self.decoder.iter_mut().flat_map(|d| d.blocks.iter_mut());
        for (i, b) in blocks.enumerate() {
            for a in [&mut b.self_attn, &mut b.cross_attn] {
                for l in [&mut a.q, &mut a.k, &mut a.v, &mut a.o] {
                    conv(l, policy.body, g, &format!("decoder block {i} attention"))?;
                }
            }
            conv(
                &mut b.ffn.wi,
                policy.body,
                g,
                &format!("decoder block {i} wi"),
            )?;
            if let Some(up) = &mut b.ffn.wi_up {
                conv(up, policy.body, g, &format!("decoder block {i} wi_1"))?;
            }
            conv(
                &mut b.ffn.wo,
                policy.ffn_out,
                g,
                &format!("decoder block {i} wo"),
            )?;
        }
        if let Some(head) = &mut self.lm_head {
            conv(&mut head.linear, policy.lm_head, g, "lm_head")?;
        }
        Ok(())
    }
}
