//! T5's bucketed relative-position bias.
//!
//! Each stack's layer 0 holds a `[num_buckets, num_heads]` table; every layer of
//! the stack reuses the bias it gives (umT5: every self-attention layer has a
//! table of its own, `Stack::rel_bias`). The encoder buckets both directions; the
//! decoder only looks back, and its buckets are *unidirectional*: using the
//! bidirectional formula there (as candle does) gives the wrong bucket for every
//! distance and logits that drift from HF's as the sequence grows.

use t5edge_kernels::attention::RelBias;

/// HF's `_relative_position_bucket`, in the same f32 arithmetic so bucket
/// boundaries land where torch puts them. `rel = key_pos - query_pos`.
pub fn bucket(rel: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut nb = num_buckets as i64;
    let mut out = 0i64;
    let rp = if bidirectional {
        nb /= 2;
        if rel > 0 {
            out += nb;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let max_exact = nb / 2;
    if rp < max_exact {
        out += rp;
    } else {
        let ratio = (rp as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (nb - max_exact) as f32) as i64;
        out += large.min(nb - 1);
    }
    out as usize
}

/// The bias of one attention call, as the kernel wants it: for each head, one
/// value per relative distance that can occur between `tq` queries starting at
/// absolute position `past` and `tk` keys starting at 0.
pub struct PositionBias {
    pub values: Vec<f32>,
    pub span: usize,
    pub offset: isize,
}

impl PositionBias {
    /// No values yet: room for [`PositionBias::fill`].
    pub fn empty() -> PositionBias {
        PositionBias {
            values: Vec::new(),
            span: 0,
            offset: 0,
        }
    }

    /// Room for a bias `span` wide (allocates only if it is not there yet).
    pub fn reserve(&mut self, heads: usize, span: usize) {
        let want = heads * span;
        self.values.reserve(want.saturating_sub(self.values.len()));
    }

    /// `table` is a `[num_buckets, heads]` bias embedding (the stack's layer
    /// 0's, or the layer's own in umT5).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: &[f32],
        heads: usize,
        num_buckets: usize,
        max_distance: usize,
        bidirectional: bool,
        tq: usize,
        tk: usize,
        past: usize,
    ) -> PositionBias {
        let mut b = PositionBias::empty();
        b.fill(
            table,
            heads,
            num_buckets,
            max_distance,
            bidirectional,
            tq,
            tk,
            past,
        );
        b
    }

    /// [`PositionBias::new`] into this bias's storage, which it keeps: a
    /// decode loop refills the same one every step without allocating.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        table: &[f32],
        heads: usize,
        num_buckets: usize,
        max_distance: usize,
        bidirectional: bool,
        tq: usize,
        tk: usize,
        past: usize,
    ) {
        let span = tk + tq - 1;
        // values index = rel - rel_min, with rel_min = -(past + tq - 1).
        let rel_min = -((past + tq) as i64 - 1);
        self.values.resize(heads * span, 0.0);
        for idx in 0..span {
            let b = bucket(
                rel_min + idx as i64,
                bidirectional,
                num_buckets,
                max_distance,
            );
            for h in 0..heads {
                self.values[h * span + idx] = table[b * heads + h];
            }
        }
        self.span = span;
        self.offset = tq as isize - 1;
    }

    pub fn as_rel_bias(&self) -> RelBias<'_> {
        RelBias {
            values: &self.values,
            span: self.span,
            offset: self.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets from HF's formula worked by hand for 32 buckets, max distance 128.
    #[test]
    fn buckets_match_hf() {
        // bidirectional: 16 per side, 8 exact, then log-spaced up to 128.
        assert_eq!(bucket(0, true, 32, 128), 0);
        assert_eq!(bucket(-3, true, 32, 128), 3);
        assert_eq!(bucket(3, true, 32, 128), 19);
        assert_eq!(bucket(-8, true, 32, 128), 8);
        assert_eq!(bucket(-16, true, 32, 128), 10); // 8 + floor(ln2/ln16 * 8) = 8 + 2
        assert_eq!(bucket(-1000, true, 32, 128), 15);
        assert_eq!(bucket(1000, true, 32, 128), 31);
        // unidirectional: the future all maps to 0, 16 exact, then log-spaced.
        assert_eq!(bucket(5, false, 32, 128), 0);
        assert_eq!(bucket(-5, false, 32, 128), 5);
        assert_eq!(bucket(-15, false, 32, 128), 15);
        assert_eq!(bucket(-32, false, 32, 128), 21); // 16 + floor(ln2/ln8 * 16) = 16 + 5
        assert_eq!(bucket(-500, false, 32, 128), 31);
    }

    /// Every config `T5Config::validate` accepts keeps every bucket in the table.
    #[test]
    fn buckets_stay_in_range_for_valid_configs() {
        for nb in 4..=40usize {
            for md in [nb / 2 + 1, nb / 2 + 2, nb, 128, 100_000] {
                let mut cfg = crate::T5Config::from_json("{}").unwrap();
                cfg.relative_attention_num_buckets = nb;
                cfg.relative_attention_max_distance = md;
                assert!(cfg.validate().is_ok(), "nb {nb} md {md}");
                for rel in (-3000i64..3000)
                    .step_by(7)
                    .chain([i64::from(i32::MIN), 0, 1])
                {
                    for bi in [true, false] {
                        let b = bucket(rel, bi, nb, md);
                        assert!(b < nb, "nb {nb} md {md} rel {rel} bi {bi}: bucket {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn bias_rows_follow_relative_distance() {
        // heads = 1, table value = bucket index, so the bias shows the bucket.
        let table: Vec<f32> = (0..32).map(|b| b as f32).collect();
        let pb = PositionBias::new(&table, 1, 32, 128, false, 2, 7, 5);
        let rb = pb.as_rel_bias();
        // query 1 sits at absolute position 6; key 0 is 6 back.
        assert_eq!(rb.get(0, 1, 0), bucket(-6, false, 32, 128) as f32);
        assert_eq!(rb.get(0, 0, 5), 0.0);
    }
}
