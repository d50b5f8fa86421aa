//! What the probes share: their positional arguments, their deterministic
//! fills, and operands placed a given number of bytes past a cache line.
// Each probe compiles this module on its own and uses a part of it.
#![allow(dead_code)]

/// Exactly `N` whole-number arguments, or `usage` and exit code 2.
pub fn args<const N: usize>(usage: &str) -> [usize; N] {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    a.try_into().unwrap_or_else(|_| {
        eprintln!("usage: {usage}");
        std::process::exit(2)
    })
}

/// `len` values in [-0.5, 0.5), a different sequence for each `prime`:
/// the probes' activations (7919) and weights (104729).
pub fn fill(len: usize, prime: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * prime % 1000) as f32) / 1000.0 - 0.5)
        .collect()
}

/// `src` copied to start `offset` bytes past a cache line of `buf`, which
/// must hold `src.len()` values plus 64 + `offset` bytes.
pub fn placed<'a, T: Copy>(buf: &'a mut [T], src: &[T], offset: usize) -> &'a [T] {
    let size = std::mem::size_of::<T>();
    let start = (64 - buf.as_ptr() as usize % 64) % 64 / size + offset / size;
    buf[start..start + src.len()].copy_from_slice(src);
    &buf[start..start + src.len()]
}
