//! Same input, same bits: across runs, across pool sizes and backends (rayon,
//! the kernels' spin pool), and across threads sharing one model.

mod support;

use std::sync::Arc;
use support::*;
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::T5Model;

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<T5Model>();

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 6, 7, 1],
        (10..60).chain([1]).collect(),
        vec![300, 1],
        (100..230).step_by(3).chain([1]).collect(),
    ]
}

fn run(m: &T5Model) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let opts = GenerateOptions::default().max_new_tokens(12);
    let ids = prompts()
        .iter()
        .map(|p| greedy(m, &[p], &opts).unwrap().remove(0))
        .collect();
    let logits = prompts()
        .iter()
        .map(|p| bits(&m.forward(p, &[0, 5, 9, 11]).unwrap()))
        .collect();
    (ids, logits)
}

#[test]
fn bit_identical_across_runs_and_pool_sizes() {
    let m = T5Model::load(base_checkpoint()).unwrap();
    let reference = run(&m);
    assert_eq!(run(&m), reference, "second run differs");
    // A fresh load gives the same bits too.
    assert_eq!(run(&T5Model::load(base_checkpoint()).unwrap()), reference);
    for n in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| run(&m)), reference, "{n} threads differ");
        // The same model under the persistent spin pool (T5EDGE_POOL=spin).
        let spin = t5edge_kernels::pool::Pool::new(n);
        assert_eq!(
            spin.install(|| run(&m)),
            reference,
            "spin pool, {n} threads"
        );
    }
}

#[test]
fn batched_generation_matches_one_at_a_time() {
    let m = T5Model::load(base_checkpoint()).unwrap();
    let opts = GenerateOptions::default().max_new_tokens(12);
    let ps = prompts();
    let refs: Vec<&[u32]> = ps.iter().map(|p| &p[..]).collect();
    let batch = greedy(&m, &refs, &opts).unwrap();
    assert_eq!(batch, run(&m).0);
}

#[test]
fn concurrent_threads_sharing_one_model_match_sequential() {
    let m = Arc::new(T5Model::load(base_checkpoint()).unwrap());
    let reference = run(&m);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || run(&m))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), reference);
    }
}

/// A batched decode step runs its sequences' attention calls in parallel
/// once the batch's attention is big enough (model/decoder.rs,
/// PAR_ATTENTION_MACS = 2^17): here 16 sequences x 150 encoder ids x inner 64
/// = 153,600 multiply-adds of cross-attention per layer, above it. One thread
/// takes the serial path, three the parallel one: same bits.
#[test]
fn parallel_batched_attention_matches_serial() {
    let m = T5Model::load(base_checkpoint()).unwrap();
    assert_eq!(m.config.inner_dim(), 64, "the threshold arithmetic above");
    let prompts: Vec<Vec<u32>> = (0..16u32)
        .map(|s| (0..150u32).map(|i| 3 + (i * 7 + s * 13) % 400).collect())
        .collect();
    let steps = |threads: usize| {
        t5edge_kernels::pool::Pool::new(threads).install(|| {
            let mut caches: Vec<_> = prompts
                .iter()
                .map(|p| m.new_cache(&m.encode(p).unwrap(), 4).unwrap())
                .collect();
            let mut scratch = t5edge::model::DecodeScratch::new();
            let mut out = Vec::new();
            let mut toks = vec![0u32; prompts.len()];
            for step in 0..4u32 {
                let h = m.decode_step(&toks, &mut caches, &mut scratch).unwrap();
                out.extend(bits(h));
                toks.iter_mut()
                    .enumerate()
                    .for_each(|(s, t)| *t = 5 + (s as u32 + step) % 50);
            }
            out
        })
    };
    let serial = steps(1);
    assert_eq!(steps(3), serial);
    assert_eq!(steps(2), serial);
}

/// The encoder keeps its working memory per thread between calls: what a
/// thread encoded before (shorter, longer, or past what it keeps) must not
/// change a bit of what it encodes next.
#[test]
fn encoder_results_do_not_depend_on_earlier_calls() {
    let m = T5Model::load(base_checkpoint()).unwrap();
    let vocab = m.config.vocab_size as u32;
    let ids = |n: usize, seed: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 2 + (i * 7919 + seed) % (vocab - 2))
            .collect()
    };
    let (short, long) = (ids(9, 1), ids(300, 2));
    // Each input on a thread that has encoded nothing yet.
    let fresh = |v: &Vec<u32>| {
        let v = v.clone();
        let m = m.clone();
        std::thread::spawn(move || bits(&m.encode(&v).unwrap()))
            .join()
            .unwrap()
    };
    let (short_ref, long_ref) = (fresh(&short), fresh(&long));
    for round in 0..2 {
        assert_eq!(
            bits(&m.encode(&long).unwrap()),
            long_ref,
            "round {round}: long"
        );
        assert_eq!(
            bits(&m.encode(&short).unwrap()),
            short_ref,
            "round {round}: short after long"
        );
        assert_eq!(
            bits(&m.encode(&long).unwrap()),
            long_ref,
            "round {round}: long after short"
        );
    }
}

/// A decoder call's working memory (caches, cross-attention keys and
/// values, logits) is left on its thread as spare buffers for the next call
/// (model/scratch.rs, `spare`), stale values and all: what a thread decoded
/// before (a bigger batch, longer inputs, another model) must not change a
/// bit of what it decodes next, f32 or int8.
#[test]
fn decoder_results_do_not_depend_on_earlier_calls() {
    use t5edge::model::{FormatPolicy, WeightFormat};
    let f32m = T5Model::load(base_checkpoint()).unwrap();
    let mut int8m = T5Model::load(base_checkpoint()).unwrap();
    int8m
        .convert(FormatPolicy::for_dtype(WeightFormat::Int8))
        .unwrap();
    let vocab = f32m.config.vocab_size as u32;
    let ids = |n: usize, seed: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 2 + (i * 7919 + seed) % (vocab - 2))
            .chain([1])
            .collect()
    };
    // Buffers of at least 1024 floats are kept (MIN_SPARE): inner is 64
    // here, so 40 new tokens and inputs from 17 ids.
    let short = ids(17, 3);
    let batch: Vec<Vec<u32>> = (0..12).map(|r| ids(20 + 9 * r, r as u32)).collect();
    let dec = [0, 5, 9, 11, 4];
    let opts = GenerateOptions::default()
        .max_new_tokens(40)
        .min_new_tokens(40);
    let work = |m: &T5Model| {
        let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
        let b = greedy(m, &refs, &opts).unwrap();
        let one = greedy(m, &[&short], &opts).unwrap();
        let logits = bits(&m.forward(&short, &dec).unwrap());
        (b, one, logits)
    };
    for m in [&f32m, &int8m] {
        // On a thread that has decoded nothing yet.
        let fresh = std::thread::scope(|s| s.spawn(|| work(m)).join().unwrap());
        std::thread::scope(|s| {
            s.spawn(|| {
                // Another model's calls first, then this one's twice.
                let other = if std::ptr::eq(m, &f32m) {
                    &int8m
                } else {
                    &f32m
                };
                let long = ids(200, 9);
                greedy(other, &[&long, &short], &opts).unwrap();
                assert_eq!(work(m), fresh, "after the other model");
                assert_eq!(work(m), fresh, "after itself");
            })
            .join()
            .unwrap()
        });
    }
}

/// A prefill's all-int8 feed-forward block runs by rows, a task for each 32
/// rows, when the pool has more than one thread (model/ffn.rs), and as whole
/// products split by columns on one, and so does an encoder pass from 64
/// rows (model/encoder.rs, `forward_by_rows`, in tasks whose height depends
/// on the thread count): the encoder output (alone and in a packed batch)
/// and the teacher-forced logits are the same bits either way, for the int8
/// policy (W8A16 `wo`), the all-int8 one and a gated block, with a ragged
/// last task.
#[test]
fn int8_prefill_by_rows_matches_whole_products() {
    use t5edge::model::{FormatPolicy, WeightFormat};
    use t5edge_kernels::pool::Pool;
    let gated = TempDir::new("gated-by-rows");
    let mut cfg = t5edge::synth::preset("t5-v1_1-gated-tiny").unwrap();
    cfg.vocab_size = 512;
    let synth = t5edge::synth::SynthOptions {
        seed: 3,
        norm_jitter: 0.1,
        ..Default::default()
    };
    t5edge::synth::write_checkpoint(gated.path(), &cfg, &synth, true).unwrap();
    // 300 ids: more rows than two or three tallest tasks (128 rows) take,
    // so three tasks of 80 rows and one of 60 on two threads, two of 112
    // and one of 76 on three; the packed batch below, 165 rows, a task of
    // 96 and one of 69 on two.
    let ids: Vec<u32> = (0..300).map(|i| (i * 37 % 500 + 2) as u32).collect();
    let dec: Vec<u32> = (0..70).map(|i| (i * 11 % 500) as u32).collect();
    for (dir, int8_wo) in [
        (base_checkpoint(), false),
        (base_checkpoint(), true),
        (gated.path(), false),
    ] {
        let mut m = T5Model::load(dir).unwrap();
        let mut policy = FormatPolicy::for_dtype(WeightFormat::Int8);
        if int8_wo {
            policy.ffn_out = WeightFormat::Int8;
        }
        m.convert(policy).unwrap();
        let run = |threads: usize| {
            Pool::new(threads).install(|| {
                let enc = bits(&m.encode(&ids).unwrap());
                let logits = bits(&m.forward(&ids[..40], &dec).unwrap());
                // A packed batch: tasks span sequences.
                let batch = m.encode_batch(&[&ids[..45], &ids[7..57], &dec]).unwrap();
                let batch: Vec<Vec<u32>> = batch.iter().map(|e| bits(e)).collect();
                (enc, logits, batch)
            })
        };
        let whole = run(1);
        for threads in [2, 3] {
            let by_rows = run(threads);
            let what = format!("{} (int8 wo: {int8_wo}), {threads} threads", dir.display());
            assert!(whole.0 == by_rows.0, "encoder output differs: {what}");
            assert!(whole.1 == by_rows.1, "teacher-forced logits differ: {what}");
            assert!(
                whole.2 == by_rows.2,
                "a batch's encoder outputs differ: {what}"
            );
        }
    }
}

/// `embed_each_alone` (the server's `/v1/embeddings`): each input's bits
/// are those it gets embedded alone, whether the batch runs its inputs at
/// once (many short ones, one a thread) or one after another (few, or a
/// long one), on any pool; the first bad input's error, in input order.
#[test]
fn inputs_embedded_alone_at_once_keep_their_bits() {
    use t5edge::embed::{embed, embed_each_alone};
    use t5edge::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
    // The real tiny-nl2 widths, so that an input alone splits its layers
    // over threads.
    let cfg = with_overrides(
        &preset("t5-efficient-tiny-nl2").unwrap(),
        &["vocab_size=2048".into()],
    )
    .unwrap();
    let dir = TempDir::new("embed-alone");
    write_checkpoint(dir.path(), &cfg, &SynthOptions::default(), false).unwrap();
    let m = T5Model::load(dir.path()).unwrap();
    let short: Vec<Vec<u32>> = (0..13)
        .map(|i| {
            (0..3 + 7 * i)
                .map(|t| (t * 31 + i) % 2000 + 2)
                .chain([1])
                .collect()
        })
        .collect();
    let mut with_long = short[..5].to_vec();
    with_long.push((0..300).map(|t| t % 2000 + 2).chain([1]).collect());
    for batch in [short, with_long] {
        let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
        let alone: Vec<Vec<u32>> = refs
            .iter()
            .map(|ids| bits(&embed(&m, &[ids], true).unwrap().remove(0)))
            .collect();
        let each = || -> Vec<Vec<u32>> {
            let e = embed_each_alone(&m, &refs, true).unwrap();
            e.iter().map(|v| bits(v)).collect()
        };
        assert!(each() == alone, "{} inputs", refs.len());
        for n in [1, 2, 3] {
            let spin = t5edge_kernels::pool::Pool::new(n);
            assert!(
                spin.install(each) == alone,
                "{} inputs, spin pool of {n}",
                refs.len()
            );
        }
        let rayon2 = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(
            rayon2.install(each) == alone,
            "{} inputs, rayon 2",
            refs.len()
        );
    }
    let mut bad: Vec<Vec<u32>> = (0..8).map(|i| vec![5 + i, 1]).collect();
    bad[5] = vec![7, 4000, 1];
    bad[6] = vec![];
    let refs: Vec<&[u32]> = bad.iter().map(Vec::as_slice).collect();
    let want = embed(&m, &[refs[5]], true).unwrap_err().to_string();
    let spin = t5edge_kernels::pool::Pool::new(2);
    let got = spin
        .install(|| embed_each_alone(&m, &refs, true))
        .unwrap_err()
        .to_string();
    assert_eq!(got, want);
}
