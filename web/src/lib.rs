//! MedDr in a web page: the engine runs in a Web Worker on WebGPU and the weights go from the user's
//! `File` (or an OPFS-cached download) straight into GPU buffers in bounded chunks, so wasm memory stays
//! the same size whether the model is 10 MB or 25 GB.
//!
//! * [`check`]: header-only decisions (is this a MedDr GGUF, does every row fit one GPU binding), testable
//!   natively.
//! * `wasm` (wasm32 only): the `wasm-bindgen` API that `web/www/worker.js` drives.

pub mod check;
pub mod error;
pub mod session;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use check::{
    check_device_limits, check_meddr, next_header_step, ModelSummary, FIRST_HEADER_SLICE,
};
pub use error::{Result, WebError};
