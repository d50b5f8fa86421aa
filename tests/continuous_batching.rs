//! A decode batch that rows join and leave between steps (what `t5edge serve`
//! runs) gives every row the tokens the row gets alone through `generate`,
//! whatever joins or leaves around it, in every weight format, with the
//! certified head, and for sampling rows.

mod common;

use common::{decode_synth_model, varied_prompts as prompts};
use std::ops::ControlFlow;
use t5edge::generate::{generate, DecodeBatch, DecodeRng, Finished, Prefilled};
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::{GenerateOptions, T5Model};

/// The options of request `r`: greedy or sampling, different lengths and
/// processors.
fn options(r: usize, exact: bool) -> GenerateOptions {
    let o = GenerateOptions::default()
        .max_new_tokens(4 + (r * 5) % 13)
        .min_new_tokens(r % 3)
        .exact(exact);
    match r % 4 {
        _ if exact => o,
        1 => o.do_sample(true).seed(r as u64).temperature(1.3).top_k(0),
        2 => o.repetition_penalty(1.2).no_repeat_ngram_size(2),
        _ => o,
    }
}

/// Runs `n` requests through one batch of at most `max_batch` rows, a new
/// request joining every other step while there is room; returns each
/// request's ids.
fn continuous(model: &T5Model, n: usize, max_batch: usize, exact: bool) -> Vec<Vec<u32>> {
    let ps = prompts(n);
    let mut batch = DecodeBatch::new(model);
    let mut out = vec![None; n];
    let mut finished: Vec<Finished> = Vec::new();
    let (mut next, mut step) = (0, 0);
    while next < n || !batch.is_empty() {
        if step % 2 == 0 && next < n && batch.len() < max_batch {
            let o = options(next, exact);
            let pre = Prefilled::new(model, &ps[next], &o).unwrap();
            let rng = o.do_sample.then(|| DecodeRng::new(o.seed, 0));
            if let Some(f) = batch.join(next as u64, pre, &o, rng).unwrap() {
                finished.push(f);
            }
            next += 1;
        }
        batch
            .step(&mut |_, _| ControlFlow::Continue(()), &mut finished)
            .unwrap();
        for f in finished.drain(..) {
            out[f.key as usize] = Some(f.ids);
        }
        step += 1;
    }
    out.into_iter().map(|o| o.unwrap()).collect()
}

fn alone(model: &T5Model, n: usize, exact: bool) -> Vec<Vec<u32>> {
    prompts(n)
        .iter()
        .enumerate()
        .map(|(r, p)| generate(model, &[p], &options(r, exact)).unwrap()[0].sequences[0].clone())
        .collect()
}

#[test]
fn rows_get_their_own_tokens_whatever_shares_the_batch() {
    let (_dir, f32_model) = decode_synth_model();
    // More than 8 rows at once: the f32 prefill GEMM threshold; more than 32
    // would cross f16's (the kernels' proptests cover every m).
    let n = 20;
    for dtype in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Int8] {
        let mut m = f32_model.clone();
        m.convert(FormatPolicy::for_dtype(dtype)).unwrap();
        let want = alone(&m, n, false);
        for max_batch in [1, 3, 12] {
            assert_eq!(
                continuous(&m, n, max_batch, false),
                want,
                "{} max_batch {max_batch}",
                dtype.name()
            );
        }
    }
    let mut m = f32_model.clone();
    m.enable_certified_head(0).unwrap();
    assert_eq!(continuous(&m, n, 12, true), alone(&m, n, true), "certified");
}

#[test]
fn a_removed_row_leaves_and_the_others_go_on() {
    let (_dir, model) = decode_synth_model();
    let ps = prompts(3);
    let o = GenerateOptions::default()
        .max_new_tokens(12)
        .min_new_tokens(12);
    let mut batch = DecodeBatch::new(&model);
    for (i, p) in ps.iter().enumerate() {
        let pre = Prefilled::new(&model, p, &o).unwrap();
        assert!(batch.join(i as u64, pre, &o, None).unwrap().is_none());
    }
    let mut finished = Vec::new();
    batch
        .step(&mut |_, _| ControlFlow::Continue(()), &mut finished)
        .unwrap();
    assert_eq!(batch.remove(1).map(|ids| ids.len()), Some(1));
    assert_eq!(batch.remove(1), None);
    assert_eq!(batch.keys().collect::<Vec<_>>(), vec![0, 2]);
    while !batch.is_empty() {
        batch
            .step(&mut |_, _| ControlFlow::Continue(()), &mut finished)
            .unwrap();
    }
    for f in &finished {
        let want = generate(&model, &[&ps[f.key as usize]], &o).unwrap()[0].sequences[0].clone();
        assert_eq!(f.ids, want, "row {}", f.key);
    }
    // Beam search is not a row-wise strategy.
    let pre = Prefilled::new(&model, &ps[0], &o).unwrap();
    assert!(batch.join(9, pre, &o.clone().num_beams(2), None).is_err());
}

/// The bits behind it: a decode step's hidden states and logits for a row
/// inside a batch of 12 (past the f32 GEMM threshold of 8 rows) are the
/// row's alone, in every weight format.
#[test]
fn a_decode_step_gives_each_row_its_bits_alone() {
    use t5edge::model::DecodeScratch;
    let (_dir, f32_model) = decode_synth_model();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for dtype in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Int8] {
        let mut m = f32_model.clone();
        m.convert(FormatPolicy::for_dtype(dtype)).unwrap();
        let (d, v) = (m.config.d_model, m.config.vocab_size);
        let caches: Vec<_> = prompts(12)
            .iter()
            .map(|p| m.new_cache(&m.encode(p).unwrap(), 4).unwrap())
            .collect();
        let toks: Vec<u32> = (0..12).map(|i| 3 + 61 * i).collect();
        let mut s = DecodeScratch::new();
        let mut cs = caches.clone();
        let h = m.decode_step(&toks, &mut cs, &mut s).unwrap().to_vec();
        let logits = m.step_head(&mut s, true).unwrap().1.unwrap().to_vec();
        for (i, c) in caches.iter().enumerate() {
            let mut s1 = DecodeScratch::new();
            let mut c1 = [c.clone()];
            let h1 = m
                .decode_step(&toks[i..i + 1], &mut c1, &mut s1)
                .unwrap()
                .to_vec();
            assert_eq!(
                bits(&h[i * d..(i + 1) * d]),
                bits(&h1),
                "{} row {i}",
                dtype.name()
            );
            let l1 = m.step_head(&mut s1, true).unwrap().1.unwrap().to_vec();
            assert_eq!(
                bits(&logits[i * v..(i + 1) * v]),
                bits(&l1),
                "{} row {i}",
                dtype.name()
            );
        }
    }
}
