//! bf16 and f16 checkpoints run straight from the mapped file: every linear
//! layer is a view of the map (a copy only where the file misaligns it), the
//! default `--dtype` is the stored one, conversions and `quantize` start from
//! them, and a load the machine has no memory for is refused up front. The
//! numbers themselves are checked against HF in tests/synth_refs.rs (the
//! `gated-bf16` case).

mod support;

use std::collections::BTreeMap;
use support::*;
use t5edge::model::{LoadSpec, WeightFormat};
use t5edge::quantize::{quantize, QuantizeOptions};
use t5edge::synth::{tensors, write_checkpoint, SynthOptions};
use t5edge::weights::writer::{serialize, OutTensor};
use t5edge::weights::DType;
use t5edge::T5Model;

fn half_checkpoint(tag: &str, dtype: WeightFormat) -> TempDir {
    let d = TempDir::new(tag);
    write_checkpoint(
        d.path(),
        &tiny_config(),
        &SynthOptions {
            seed: 7,
            norm_jitter: 0.1,
            dtype: Some(dtype),
            ..Default::default()
        },
        true,
    )
    .unwrap();
    d
}

fn linears(m: &T5Model) -> Vec<&t5edge::model::Linear> {
    let mut v = vec![&m.embed, &m.lm_head.as_ref().unwrap().linear];
    for b in &m.encoder.blocks {
        v.extend([
            &b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ffn.wi, &b.ffn.wo,
        ]);
    }
    for b in &m.decoder.as_ref().unwrap().blocks {
        v.extend([&b.self_attn.q, &b.cross_attn.v, &b.ffn.wi, &b.ffn.wo]);
    }
    v
}

const IDS: [u32; 6] = [17, 42, 99, 3, 250, 1];

#[test]
fn half_checkpoints_are_views_of_the_map_in_their_stored_format() {
    for dtype in [WeightFormat::Bf16, WeightFormat::F16] {
        let d = half_checkpoint("halfmap", dtype);
        let m = T5Model::load(d.path()).unwrap();
        // The embedding and the head are views of the map; the stacks'
        // matrices, smaller than a huge page, are gathered onto huge pages
        // (a copy, weights/gather.rs), in the stored format all the same.
        let all = linears(&m);
        let (tables, stacks) = all.split_at(2);
        for l in tables {
            assert_eq!(l.format(), dtype);
            assert!(l.is_mapped(), "{} table copied", dtype.name());
        }
        for l in stacks {
            assert_eq!(l.format(), dtype);
            assert!(!l.is_mapped(), "{} stack layer not gathered", dtype.name());
        }
        // --dtype f32 widens (exactly) and then sums in f32 as the stored
        // format does, in another order: the same states to f32 rounding.
        let f = T5Model::load_spec(
            d.path(),
            &LoadSpec {
                dtype: Some(WeightFormat::F32),
                ..Default::default()
            },
        )
        .unwrap();
        // (The embedding table is looked up, never multiplied: it stays as stored.)
        assert!(linears(&f)[1..]
            .iter()
            .all(|l| l.format() == WeightFormat::F32));
        let (a, b) = (m.encode(&IDS).unwrap(), f.encode(&IDS).unwrap());
        let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(err <= 1e-5 * scale, "{}: {err} of {scale}", dtype.name());
    }
}

/// safetensors aligns nothing: a one-byte tensor first shifts every later
/// one to an odd address. Those layers are copied (and still bf16), with
/// the same results bit for bit.
#[test]
fn misaligned_bf16_tensors_are_copied() {
    let opts = SynthOptions {
        seed: 7,
        norm_jitter: 0.1,
        dtype: Some(WeightFormat::Bf16),
        ..Default::default()
    };
    let d = half_checkpoint("bfaligned", WeightFormat::Bf16);
    let mut ts = vec![OutTensor {
        name: "a_misaligning_byte".into(),
        dtype: DType::U8,
        shape: vec![1],
        data: vec![0],
    }];
    ts.extend(tensors(&tiny_config(), &opts));
    let odd = TempDir::new("bfodd");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(d.join(f), odd.join(f)).unwrap();
    }
    std::fs::write(
        odd.join("model.safetensors"),
        serialize(&ts, &BTreeMap::new()),
    )
    .unwrap();
    let (a, b) = (
        T5Model::load(d.path()).unwrap(),
        T5Model::load(odd.path()).unwrap(),
    );
    for l in linears(&b) {
        assert_eq!(l.format(), WeightFormat::Bf16);
        assert!(!l.is_mapped());
    }
    assert_eq!(a.encode(&IDS).unwrap(), b.encode(&IDS).unwrap());
}

#[test]
fn quantize_reads_bf16_checkpoints() {
    let d = half_checkpoint("bfq", WeightFormat::Bf16);
    let out = TempDir::new("bfqout");
    quantize(
        d.path(),
        &out.join("q"),
        QuantizeOptions::new(WeightFormat::Int8, 0),
        false,
        |_, _, _| {},
    )
    .unwrap();
    let q = T5Model::load(&out.join("q")).unwrap();
    assert_eq!(
        q.lm_head.as_ref().unwrap().linear.format(),
        WeightFormat::Int8
    );
    // The same packing as converting the bf16 model at load.
    let conv = T5Model::load_spec(
        d.path(),
        &LoadSpec {
            dtype: Some(WeightFormat::Int8),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        q.encoder.blocks[0].attn.q.to_f32(),
        conv.encoder.blocks[0].attn.q.to_f32()
    );
}

#[test]
fn a_load_larger_than_memory_says_what_it_needs() {
    if t5edge::memory::available_bytes().is_none() {
        eprintln!("skipped: this platform does not report available memory");
        return;
    }
    let e = t5edge::memory::check_fits(
        std::path::Path::new("big-model"),
        "reading the file into memory",
        u64::MAX / 2,
        "map it instead",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("big-model: reading the file into memory needs ")
            && e.contains("GB of memory but only")
            && e.ends_with("map it instead"),
        "{e}"
    );
}
