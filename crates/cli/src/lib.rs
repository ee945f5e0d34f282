//! Pieces of the `meddr` binary that other front ends can reuse: the CPU backend over the reference model and
//! the model report of `meddr info`.

pub mod cpu;
pub mod gpu;
pub mod report;

pub use cpu::CpuBackend;
pub use gpu::{GpuBackend, GpuOptions, VisionLoad};

/// An error as one line: anyhow's context layers, then each cause once. Our error types put their cause in
/// their own message and do not also expose it as `source()`; a cause whose text is already in the line (an
/// error from elsewhere that does both) is skipped rather than printed twice.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.replace('\n', " ")
}
