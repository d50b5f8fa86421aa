//! Plain f32 linear: the twin every f32 SIMD path is checked against.

pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for (j, yv) in y[i * n..(i + 1) * n].iter_mut().enumerate() {
            let wr = &w[j * k..(j + 1) * k];
            *yv = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
}
