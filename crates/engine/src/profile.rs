//! Per-kernel GPU time: every dispatch recorded while a profile is open writes a timestamp at the start and
//! end of its compute pass (WebGPU's `timestamp-query` feature), labelled with its pipeline's key, so
//! `meddr bench --profile` can say where a decode step, a prefill or an image encode spends its time on the
//! device itself rather than on the host clock.
//!
//! Only a context created with [`crate::ContextOptions::profile`] on an adapter with `TIMESTAMP_QUERY` can
//! profile; everything else records exactly as before.

use crate::context::GpuContext;
use crate::error::Result;
use std::collections::HashMap;

/// Timestamp pairs one profile can hold: 4096 queries, WebGPU's most per query set (a decode step of the
/// full MedDr records ~900 dispatches).
pub(crate) const MAX_PASSES: u32 = 2048;

/// GPU time of one kernel family (one pipeline key) inside a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// The pipeline's key, e.g. `matvec/Q4_K/2x32/t1/v` (op / weight type / workgroup shape / variant).
    pub kernel: String,
    /// Dispatches of it in the profiled region.
    pub dispatches: u32,
    /// Sum of their pass durations, milliseconds.
    pub ms: f64,
}

/// The open profile's state: the query set and, per written pair, the pipeline key.
pub(crate) struct Profiler {
    pub(crate) queries: wgpu::QuerySet,
    pub(crate) labels: Vec<String>,
    /// Pipeline → key, filled as pipelines are created.
    pub(crate) names: HashMap<wgpu::ComputePipeline, String>,
    pub(crate) open: bool,
}

impl Profiler {
    pub(crate) fn new(device: &wgpu::Device) -> Profiler {
        Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("meddr profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * MAX_PASSES,
            }),
            labels: Vec::new(),
            names: HashMap::new(),
            open: false,
        }
    }

    /// The next pair's timestamp writes for a dispatch of `pipeline`, or `None` when no profile is open or
    /// it is full (later dispatches then go unmeasured, and [`GpuContext::profile_end`] says how many).
    pub(crate) fn next_pass(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        if !self.open {
            return None;
        }
        let i = self.labels.len() as u32;
        let label = self
            .names
            .get(pipeline)
            .cloned()
            .unwrap_or_else(|| "?".into());
        self.labels.push(label);
        if i >= MAX_PASSES {
            return None;
        }
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }
}

impl GpuContext {
    /// Whether this context can profile (created with `profile` on an adapter with timestamp queries).
    pub fn can_profile(&self) -> bool {
        self.profiler.is_some()
    }

    /// Starts measuring every dispatch recorded from now on (on any thread). Errors: the context cannot
    /// profile ([`EngineError::Invalid`]).
    pub fn profile_begin(&self) -> Result<()> {
        let p = self.profiler.as_ref().ok_or_else(|| {
            crate::error::invalid(
                "profile_begin",
                "profile",
                0u64,
                "this context was created without timestamp queries (ContextOptions::profile, and an adapter \
                 with TIMESTAMP_QUERY)",
            )
        })?;
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        p.labels.clear();
        p.open = true;
        Ok(())
    }

    /// Ends the profile after the GPU has run everything recorded in it (this call waits for the device to
    /// go idle), and returns the GPU time per kernel family, largest first, plus the number of dispatches
    /// beyond [`MAX_PASSES`] that went unmeasured.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_end(&self) -> Result<(Vec<KernelTime>, usize)> {
        let p = self.profiler.as_ref().ok_or_else(|| {
            crate::error::invalid("profile_end", "profile", 0u64, "no profile is possible")
        })?;
        let (labels, bytes) = {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            p.open = false;
            let labels = std::mem::take(&mut p.labels);
            let n = (labels.len() as u32).min(MAX_PASSES);
            if n > 0 {
                let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile resolve"),
                    size: u64::from(2 * n) * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let mut enc = self.device.create_command_encoder(&Default::default());
                enc.resolve_query_set(&p.queries, 0..2 * n, &resolve, 0);
                drop(p);
                let bytes = {
                    self.queue.submit([enc.finish()]);
                    pollster::block_on(self.read_bytes(&resolve, 0, u64::from(2 * n) * 8))?
                };
                (labels, bytes)
            } else {
                (labels, Vec::new())
            }
        };
        let period = f64::from(self.queue.get_timestamp_period());
        let stamps: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let mut by: HashMap<&str, (u32, f64)> = HashMap::new();
        for (i, label) in labels.iter().enumerate().take(stamps.len() / 2) {
            let (a, b) = (stamps[2 * i], stamps[2 * i + 1]);
            let e = by.entry(label.as_str()).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += b.saturating_sub(a) as f64 * period / 1e6;
        }
        let mut out: Vec<KernelTime> = by
            .into_iter()
            .map(|(k, (dispatches, ms))| KernelTime {
                kernel: k.to_string(),
                dispatches,
                ms,
            })
            .collect();
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.kernel.cmp(&b.kernel)));
        if labels.is_empty() {
            return Err(crate::error::EngineError::Invalid {
                op: "profile_end",
                field: "dispatches",
                value: 0,
                why: "nothing was recorded while the profile was open".into(),
            });
        }
        Ok((out, labels.len().saturating_sub(MAX_PASSES as usize)))
    }
}
