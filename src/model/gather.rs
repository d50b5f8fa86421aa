//! Which int8 matrices of a model are gathered into one buffer a stack
//! ([`crate::weights::gather`]), and in what order: the order a pass reads
//! them, so that a step streams one run of memory.

use super::linear::{Linear, LinearWeight};
use super::{Decoder, Encoder};
use crate::weights::gather::gather;
use crate::weights::{Int8Data, W8A16Data};

/// The encoder's int8 matrices quantized at load, block by block. Those
/// of a quantized file stay mapped: a pass reads each once for all its
/// rows, and W3 ran level with them gathered (kernels/BENCH.md), so the
/// copy would cost load time and memory for nothing.
pub(super) fn encoder(e: &mut Encoder) {
    let layers = e.blocks.iter_mut().flat_map(|b| {
        let (a, f) = (&mut b.attn, &mut b.ffn);
        [&mut a.q, &mut a.k, &mut a.v, &mut a.o, &mut f.wi]
            .into_iter()
            .chain(f.wi_up.as_mut())
            .chain([&mut f.wo])
    });
    gather(int8_of(layers), false);
}

/// The decoder's int8 matrices, block by block, a quantized file's too:
/// every decode step reads them all.
pub(super) fn decoder(d: &mut Decoder) {
    let layers = d.blocks.iter_mut().flat_map(|b| {
        let (s, c, f) = (&mut b.self_attn, &mut b.cross_attn, &mut b.ffn);
        [&mut s.q, &mut s.k, &mut s.v, &mut s.o]
            .into_iter()
            .chain([&mut c.q, &mut c.k, &mut c.v, &mut c.o, &mut f.wi])
            .chain(f.wi_up.as_mut())
            .chain([&mut f.wo])
    });
    gather(int8_of(layers), true);
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
