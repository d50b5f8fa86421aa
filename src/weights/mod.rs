//! From files to weights: memory-mapped safetensors, validated before any byte
//! is read as a number, and the typed views the model borrows from them.

mod file;
pub mod quantized;
mod store;
mod tensor;
pub mod writer;

pub use file::{Backing, DType, TensorFile, TensorInfo};
pub use store::{LoadOptions, WeightStore};
pub use tensor::{F16Data, F32Data, Int8Data, MappedInt8};
