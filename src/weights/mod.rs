//! From files to weights: memory-mapped safetensors, validated before any byte
//! is read as a number, and the typed views the model borrows from them.

mod file;
pub mod gather;
pub mod quantized;
mod store;
mod tensor;
pub mod writer;

pub use file::{Backing, DType, TensorFile, TensorInfo};
pub use store::{LoadOptions, WeightStore};
pub use tensor::{Bf16Data, F16Data, F32Data, Half16, HalfData, Int8Data, MappedInt8, W8A16Data};
