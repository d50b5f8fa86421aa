//! Times the int8 LM head GEMV against the screened argmax on a
//! t5-efficient-tiny-nl2-shaped head (32128 x 256), two threads by
//! default: `cargo run --release -p t5edge-kernels --example screen_probe -- [n k threads]`.

use std::time::Instant;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::screen::{self, Int4Screen, ScreenScratch};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, k) = (
        *args.first().unwrap_or(&32128),
        *args.get(1).unwrap_or(&256),
    );
    t5edge_kernels::pool::set_global_threads(*args.get(2).unwrap_or(&2));
    let mut seed = 1u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut w: Vec<f32> = (0..n * k).map(|_| next()).collect();
    let x: Vec<f32> = (0..k).map(|_| next()).collect();
    // One row along x, so the screen decides (as on a confident step).
    w[7 * k..8 * k].copy_from_slice(&x);
    let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
    let v = p.view();
    let t = Instant::now();
    let s = Int4Screen::from_int8(&v).unwrap();
    println!("screen built in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut y = vec![0.0f32; n];
    let mut scratch = ScreenScratch::default();
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..20 {
            f();
        }
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..200 {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / 200.0);
        }
        best * 1e6
    };
    let full = time(&mut || {
        int8::linear(&x, 1, k, &v, &mut y);
        std::hint::black_box(t5edge_kernels::ops::argmax(&y));
    });
    let mut pick = None;
    let scr = time(&mut || pick = Some(screen::argmax(&v, &s, &x, None, &mut scratch)));
    println!(
        "{n}x{k}: int8 head + argmax {full:.1} us ({} MB), screened {scr:.1} us ({} MB) -> {:?}",
        v.data().len() as f64 / 1e6,
        s.bytes() as f64 / 1e6,
        pick.unwrap()
    );
}
