//! Fused T5 attention: `softmax(q kᵀ + bias + mask) v` per head, with a streaming
//! (online) softmax so no score matrix is ever materialised.
//!
//! T5 does not scale scores by 1/sqrt(d_kv): its initialisation folds that in.
//! The relative-position bias depends only on `j - i`, so callers pass one row per
//! head covering every distance that occurs ([`RelBias`]), O(heads · (tq + tk))
//! memory instead of O(heads · tq · tk).

/// Relative-position bias: `bias(h, i, j) = values[h * span + (j - i + offset)]`.
#[derive(Clone, Copy, Debug)]
pub struct RelBias<'a> {
    pub values: &'a [f32],
    pub span: usize,
    pub offset: isize,
}

impl RelBias<'_> {
    #[inline]
    pub fn get(&self, h: usize, i: usize, j: usize) -> f32 {
        let idx = j as isize - i as isize + self.offset;
        debug_assert!(idx >= 0 && (idx as usize) < self.span);
        self.values[h * self.span + idx as usize]
    }
}

/// One attention call. `q` is `[tq, heads * d_kv]`, `k` and `v` are
/// `[tk, heads * d_kv]`, `out` is `[tq, heads * d_kv]`, all row-major.
pub struct Attention<'a> {
    pub heads: usize,
    pub d_kv: usize,
    pub tq: usize,
    pub tk: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub bias: Option<RelBias<'a>>,
    /// `key_mask[j] == false` hides key `j` from every query (padding).
    pub key_mask: Option<&'a [bool]>,
    /// `Some(off)`: query `i` sees keys `j <= i + off` only (decoder self-attention,
    /// where `off` is the number of cached positions before this call).
    pub causal: Option<usize>,
}

impl Attention<'_> {
    fn check(&self, out: &[f32]) {
        let inner = self.heads * self.d_kv;
        assert_eq!(self.q.len(), self.tq * inner, "attention: q shape");
        assert!(self.k.len() >= self.tk * inner, "attention: k shape");
        assert!(self.v.len() >= self.tk * inner, "attention: v shape");
        assert_eq!(out.len(), self.tq * inner, "attention: out shape");
        if let Some(m) = self.key_mask {
            assert!(m.len() >= self.tk, "attention: key mask shape");
        }
        if let Some(b) = self.bias {
            assert!(
                b.values.len() >= self.heads * b.span,
                "attention: bias shape"
            );
            if self.tq > 0 && self.tk > 0 {
                let lo = -(self.tq as isize - 1) + b.offset;
                let hi = self.tk as isize - 1 + b.offset;
                assert!(
                    lo >= 0 && (hi as usize) < b.span,
                    "attention: bias span too short"
                );
            }
        }
    }

    /// Runs the scalar online-softmax kernel, writing `out`.
    pub fn run(&self, out: &mut [f32]) {
        self.check(out);
        let inner = self.heads * self.d_kv;
        let d = self.d_kv;
        let mut acc = vec![0.0f32; d];
        for h in 0..self.heads {
            for i in 0..self.tq {
                let qi = &self.q[i * inner + h * d..i * inner + (h + 1) * d];
                let last = match self.causal {
                    Some(off) => (i + off + 1).min(self.tk),
                    None => self.tk,
                };
                let mut m = f32::NEG_INFINITY;
                let mut l = 0.0f32;
                acc.iter_mut().for_each(|a| *a = 0.0);
                for j in 0..last {
                    if let Some(mask) = self.key_mask {
                        if !mask[j] {
                            continue;
                        }
                    }
                    let kj = &self.k[j * inner + h * d..j * inner + (h + 1) * d];
                    let mut s: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                    if let Some(b) = &self.bias {
                        s += b.get(h, i, j);
                    }
                    let vj = &self.v[j * inner + h * d..j * inner + (h + 1) * d];
                    if s > m {
                        let c = (m - s).exp();
                        l = l * c + 1.0;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a = *a * c + vv;
                        }
                        m = s;
                    } else {
                        let p = (s - m).exp();
                        l += p;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a += p * vv;
                        }
                    }
                }
                let o = &mut out[i * inner + h * d..i * inner + (h + 1) * d];
                let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                for (ov, &a) in o.iter_mut().zip(&acc) {
                    *ov = a * inv;
                }
            }
        }
    }
}
