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
