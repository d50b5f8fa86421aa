//! The persistent pool: every task exactly once for any task count, no task at
//! all for 0, nested and concurrent callers neither deadlock nor lose tasks.
//! (That results do not depend on the backend or thread count is checked next
//! to each kernel: `on_every_pool` in linear_int8, linear_float, attention.)

use proptest::prelude::*;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use t5edge_kernels::pool::{self, Backend, Pool};

fn hits(pool: &Pool, tasks: usize) -> Vec<u32> {
    let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
    pool.run(tasks, |t| {
        hits[t].fetch_add(1, Ordering::Relaxed);
    });
    hits.into_iter().map(AtomicU32::into_inner).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_task_runs_exactly_once(
        threads in 1usize..=4,
        spin_us in prop_oneof![Just(0u64), Just(50), Just(200)],
        counts in proptest::collection::vec(0usize..3000, 1..8),
    ) {
        let pool = Pool::with_spin(threads, Duration::from_micros(spin_us));
        for tasks in counts {
            let h = hits(&pool, tasks);
            prop_assert!(h.iter().all(|&c| c == 1), "{threads} threads, {tasks} tasks: {h:?}");
        }
    }
}

#[test]
fn zero_tasks_run_nothing() {
    let pool = Pool::new(3);
    pool.run(0, |_| panic!("no task exists"));
    assert!(hits(&pool, 0).is_empty());
}

/// A region started inside a task (on the caller or on a worker) runs inline.
#[test]
fn nested_regions_complete() {
    let pool = Pool::new(3);
    let total = AtomicUsize::new(0);
    pool.install(|| {
        pool.run(50, |_| {
            pool.run(7, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        })
    });
    assert_eq!(total.into_inner(), 350);
}

/// Several user threads on one pool: one runs on it, the others inline.
#[test]
fn concurrent_callers_complete() {
    let pool = Pool::with_spin(2, Duration::ZERO);
    std::thread::scope(|s| {
        for seed in 0..4usize {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..200 {
                    let tasks = (i * 37 + seed * 11) % 700;
                    assert!(hits(pool, tasks).iter().all(|&c| c == 1), "{tasks}");
                }
            });
        }
    });
}

/// The global pool (and `with_backend`) serves user threads concurrently too.
#[test]
fn global_pool_under_concurrent_callers() {
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                pool::with_backend(Backend::Spin, || {
                    for tasks in 0..300 {
                        assert!(hits(pool::global(), tasks).iter().all(|&c| c == 1));
                    }
                })
            });
        }
    });
}

#[test]
fn backend_names_parse() {
    for b in [Backend::Rayon, Backend::Spin] {
        assert_eq!(Backend::parse(b.name()), Some(b));
    }
    assert_eq!(Backend::parse(" SPIN "), Some(Backend::Spin));
    assert_eq!(Backend::parse("openmp"), None);
}
