//! The browser's GSCo panel (MedDr paper, §GSCo): specialists on burn over WebGPU, the reference-case index
//! and the collaborative prompt, as a wasm module of its own. The page loads it only when the panel is
//! opened, so users who never open it download none of burn (~14 MB of wasm).
//!
//! [`Panel`] holds the state and is plain Rust (it compiles and runs natively on any burn device); the
//! `wasm` module (wasm32 only) is its `wasm-bindgen` face, driven by `web/www/gsco-worker.js`. MedDr's answer
//! itself comes from the engine's worker (`web/www/worker.js`) with the composed prompt.

pub mod panel;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use panel::{Panel, PanelError};
