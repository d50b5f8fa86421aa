//! Times the int8 LM head against the screened argmax on a
//! t5-efficient-tiny-nl2-shaped head (32128 x 256), two threads by
//! default, for one activation row and for a batch of `rows` (each row
//! with its own planted winner):
//! `cargo run --release -p t5edge-kernels --example screen_probe -- [n k threads rows]`.

use std::time::Instant;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::screen::{self, Int4Screen, Pick, RowsScratch, ScreenScratch};

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
    let m = *args.get(3).unwrap_or(&16);
    let mut w: Vec<f32> = (0..n * k).map(|_| next()).collect();
    let xs: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let x = &xs[..k];
    // Per activation row one weight row along it, so the screen decides (as
    // on a confident step).
    for i in 0..m.min(n / 8) {
        w[(7 + 8 * i) * k..(8 + 8 * i) * k].copy_from_slice(&xs[i * k..(i + 1) * k]);
    }
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
        int8::linear(x, 1, k, &v, &mut y);
        std::hint::black_box(t5edge_kernels::ops::argmax(&y));
    });
    let mut pick = None;
    let scr = time(&mut || pick = Some(screen::argmax(&v, &s, x, None, &mut scratch)));
    println!(
        "{n}x{k}: int8 head + argmax {full:.1} us ({} MB), screened {scr:.1} us ({} MB) -> {:?}",
        v.data().len() as f64 / 1e6,
        s.bytes() as f64 / 1e6,
        pick.unwrap()
    );
    let mut ym = vec![0.0f32; m * n];
    let full_m = time(&mut || {
        int8::linear(&xs, m, k, &v, &mut ym);
        for row in ym.chunks_exact(n) {
            std::hint::black_box(t5edge_kernels::ops::argmax(row));
        }
    });
    let (mut rs, mut picks) = (RowsScratch::default(), Vec::new());
    let banned = vec![None; m];
    let isa = t5edge_kernels::dispatch::active();
    let scr_m =
        time(&mut || screen::argmax_rows_with(isa, &v, &s, &xs, m, &banned, &mut rs, &mut picks));
    let rescored: usize = picks
        .iter()
        .map(|p| match p {
            Pick::Id { rescored, .. } => *rescored,
            Pick::Undecided { .. } => 0,
        })
        .sum();
    let decided = picks
        .iter()
        .filter(|p| matches!(p, Pick::Id { .. }))
        .count();
    println!(
        "{m} rows: int8 head + argmax {full_m:.1} us, screened {scr_m:.1} us ({decided} decided, {rescored} rows re-scored)"
    );
}
