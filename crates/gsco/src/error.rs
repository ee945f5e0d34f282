//! GSCo errors: each names the file and the field, key or value at fault.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GscoError {
    // Causes are part of the message, never also a `source()` (a chain walker would print them twice).
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("index {path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("index {path} was built by specialist {index_specialist} ({index_arch}, weights sha256 {index_sha}…); it cannot be queried with {given} ({given_arch}, weights sha256 {given_sha}…)")]
    WrongSpecialist {
        path: PathBuf,
        index_specialist: String,
        index_arch: String,
        index_sha: String,
        given: String,
        given_arch: String,
        given_sha: String,
    },
    #[error("template {path}: {message}")]
    Template { path: PathBuf, message: String },
    #[error(transparent)]
    Specialist(#[from] meddr_specialist::SpecialistError),
    #[error(transparent)]
    Gguf(#[from] meddr_gguf::GgufError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = GscoError> = std::result::Result<T, E>;

pub(crate) fn data_err(path: &std::path::Path, message: impl Into<String>) -> GscoError {
    GscoError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn index_err(path: &std::path::Path, message: impl Into<String>) -> GscoError {
    GscoError::Index {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
