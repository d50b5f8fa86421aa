//! End-to-end steps of t5-efficient-tiny-nl2's shape (synthesized, seed 0):
//! the encoder on 26 and 128 tokens, one decode step with a warm cache, and the
//! LM head alone, per weight format. `cargo bench --bench engine`
//! (kernel-level benches: `cargo bench -p t5edge-kernels`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::T5Model;

fn model(fmt: WeightFormat) -> T5Model {
    let dir = std::env::temp_dir().join("t5edge-bench-tiny-nl2");
    if !dir.join("model.safetensors").is_file() {
        let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
        t5edge::synth::write_checkpoint(&dir, &cfg, &Default::default(), true).unwrap();
    }
    let mut m = T5Model::load(&dir).unwrap();
    if fmt != WeightFormat::F32 {
        m.convert(FormatPolicy::for_dtype(fmt)).unwrap();
    }
    m
}

fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    for fmt in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::Int8,
    ] {
        let m = model(fmt);
        let name = fmt.name();
        for t in [26usize, 128] {
            let ids: Vec<u32> = (0..t as u32).map(|i| 100 + i * 7).collect();
            g.throughput(Throughput::Elements(t as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("encoder/{name}"), t),
                &ids,
                |b, ids| b.iter(|| m.encode(ids).unwrap()),
            );
        }
        // One decode step after 16 cached positions, encoder output of 26 tokens.
        let enc = m
            .encode(&(0..26u32).map(|i| 100 + i).collect::<Vec<_>>())
            .unwrap();
        let mut base = m.new_cache(&enc, 64).unwrap();
        for t in 0..16u32 {
            m.decode_hidden(&[&[t + 5]], std::slice::from_mut(&mut base))
                .unwrap();
        }
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new(format!("decode_step/{name}"), 16), |b| {
            b.iter_batched(
                || base.clone(),
                |mut c| {
                    let h = m
                        .decode_hidden(&[&[42]], std::slice::from_mut(&mut c))
                        .unwrap();
                    m.logits(&h).unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
        let h = vec![0.5f32; m.config.d_model];
        g.bench_function(
            BenchmarkId::new(format!("lm_head/{name}"), m.config.vocab_size),
            |b| b.iter(|| m.logits(&h).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
