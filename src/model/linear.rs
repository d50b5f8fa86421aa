//! A linear layer `y = x · wᵀ` over whichever weight format the checkpoint holds.

use crate::weights::{F16Data, F32Data};
use t5edge_kernels as k;

/// Weight storage formats a linear layer can run from.
#[derive(Clone)]
pub enum LinearWeight {
    F32(F32Data),
    F16(F16Data),
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

    /// `y[m, n] = x[m, k] · wᵀ`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        match &self.weight {
            LinearWeight::F32(w) => k::f32::linear(x, m, self.k, w.as_slice(), self.n, y),
            LinearWeight::F16(w) => {
                // Until the f16 kernel lands: widen row by row (correct, slow).
                let w32: Vec<f32> = w.as_slice().iter().map(|v| v.to_f32()).collect();
                k::f32::linear(x, m, self.k, &w32, self.n, y)
            }
        }
    }

    /// Allocating convenience for `forward`.
    pub fn apply(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * self.n];
        self.forward(x, m, &mut y);
        y
    }

    /// Bytes of weight data this layer reads per call.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            LinearWeight::F32(_) => self.n * self.k * 4,
            LinearWeight::F16(_) => self.n * self.k * 2,
        }
    }
}
