//! Times a float prefill product on one shape, best of 5 x 200 calls, to
//! read against `isa_peak`'s f32 `vfmadd` ceiling (kernels/BENCH.md):
//! `cargo run --release -p t5edge-kernels --example prefill_probe -- m k n threads [level [weights]]`
//! (W3's `wo`: 128 1024 256; `level` as `T5EDGE_ISA` names it, default the
//! best this CPU runs; `weights` f16 (the default int8 policy's FFN output
//! projection, the default), bf16 (`bf16::linear_with`) or bf16dot
//! (`bf16::linear_dot_with`, activations rounded to bf16), int8
//! (`int8::linear_with`, the default policy's other products), int8relu
//! (`int8::linear_relu_with`, the FFN's `wi` with its ReLU) or int8a16
//! (`int8::linear_a16_with`, W8A16: the default policy's FFN output
//! projection in a quantized directory)).
use half::{bf16, f16};
use std::time::Instant;
use t5edge_kernels::{bf16 as lbf16, dispatch, f16 as lf16, int8};
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<usize> = args.iter().filter_map(|v| v.parse().ok()).collect();
    let (m, k, n, th) = (a[0], a[1], a[2], a[3]);
    t5edge_kernels::pool::set_global_threads(th);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let wf: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104729 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let w: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut y = vec![0f32; m * n];
    let isa = match args.get(4) {
        Some(name) => dispatch::Isa::parse(name).expect("a level name, as T5EDGE_ISA takes"),
        None => dispatch::best(),
    };
    let weights = args.get(5).map_or("f16", String::as_str);
    let q8 = int8::PackedInt8::quantize(&wf, n, k, 0).expect("int8 weights");
    let (q16, t16) = int8::PackedInt8::quantize_a16(&wf, n, k, 0).expect("W8A16 weights");
    let run = |y: &mut [f32]| match weights {
        "f16" => lf16::linear_with(isa, &x, m, k, &w, n, y),
        "bf16" => lbf16::linear_with(isa, &x, m, k, &wb, n, y),
        "bf16dot" => lbf16::linear_dot_with(isa, &x, m, k, &wb, n, y),
        "int8" => int8::linear_with(isa, &x, m, k, &q8.view(), y),
        "int8relu" => int8::linear_relu_with(isa, &x, m, k, &q8.view(), y),
        "int8a16" => int8::linear_a16_with(isa, &x, m, k, &q16.view(), &t16, y),
        other => panic!("weights {other}: f16, bf16, bf16dot, int8, int8relu or int8a16"),
    };
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..200 {
            run(&mut y);
        }
        best = best.min(t.elapsed().as_secs_f64() / 200.0);
    }
    println!(
        "{weights} m{m} k{k} n{n} t{th}: {:.1} us, {:.1} G MAC/s",
        best * 1e6,
        (m * k * n) as f64 / best / 1e9
    );
}
