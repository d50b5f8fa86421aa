//! Arbitrary bytes as a safetensors file: validated or refused, never a panic,
//! and every tensor a validated file reports lies inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = t5edge::weights::TensorFile::from_bytes(Path::new("fuzz"), data) {
        for info in f.tensors.values() {
            assert!(info.start <= info.end && info.end <= data.len());
            let n: usize = info.shape.iter().product();
            assert_eq!(n * info.dtype.size(), info.end - info.start);
            let _ = f.tensor_bytes(info);
        }
    }
});
