//! A linear layer `y = x · wᵀ` over whichever weight format the checkpoint holds.

use super::scratch::sized;
use crate::weights::gather::FloatWeights;
use crate::weights::{Backing, Bf16Data, F16Data, F32Data, Int8Data, W8A16Data};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use t5edge_kernels as k;
use t5edge_kernels::int8::{PackedInt8, Source};
use t5edge_kernels::ops;

/// Whether bf16 layers may run prefill with the activations rounded to bf16
/// (AMX-BF16 tiles or `vdpbf16ps`, where the CPU has them):
/// `T5EDGE_BF16_DOT=1`
/// ([`crate::runtime`]). Off by default, so a bf16 checkpoint computes in
/// f32 and gives the same numbers on every CPU (`kernels::bf16` docs).
static BF16_DOT: AtomicBool = AtomicBool::new(false);

/// Sets what `BF16_DOT` says, for the whole process.
pub fn set_bf16_dot(on: bool) {
    BF16_DOT.store(on, Ordering::Relaxed);
}

/// Weight storage formats a linear layer can run from.
#[derive(Clone)]
pub enum LinearWeight {
    F32(F32Data),
    /// Half-precision storage, widened in registers, f32 accumulation.
    F16(F16Data),
    /// bfloat16 storage (mapped straight from a bf16 checkpoint), widened in
    /// registers, f32 accumulation.
    Bf16(Bf16Data),
    /// Symmetric int8 in the kernels' packed layout, dynamic int8 activations.
    Int8(Int8Data),
    /// The same int8 weights with dynamic 16-bit activations (W8A16,
    /// `kernels::int8::Activations::Int16`): what `--dtype int8` gives the
    /// FFN output projection, whose inputs carry outliers.
    Int8A16(W8A16Data),
}

/// A weight format name, as `--dtype` and the quantized file header spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    Int8,
    /// int8 weights, 16-bit activations: a layer format of the int8 policy
    /// (its FFN output projection), not a `--dtype`, so `parse` does not
    /// take it.
    Int8A16,
}

impl WeightFormat {
    pub fn parse(s: &str) -> Option<WeightFormat> {
        match s {
            "f32" | "fp32" => Some(WeightFormat::F32),
            "f16" | "fp16" => Some(WeightFormat::F16),
            "bf16" => Some(WeightFormat::Bf16),
            "int8" | "i8" => Some(WeightFormat::Int8),
            _ => None,
        }
    }

    /// Bytes per weight (int8: the data alone; scales and sums add ~1/k).
    pub fn bytes_per_weight(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 | WeightFormat::Bf16 => 2,
            WeightFormat::Int8 | WeightFormat::Int8A16 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Int8 => "int8",
            WeightFormat::Int8A16 => "w8a16",
        }
    }
}

/// Whether a product's rows may round differently with the number of rows
/// (`Free`: the fastest kernel for the shape, e.g. a GEMM for prefill) or
/// must each give the bits they give alone (`Invariant`: what a decode step
/// runs, so that a request's tokens do not depend on what shares its batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    Free,
    Invariant,
}

#[derive(Clone)]
pub struct Linear {
    /// Output features (rows of the weight).
    pub n: usize,
    /// Input features.
    pub k: usize,
    pub weight: LinearWeight,
}

impl Linear {
    pub fn f32(n: usize, k: usize, w: F32Data) -> Linear {
        debug_assert_eq!(w.as_slice().len(), n * k);
        Linear {
            n,
            k,
            weight: LinearWeight::F32(w),
        }
    }

    pub fn format(&self) -> WeightFormat {
        match self.weight {
            LinearWeight::F32(_) => WeightFormat::F32,
            LinearWeight::F16(_) => WeightFormat::F16,
            LinearWeight::Bf16(_) => WeightFormat::Bf16,
            LinearWeight::Int8(_) => WeightFormat::Int8,
            LinearWeight::Int8A16(_) => WeightFormat::Int8A16,
        }
    }

    /// The same layer in another format. `group_size` applies to int8 (0 =
    /// one scale per row). Float targets start from the weights widened to
    /// f32; int8 ones quantize a row at a time from the layer's own format
    /// ([`Linear::with_source`]).
    pub fn convert(&self, to: WeightFormat, group_size: usize) -> Result<Linear, String> {
        if to == self.format() {
            return Ok(self.clone());
        }
        let weight = match to {
            WeightFormat::F32 => LinearWeight::F32(self.to_f32().into_owned().into()),
            WeightFormat::F16 => LinearWeight::F16(
                self.to_f32()
                    .iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            WeightFormat::Bf16 => LinearWeight::Bf16(
                self.to_f32()
                    .iter()
                    .map(|&v| half::bf16::from_f32(v))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            WeightFormat::Int8 => LinearWeight::Int8(Int8Data::Owned(Arc::new(
                self.with_source(|w| PackedInt8::quantize(w, self.n, self.k, group_size))?,
            ))),
            WeightFormat::Int8A16 => {
                let (p, t) =
                    self.with_source(|w| PackedInt8::quantize_a16(w, self.n, self.k, group_size))?;
                LinearWeight::Int8A16(W8A16Data {
                    w: Int8Data::Owned(Arc::new(p)),
                    in_scales: t.into(),
                })
            }
        };
        Ok(Linear {
            n: self.n,
            k: self.k,
            weight,
        })
    }

    /// The mapped file bytes this layer's float weights are a view of (none
    /// for int8 weights and for owned or gathered copies).
    pub(crate) fn file_bytes(&self) -> Option<(&Arc<Backing>, std::ops::Range<usize>)> {
        match &self.weight {
            LinearWeight::F32(w) => w.in_file(),
            LinearWeight::F16(w) => w.in_file(),
            LinearWeight::Bf16(w) => w.in_file(),
            LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => None,
        }
    }

    /// The backing this layer's float weights are a view of, a file's (mapped
    /// or read) or a gathered buffer; `None` for owned copies and int8.
    pub(crate) fn file_view(&self) -> Option<&Backing> {
        match &self.weight {
            LinearWeight::F32(F32Data::Mapped { backing, .. })
            | LinearWeight::F16(F16Data::Mapped { backing, .. })
            | LinearWeight::Bf16(Bf16Data::Mapped { backing, .. }) => Some(backing),
            _ => None,
        }
    }

    /// Float weights that are a view of a buffer copied into memory of their
    /// own (int8 ones are left as they are).
    pub(crate) fn own(&mut self) {
        match &mut self.weight {
            LinearWeight::F32(w) => *w = w.as_slice().to_vec().into(),
            LinearWeight::F16(w) => *w = w.as_slice().to_vec().into(),
            LinearWeight::Bf16(w) => *w = w.as_slice().to_vec().into(),
            LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => {}
        }
    }

    /// For int8 weights, whether their packed data starts on a 64-byte line
    /// (as every matrix quantized in memory and every one `quantize` writes
    /// at real shapes does; `quantized::int8_off_lines`); `None` for others.
    pub fn int8_on_lines(&self) -> Option<bool> {
        match &self.weight {
            LinearWeight::Int8(w) | LinearWeight::Int8A16(W8A16Data { w, .. }) => Some(
                t5edge_kernels::aligned::is_aligned(w.view().data().as_ptr()),
            ),
            _ => None,
        }
    }

    /// Whether the weights are a view of a mapped file (no copy of their own).
    pub fn is_mapped(&self) -> bool {
        match &self.weight {
            LinearWeight::F32(w) => w.is_mapped(),
            LinearWeight::F16(w) => w.is_mapped(),
            LinearWeight::Bf16(w) => w.is_mapped(),
            LinearWeight::Int8(w) | LinearWeight::Int8A16(W8A16Data { w, .. }) => {
                matches!(w, Int8Data::Mapped(m) if m.backing.is_file())
            }
        }
    }

    /// The weights as f32 `[n, k]` (dequantized for int8): f32 weights (a
    /// mapped checkpoint, the usual source) borrowed in place, others widened
    /// into a copy. Copying a model's f32 weights before converting them was a
    /// twentieth of its load.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match &self.weight {
            LinearWeight::F32(w) => Cow::Borrowed(w.as_slice()),
            LinearWeight::F16(w) => w.as_slice().iter().map(|v| v.to_f32()).collect(),
            LinearWeight::Bf16(w) => w.as_slice().iter().map(|v| v.to_f32()).collect(),
            LinearWeight::Int8(w) => {
                let v = w.view();
                (0..self.n).flat_map(|j| v.dequantize_row(j)).collect()
            }
            LinearWeight::Int8A16(w) => {
                let mut out = vec![0.0; self.n * self.k];
                for (j, row) in out.chunks_exact_mut(self.k).enumerate() {
                    w.dequantize_row_into(j, row);
                }
                out.into()
            }
        }
    }

    /// Runs `f` on the float weights a quantizer reads: the layer's own f32,
    /// f16 or bf16 (widened a row at a time by the quantizer, never as a
    /// whole f32 copy), or an int8 layer's dequantized.
    pub(crate) fn with_source<R>(&self, f: impl FnOnce(&dyn Source) -> R) -> R {
        match &self.weight {
            LinearWeight::F32(w) => f(&w.as_slice()),
            LinearWeight::F16(w) => f(&w.as_slice()),
            LinearWeight::Bf16(w) => f(&w.as_slice()),
            LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => f(&&*self.to_f32()),
        }
    }

    /// `y[m, n] = x[m, k] · wᵀ`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.forward_rows(x, m, y, Rows::Free)
    }

    /// [`Linear::forward`], with `rows` saying whether each row's bits must be
    /// those it gets alone.
    pub fn forward_rows(&self, x: &[f32], m: usize, y: &mut [f32], rows: Rows) {
        let inv = rows == Rows::Invariant;
        match &self.weight {
            LinearWeight::F32(w) if inv => {
                k::f32::linear_invariant(x, m, self.k, w.as_slice(), self.n, y)
            }
            LinearWeight::F32(w) => k::f32::linear(x, m, self.k, w.as_slice(), self.n, y),
            LinearWeight::F16(w) if inv => {
                k::f16::linear_invariant(x, m, self.k, w.as_slice(), self.n, y)
            }
            LinearWeight::F16(w) => k::f16::linear(x, m, self.k, w.as_slice(), self.n, y),
            LinearWeight::Bf16(w) if inv => {
                k::bf16::linear_invariant(x, m, self.k, w.as_slice(), self.n, y)
            }
            LinearWeight::Bf16(w) if BF16_DOT.load(Ordering::Relaxed) => {
                k::bf16::linear_dot(x, m, self.k, w.as_slice(), self.n, y)
            }
            LinearWeight::Bf16(w) => k::bf16::linear(x, m, self.k, w.as_slice(), self.n, y),
            // Per-row activation scales and exact integer dot products: a
            // row's bits never depend on the others (kernels/src/int8).
            LinearWeight::Int8(w) => k::int8::linear(x, m, self.k, &w.view(), y),
            LinearWeight::Int8A16(w) => {
                let t = w.in_scales.as_slice();
                k::int8::linear_a16(x, m, self.k, &w.w.view(), t, y)
            }
        }
    }

    /// `y[m, n] += x[m, k] · wᵀ` (a residual add): the bits of
    /// [`Linear::forward_rows`] into `tmp` followed by `y += tmp`. Int8 and
    /// W8A16 weights add in the product's epilogue instead, leaving `tmp`
    /// alone.
    pub fn forward_rows_add(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        rows: Rows,
        tmp: &mut Vec<f32>,
    ) {
        // The int8 kernels' rows never depend on their neighbours, so
        // `rows` asks nothing more of them.
        match &self.weight {
            LinearWeight::Int8(w) => k::int8::linear_add(x, m, self.k, &w.view(), y),
            LinearWeight::Int8A16(w) => {
                let t = w.in_scales.as_slice();
                k::int8::linear_a16_add(x, m, self.k, &w.w.view(), t, y)
            }
            _ => {
                let t = sized(tmp, m * self.n);
                self.forward_rows(x, m, t, rows);
                ops::add_inplace(y, t);
            }
        }
    }

    /// `y[m, n] = relu(x[m, k] · wᵀ)`: the bits of [`Linear::forward_rows`]
    /// followed by a ReLU, which int8 weights take in the product's
    /// epilogue.
    pub fn forward_rows_relu(&self, x: &[f32], m: usize, y: &mut [f32], rows: Rows) {
        match &self.weight {
            LinearWeight::Int8(w) => k::int8::linear_relu(x, m, self.k, &w.view(), y),
            _ => {
                self.forward_rows(x, m, y, rows);
                ops::activate_inplace(ops::Activation::Relu, y);
            }
        }
    }

    /// `yq, yk, yv = x · qᵀ, x · kᵀ, x · vᵀ`: when all three are int8 with
    /// one group size they share one quantisation of `x`; otherwise they run
    /// one by one. The same bits as three [`Linear::forward`] calls, and no
    /// allocation (a decode step calls it).
    pub fn forward_qkv(
        x: &[f32],
        m: usize,
        rows: Rows,
        (q, yq): (&Linear, &mut [f32]),
        (k, yk): (&Linear, &mut [f32]),
        (v, yv): (&Linear, &mut [f32]),
    ) {
        fn int8(l: &Linear) -> Option<k::int8::Int8View<'_>> {
            match &l.weight {
                LinearWeight::Int8(w) => Some(w.view()),
                _ => None,
            }
        }
        if let (Some(wq), Some(wk), Some(wv)) = (int8(q), int8(k), int8(v)) {
            let gs = wq.group_size();
            if wk.group_size() == gs
                && wv.group_size() == gs
                && wk.k() == wq.k()
                && wv.k() == wq.k()
            {
                k::int8::linear_many(x, m, wq.k(), &[&wq, &wk, &wv], &mut [yq, yk, yv]);
                return;
            }
        }
        q.forward_rows(x, m, yq, rows);
        k.forward_rows(x, m, yk, rows);
        v.forward_rows(x, m, yv, rows);
    }
}
