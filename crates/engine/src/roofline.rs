//! The adapter's measured read bandwidth: what a decode step's effective GB/s is a fraction of.
//!
//! A datasheet's peak (4.8 TB/s for an H200) is a ceiling no kernel reaches; the streaming-read kernel here is
//! what WGSL through this driver does reach, so `meddr bench` reports the decode step against both.

#[cfg(not(target_arch = "wasm32"))]
use crate::{
    context::GpuContext,
    error::{invalid, Result},
    shaders,
    tensor::DType,
};
#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;

/// One streaming-read measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadBandwidth {
    /// Bytes of the buffer read on each pass (far above any last-level cache on real GPUs).
    pub bytes: u64,
    /// Timed passes, all in one submit after an untimed warm-up pass.
    pub passes: u32,
    /// Wall time of the timed submit, seconds.
    pub seconds: f64,
}

impl ReadBandwidth {
    /// Bytes read per second, in GB/s (10^9).
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 * f64::from(self.passes) / self.seconds.max(1e-12) / 1e9
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuContext {
    /// Reads a zero-filled buffer of `bytes` (rounded down to 16 bytes, capped to the largest binding) `passes`
    /// times in one submit and times it on the host clock (submit to idle). Natively only: the browser cannot
    /// block on the queue. Errors: `bytes` below 1 MiB or `passes` 0 (`EngineError::Invalid`), a
    /// buffer the device refuses.
    pub fn read_bandwidth(&self, bytes: u64, passes: u32) -> Result<ReadBandwidth> {
        const OP: &str = "read_bandwidth";
        let bytes = bytes.min(self.max_binding_bytes()) / 16 * 16;
        if bytes < 1 << 20 {
            return Err(invalid(OP, "bytes", bytes, "below 1 MiB"));
        }
        if passes == 0 {
            return Err(invalid(OP, "passes", 0, "must be at least 1"));
        }
        let n4 = u32::try_from(bytes / 16)
            .map_err(|_| invalid(OP, "bytes", bytes, "above 2^32 vec4 words"))?;
        let src = self.zeros(DType::F32, bytes / 4, "bandwidth source")?;
        let sink = self.zeros(DType::F32, 4, "bandwidth sink")?;
        let pipeline = self.pipeline("bandwidth/read_stream", "read_stream", || {
            shaders::BANDWIDTH.to_string()
        });
        // Enough lanes to fill any current GPU several times over, each walking ≥ 16 words.
        let lanes = (u64::from(n4) / 16).clamp(256, 1 << 21);
        let groups = self.grid(OP, lanes.div_ceil(256))?;
        let record = |count: u32| {
            let mut enc = self.encoder();
            for _ in 0..count {
                self.dispatch(
                    &mut enc,
                    &pipeline,
                    &[n4, 0, 0, 0],
                    &[(1, &src.buffer), (2, &sink.buffer)],
                    groups,
                );
            }
            enc
        };
        self.submit(record(1));
        self.poll_wait();
        self.check_healthy()?;
        let enc = record(passes);
        let t = Instant::now();
        self.submit(enc);
        self.poll_wait();
        let seconds = t.elapsed().as_secs_f64();
        self.check_healthy()?;
        if seconds <= 0.0 {
            return Err(invalid(OP, "seconds", 0u64, "the timer did not advance"));
        }
        Ok(ReadBandwidth {
            bytes,
            passes,
            seconds,
        })
    }
}
