//! Which weight matrices of a model are gathered into one buffer a stack
//! ([`crate::weights::gather`]), and in what order: the order a pass reads
//! them, so that it streams one run of huge pages.

use super::linear::{Linear, LinearWeight};
use super::{Decoder, Encoder, T5Model};
use crate::weights::gather::{gather, gather_floats};
use crate::weights::{Int8Data, W8A16Data};

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

/// The encoder's matrices: int8 ones quantized at load, and float ones
/// (f32, f16, bf16: a checkpoint's or converted at load; f32 W3 ran 12%
/// faster gathered). A quantized file's int8 matrices stay mapped, here
/// and in the decoder ([`gather`] says why).
pub(super) fn encoder(e: &mut Encoder) {
    gather(int8_of(encoder_layers(e)));
    floats(encoder_layers(e));
}

/// The decoder's matrices, int8 quantized at load and float: every decode
/// step reads them all.
pub(super) fn decoder(d: &mut Decoder) {
    gather(int8_of(decoder_layers(d)));
    floats(decoder_layers(d));
}

/// The int8 matrices (W8A16's included) among `layers`, in their order.
fn int8_of<'a>(layers: impl Iterator<Item = &'a mut Linear>) -> Vec<&'a mut Int8Data> {
    layers
        .filter_map(|l| match &mut l.weight {
            LinearWeight::Int8(w) | LinearWeight::Int8A16(W8A16Data { w, .. }) => Some(w),
            _ => None,
        })
        .collect()
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
