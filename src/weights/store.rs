//! All the tensor files of one checkpoint (a single `model.safetensors`, or the
//! shards an `model.safetensors.index.json` names), looked up by tensor name.

use super::file::{DType, TensorFile, TensorInfo};
use super::tensor::F32Data;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to bring a checkpoint's bytes into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Map files (instant start, shared page cache). Off: read them into the heap,
    /// which is immune to the file being truncated while in use.
    pub mmap: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { mmap: true }
    }
}

pub struct WeightStore {
    pub files: Vec<TensorFile>,
    /// name -> index into `files`.
    index: BTreeMap<String, usize>,
    /// What to name in errors when no file holds the tensor asked for: the
    /// single file, or the shard index.
    origin: PathBuf,
}

impl WeightStore {
    /// Opens the safetensors weights in `dir`.
    pub fn open_dir(dir: &Path, opts: LoadOptions) -> Result<WeightStore> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            return Self::from_files(vec![TensorFile::open(&single, opts.mmap)?]);
        }
        if index.is_file() {
            return Self::open_sharded(dir, &index, opts);
        }
        Err(Error::Other(format!(
            "{}: no model.safetensors or model.safetensors.index.json (pytorch_model.bin is not read: convert it to safetensors)",
            dir.display()
        )))
    }

    fn open_sharded(dir: &Path, index: &Path, opts: LoadOptions) -> Result<WeightStore> {
        let bad = |msg: String| Error::Format {
            path: index.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no weight_map object".into()))?;
        let mut shard_names: Vec<String> = Vec::new();
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("weight_map entry {tensor:?} is not a file name")))?;
            // Shards must sit beside the index: no paths, so an index cannot reach elsewhere.
            if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
                return Err(bad(format!(
                    "shard name {file:?} for {tensor:?} is not a plain file name"
                )));
            }
            if !shard_names.iter().any(|s| s == file) {
                shard_names.push(file.to_string());
            }
            wanted.insert(tensor.clone(), file.to_string());
        }
        let mut files = Vec::new();
        for s in &shard_names {
            files.push(TensorFile::open(&dir.join(s), opts.mmap)?);
        }
        let mut store = Self::from_files(files)?;
        store.origin = index.to_path_buf();
        for (tensor, file) in &wanted {
            match store.index.get(tensor) {
                Some(&i)
                    if store.files[i].path.file_name().and_then(|n| n.to_str()) == Some(file) => {}
                _ => {
                    return Err(Error::MissingTensor {
                        path: dir.join(file),
                        name: tensor.clone(),
                    });
                }
            }
        }
        Ok(store)
    }

    /// Builds a store over already-validated files; a tensor in two files is an error.
    pub fn from_files(files: Vec<TensorFile>) -> Result<WeightStore> {
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.tensors.keys() {
                if let Some(prev) = index.insert(name.clone(), i) {
                    return Err(Error::Format {
                        path: f.path.clone(),
                        msg: format!(
                            "tensor {name:?} also appears in {}",
                            files[prev].path.display()
                        ),
                    });
                }
            }
        }
        let origin = files.first().map(|f| f.path.clone()).unwrap_or_default();
        Ok(WeightStore {
            files,
            index,
            origin,
        })
    }

    pub fn get(&self, name: &str) -> Option<(&TensorFile, &TensorInfo)> {
        let &i = self.index.get(name)?;
        let f = &self.files[i];
        Some((f, &f.tensors[name]))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|s| s.as_str())
    }

    /// A path to name in errors about this checkpoint.
    pub fn path(&self) -> PathBuf {
        self.origin.clone()
    }

    /// Looks a tensor up and checks its shape.
    pub fn info(&self, name: &str, shape: &[usize]) -> Result<(&TensorFile, &TensorInfo)> {
        let (f, info) = self.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path(),
            name: name.into(),
        })?;
        if info.shape != shape {
            return Err(Error::Shape {
                path: f.path.clone(),
                name: name.into(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok((f, info))
    }

    /// A float tensor as f32: zero-copy when it is f32 and aligned in the file,
    /// converted once at load when it is f16 or bf16.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<F32Data> {
        let (f, info) = self.info(name, shape)?;
        let n: usize = shape.iter().product();
        let bytes = f.tensor_bytes(info);
        match info.dtype {
            DType::F32 => Ok(
                F32Data::mapped(&f.backing, info.start, n).unwrap_or_else(|| {
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect::<Vec<_>>()
                        .into()
                }),
            ),
            DType::F16 => Ok(bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect::<Vec<_>>()
                .into()),
            DType::BF16 => Ok(bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect::<Vec<_>>()
                .into()),
            other => Err(Error::Dtype {
                path: f.path.clone(),
                name: name.into(),
                expected: "F32, F16 or BF16".into(),
                found: other.name().into(),
            }),
        }
    }
}
