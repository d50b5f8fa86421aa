//! Which weight matrices of a model are gathered into one buffer a stack
//! ([`crate::weights::gather`]), and in what order: the order a pass reads
//! them, so that it streams one run of huge pages.

use super::linear::{Linear, LinearWeight};
use super::{Decoder, Encoder, T5Model};
use crate::weights::gather::gather_floats;

impl T5Model {
    /// Gathers both stacks' matrices as [`encoder`] and [`decoder`] say:
    /// the last step of a load, once the weights are in the formats they
    /// will run in (a checkpoint converted at load is not copied first).
    pub(crate) fn gather_weights(&mut self) {
        encoder(&mut self.encoder);
        if let Some(d) = &mut self.decoder {
            decoder(d);
        }
    }
}

/// The encoder's linear layers, block by block.
fn encoder_layers(e: &mut Encoder) -> impl Iterator<Item = &mut Linear> {
    e.blocks.iter_mut().flat_map(|b| {
        let (a, f) = (&mut b.attn, &mut b.ffn);
        [&mut a.q, &mut a.k, &mut a.v, &mut a.o, &mut f.wi]
            .into_iter()
            .chain(f.wi_up.as_mut())
            .chain([&mut f.wo])
    })
}

/// The decoder's linear layers, block by block.
fn decoder_layers(d: &mut Decoder) -> impl Iterator<Item = &mut Linear> {
    d.blocks.iter_mut().flat_map(|b| {
        let (s, c, f) = (&mut b.self_attn, &mut b.cross_attn, &mut b.ffn);
        [&mut s.q, &mut s.k, &mut s.v, &mut s.o]
            .into_iter()
            .chain([&mut c.q, &mut c.k, &mut c.v, &mut c.o, &mut f.wi])
            .chain(f.wi_up.as_mut())
            .chain([&mut f.wo])
    })
}

/// The encoder's float matrices (f32, f16, bf16: a checkpoint's or
/// converted at load; f32 W3 ran 12% faster gathered). Its int8 matrices
/// quantized at load are in one buffer already, quantized into it
/// (`convert::convert_stack`); a quantized file's stay mapped: copied, a
/// tiny-nl2 decoder's ran W1 10% faster, but a fresh process paid 3-4 ms
/// more to start (fresh memory on these VMs), a tenth of the cold start
/// target (kernels/BENCH.md).
pub(super) fn encoder(e: &mut Encoder) {
    floats(encoder_layers(e));
}

/// The decoder's float matrices: every decode step reads them all (its
/// int8 ones as the encoder's).
pub(super) fn decoder(d: &mut Decoder) {
    floats(decoder_layers(d));
}

/// Gathers the float matrices among `layers`, each format into a buffer of
/// its own (a stack holds one format but for a mix a conversion left).
fn floats<'a>(layers: impl Iterator<Item = &'a mut Linear>) {
    let (mut f32s, mut f16s, mut bf16s) = (Vec::new(), Vec::new(), Vec::new());
    for l in layers {
        match &mut l.weight {
            LinearWeight::F32(w) => f32s.push(w),
            LinearWeight::F16(w) => f16s.push(w),
            LinearWeight::Bf16(w) => bf16s.push(w),
            _ => {}
        }
    }
    gather_floats(f32s);
    gather_floats(f16s);
    gather_floats(bf16s);
}
