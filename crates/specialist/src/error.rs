//! Every way loading or running a specialist can fail. Messages name the file and the field or tensor, and
//! carry the offending value.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpecialistError {
    // Causes are part of the message, never also a `source()` (a chain walker would print them twice).
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {size} bytes is above the {limit}-byte limit for {what}")]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: unknown architecture {name:?} (supported: {supported})")]
    UnknownArchitecture {
        path: PathBuf,
        name: String,
        supported: String,
    },
    #[error("{path}: not a safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}` is missing (architecture {architecture})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        architecture: String,
    },
    #[error("{path}: tensor `{name}` has shape {got:?}, but {architecture} with this config needs {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        architecture: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has dtype {dtype}; weights must be F32, F16 or BF16")]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: tensor `{name}` holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    #[error("{path}: {count} tensor(s) that {architecture} does not use, e.g. {examples:?} (weights of another architecture or config?)")]
    UnexpectedTensors {
        path: PathBuf,
        architecture: String,
        count: usize,
        examples: Vec<String>,
    },
    #[error("image: {0}")]
    Image(meddr_image::ImageError),
    #[error("image is {width}x{height}; the specialist takes square images of side ≤ {max} (its img_size {img_size} is padded to {max})")]
    ImageSize {
        width: u32,
        height: u32,
        img_size: u32,
        max: u32,
    },
    #[error("input: {0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T, E = SpecialistError> = std::result::Result<T, E>;

impl From<meddr_image::ImageError> for SpecialistError {
    fn from(e: meddr_image::ImageError) -> Self {
        SpecialistError::Image(e)
    }
}
