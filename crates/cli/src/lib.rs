//! Pieces of the `meddr` binary that other front ends can reuse: the CPU backend over the reference model and
//! the model report of `meddr info`.

pub mod cpu;
pub mod gpu;
pub mod report;

pub use cpu::CpuBackend;
pub use gpu::{GpuBackend, GpuOptions};
