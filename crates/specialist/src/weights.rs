//! timm `model.safetensors` → burn tensors, with every tensor's presence, shape and dtype checked against
//! what the architecture needs, and leftovers reported (weights of another model must not load silently).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn_tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, SpecialistError};

/// Reads tensors by timm key name and remembers which were taken.
pub struct WeightStore<'a> {
    path: PathBuf,
    architecture: String,
    st: SafeTensors<'a>,
    used: BTreeSet<String>,
    device: Device,
}

impl<'a> WeightStore<'a> {
    /// Parses the safetensors header (sizes and offsets checked by the `safetensors` crate).
    pub fn new(
        bytes: &'a [u8],
        path: &Path,
        architecture: &str,
        device: &Device,
    ) -> Result<WeightStore<'a>> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| SpecialistError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(WeightStore {
            path: path.to_path_buf(),
            architecture: architecture.to_string(),
            st,
            used: BTreeSet::new(),
            device: device.clone(),
        })
    }

    /// The tensor `name` as f32 on the device; its shape must be exactly `shape`.
    pub fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }

    /// The tensor `name` as host f32 values (row-major), its shape checked.
    pub fn values(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| SpecialistError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                architecture: self.architecture.clone(),
            })?;
        if view.shape() != shape {
            return Err(SpecialistError::TensorShape {
                path: self.path.clone(),
                name: name.to_string(),
                architecture: self.architecture.clone(),
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(SpecialistError::TensorDtype {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SpecialistError::NonFinite {
                path: self.path.clone(),
                name: name.to_string(),
                index,
                value,
            });
        }
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// Fails when the file holds tensors the architecture did not take. BatchNorm's `num_batches_tracked`
    /// counters are training state that timm writes into every `state_dict`; they are ignored.
    pub fn finish(self) -> Result<()> {
        let extra: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(*n) && !n.ends_with(".num_batches_tracked"))
            .map(|n| n.to_string())
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let mut examples = extra.clone();
        examples.sort();
        examples.truncate(5);
        Err(SpecialistError::UnexpectedTensors {
            path: self.path,
            architecture: self.architecture,
            count: extra.len(),
            examples,
        })
    }
}
