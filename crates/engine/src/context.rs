//! Device setup, buffer helpers, readback and the pipeline cache.

use crate::profile::Profiler;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wgpu::util::DeviceExt;

use crate::error::{invalid, EngineError, Result};
use crate::tensor::{DType, GpuBuffer};

/// How to set up the device.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Ignore shader-f16 even when present: exercises the f32 path that WebGPU without f16 takes.
    pub force_f32: bool,
    /// Adapter preference (discrete GPU first by default).
    pub power_preference: wgpu::PowerPreference,
    /// Override the matvec work split (default: [`MatvecShape::for_device`]); tests run both shapes.
    pub matvec_shape: Option<MatvecShape>,
    /// Request every feature the adapter offers (not only shader-f16). Set it when another wgpu library
    /// (burn/cubecl for the GSCo specialists) will share this device: cubecl picks its kernels from the
    /// device's features and expects the adapter's full set (`shared/docs/toolchain.md`, burn).
    pub all_adapter_features: bool,
    /// Limits to request instead of the adapter's own (each at most the adapter's, or the device request
    /// fails naming the limit). Tests force small binding sizes to exercise splitting and refusals.
    pub limits: Option<wgpu::Limits>,
    /// Request timestamp queries (when the adapter has them) so that [`GpuContext::profile_begin`] can time
    /// every kernel on the GPU (`meddr bench --profile`).
    pub profile: bool,
    /// Do not use subgroup operations even where the adapter has them: the default GPU matvec then reduces
    /// rows in workgroup memory ([`MatvecShape::COOPERATIVE`]), the path of adapters without subgroups.
    pub no_subgroups: bool,
}

/// How the decode matvec spreads a weight's rows over invocations.
///
/// Written `ROWSxLANES` (workgroup reduction), `ROWSxLANESs` (subgroup reduction) or `ROWSxLANESsN` (N rows
/// per subgroup), e.g. `2x32`, `2x32s`, `8x32s4`, by `Display`/`FromStr` (`meddr bench --matvec-shape`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatvecShape {
    pub rows_per_group: u32,
    /// Invocations that share one row (a power of two); 1 means no reduction. With `subgroup` it only sizes
    /// the workgroup ([`MatvecShape::workgroup_size`]): a row then takes one whole subgroup, whatever size
    /// the driver gives it.
    pub lanes_per_row: u32,
    /// Each row is walked by one subgroup and summed with `subgroupAdd` (no workgroup memory, no barriers),
    /// and Q4_K weights are read 16 bytes per load; needs the adapter's `subgroups` feature.
    pub subgroup: bool,
    /// With `subgroup`: rows a subgroup walks side by side (1 = one at a time). For types with a multi-row
    /// kernel (Q4_K, Q6_K) each lane reads x once for all of them and keeps that many weight loads in flight;
    /// other types walk the rows one after another. The workgroup then has
    /// `rows_per_group / rows_per_subgroup × lanes_per_row` invocations.
    pub rows_per_subgroup: u32,
}

impl MatvecShape {
    /// GPUs without subgroups: 32 lanes per row keep each row's reads together, two rows fill a 64-wide
    /// workgroup, and each row's lanes are summed in workgroup memory.
    pub const COOPERATIVE: MatvecShape = MatvecShape {
        rows_per_group: 2,
        lanes_per_row: 32,
        subgroup: false,
        rows_per_subgroup: 1,
    };
    /// GPUs with subgroups: the same 64-wide workgroups, a subgroup per row (llama.cpp's Vulkan matvec
    /// also reduces with subgroup operations where it can).
    pub const SUBGROUP: MatvecShape = MatvecShape {
        rows_per_group: 2,
        lanes_per_row: 32,
        subgroup: true,
        rows_per_subgroup: 1,
    };
    /// CPU drivers (lavapipe, SwiftShader): a row per invocation. Their SIMD lanes gain nothing from
    /// neighbouring addresses, and a reduction costs barriers (coroutine switches) per row.
    pub const ROW_PER_LANE: MatvecShape = MatvecShape {
        rows_per_group: 32,
        lanes_per_row: 1,
        subgroup: false,
        rows_per_subgroup: 1,
    };

    /// The default for a device of this type, `subgroups` telling whether subgroup operations are enabled.
    pub fn for_device(device_type: wgpu::DeviceType, subgroups: bool) -> MatvecShape {
        if device_type == wgpu::DeviceType::Cpu {
            Self::ROW_PER_LANE
        } else if subgroups {
            Self::SUBGROUP
        } else {
            Self::COOPERATIVE
        }
    }

    /// Invocations per workgroup: `rows_per_group / rows_per_subgroup × lanes_per_row`.
    pub fn workgroup_size(self) -> u32 {
        self.rows_per_group / self.rows_per_subgroup.max(1) * self.lanes_per_row
    }

    /// Several invocations per row (GPU-style work split), whichever way they are summed.
    pub fn cooperative(self) -> bool {
        self.subgroup || self.lanes_per_row > 1
    }
}

impl std::fmt::Display for MatvecShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match (self.subgroup, self.rows_per_subgroup) {
            (false, _) => String::new(),
            (true, 0 | 1) => "s".to_string(),
            (true, r) => format!("s{r}"),
        };
        write!(f, "{}x{}{s}", self.rows_per_group, self.lanes_per_row)
    }
}

impl std::str::FromStr for MatvecShape {
    type Err = String;

    /// `ROWSxLANES[s[N]]`: rows ≥ 1, lanes a power of two, at most 256 invocations per workgroup (WebGPU's
    /// default `maxComputeInvocationsPerWorkgroup`); `s` asks for the subgroup reduction and `sN` for N rows
    /// per subgroup (1 to 8, dividing the rows).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let (t, subgroup, per_subgroup) = match t.find(['s', 'S']) {
            Some(i) => {
                let n = &t[i + 1..];
                let per = if n.is_empty() {
                    1
                } else {
                    n.parse::<u32>()
                        .map_err(|_| format!("rows per subgroup {n:?} is not a whole number"))?
                };
                (&t[..i], true, per)
            }
            None => (t, false, 1),
        };
        let (r, l) = t.split_once(['x', 'X']).ok_or_else(|| {
            format!(
                "{s:?} is not ROWSxLANES, ROWSxLANESs or ROWSxLANESsN (e.g. 2x32, 2x32s, 8x32s4)"
            )
        })?;
        let rows: u32 = r
            .trim()
            .parse()
            .map_err(|_| format!("rows {r:?} is not a whole number"))?;
        let lanes: u32 = l
            .trim()
            .parse()
            .map_err(|_| format!("lanes {l:?} is not a whole number"))?;
        if !(1..=8).contains(&per_subgroup) || rows % per_subgroup != 0 {
            return Err(format!(
                "{s:?}: rows per subgroup must be 1 to 8 and divide the rows ({rows})"
            ));
        }
        if rows == 0
            || !lanes.is_power_of_two()
            || (rows / per_subgroup).saturating_mul(lanes) > 256
        {
            return Err(format!(
                "{s:?}: rows must be ≥ 1, lanes a power of two, and rows / rows per subgroup × lanes ≤ 256"
            ));
        }
        Ok(MatvecShape {
            rows_per_group: rows,
            lanes_per_row: lanes,
            subgroup,
            rows_per_subgroup: per_subgroup,
        })
    }
}

/// What the engine runs on, for logs and capability decisions.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    /// shader-f16 enabled (and therefore an f16 KV cache).
    pub f16: bool,
    /// Subgroup operations enabled (the `subgroups` feature): the GPU matvec reduces rows with them.
    pub subgroups: bool,
    pub limits: wgpu::Limits,
    pub matvec_shape: MatvecShape,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver {:?}), f16 {}, subgroups {}, matvec {}, max storage binding {} MiB, max buffer {} MiB",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.f16,
            self.subgroups,
            self.matvec_shape,
            self.limits.max_storage_buffer_binding_size >> 20,
            self.limits.max_buffer_size >> 20
        )
    }
}

/// A wgpu device plus everything the kernels need; create one per process and share it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: DeviceInfo,
    /// The instance and adapter the device came from, kept so that other wgpu users (burn's
    /// `WgpuSetup`) can register this very device instead of opening a second one.
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    params: Mutex<ParamArena>,
    params_buffer: wgpu::Buffer,
    /// Size of `params_buffer`.
    param_arena_bytes: u64,
    /// Bound where a kernel's optional input (bias, layer scale, image features) is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// Set by the device-lost callback and the uncaptured-error handler; checked at every readback.
    health: Arc<Health>,
    /// Split attention's partial results (grown on demand, never shrunk; see `attention.wgsl`).
    attention_scratch: Mutex<Option<wgpu::Buffer>>,
    /// Present when the context was created to profile (see `profile.rs`).
    pub(crate) profiler: Option<Mutex<Profiler>>,
}

/// What went wrong with the device, if anything.
#[derive(Default)]
struct Health {
    lost: Mutex<Option<String>>,
    /// The first uncaptured error (validation, out of memory): results read after it cannot be trusted.
    error: Mutex<Option<String>>,
}

impl GpuContext {
    /// Picks an adapter and requests a device with the adapter's own limits (WebGPU's defaults are far smaller:
    /// 128 MiB bindings at most, and real GPUs offer several GiB) and shader-f16 when available.
    pub async fn new(options: ContextOptions) -> Result<GpuContext> {
        let request = |desc: wgpu::InstanceDescriptor| async move {
            let instance = wgpu::Instance::new(desc);
            instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: options.power_preference,
                    force_fallback_adapter: false,
                    ..Default::default()
                })
                .await
                .map(|adapter| (instance, adapter))
        };
        #[cfg(not(target_arch = "wasm32"))]
        let adapter = {
            let from_env = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            if std::env::var_os("WGPU_BACKEND").is_some() {
                request(from_env).await
            } else {
                // Vulkan/Metal/DX12 first: probing GL (EGL/Wayland) on a headless machine only prints noise.
                let mut primary = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
                primary.backends = wgpu::Backends::PRIMARY;
                match request(primary).await {
                    Ok(a) => Ok(a),
                    Err(_) => request(from_env).await,
                }
            }
        };
        #[cfg(target_arch = "wasm32")]
        let adapter = request(wgpu::InstanceDescriptor::new_without_display_handle()).await;
        let (instance, adapter) = adapter.map_err(|e| EngineError::NoAdapter(e.to_string()))?;
        Self::from_adapter(instance, adapter, options).await
    }

    /// Native convenience: [`GpuContext::new`] on the current thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: ContextOptions) -> Result<GpuContext> {
        pollster::block_on(Self::new(options))
    }

    /// Creates the device on a caller-chosen adapter of `instance`.
    pub async fn from_adapter(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        options: ContextOptions,
    ) -> Result<GpuContext> {
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16) && !options.force_f32;
        let mut features = if options.all_adapter_features {
            adapter.features()
        } else {
            wgpu::Features::empty()
        };
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        // Subgroups natively only: wgpu keeps the feature native-only for now (its WebGPU mapping may
        // differ from the browsers'), and the kernel uses `subgroup_id`/`num_subgroups`, which WebGPU's
        // `subgroups` does not have.
        let subgroups = !cfg!(target_arch = "wasm32")
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && !options.no_subgroups;
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let matvec_shape = options
            .matvec_shape
            .unwrap_or_else(|| MatvecShape::for_device(adapter.get_info().device_type, subgroups));
        if matvec_shape.subgroup && !subgroups {
            return Err(EngineError::RequestDevice(format!(
                "matvec shape {matvec_shape} needs subgroup operations, which {} (or these options) do not offer",
                adapter.get_info().name
            )));
        }
        let profile =
            options.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        if profile {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let limits = options.limits.clone().unwrap_or_else(|| adapter.limits());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("meddr-engine"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::RequestDevice(e.to_string()))?;
        // wgpu's default handler panics on any uncaptured error; record it instead and fail the next readback
        // with it, so that a driver or validation failure is an error, never a panic or a wrong answer.
        let health = Arc::new(Health::default());
        let h = health.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = match reason {
                wgpu::DeviceLostReason::Destroyed => "destroyed".to_string(),
                wgpu::DeviceLostReason::Unknown => format!("the driver said: {message}"),
            };
            if let Ok(mut l) = h.lost.lock() {
                l.get_or_insert(why);
            }
        });
        let h = health.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut first) = h.error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }));
        let a = adapter.get_info();
        let info = DeviceInfo {
            name: a.name,
            backend: a.backend,
            device_type: a.device_type,
            driver: format!("{} {}", a.driver, a.driver_info).trim().to_string(),
            f16,
            subgroups,
            limits: device.limits(),
            matvec_shape,
        };
        // Never above the device's buffer limit (forced small limits made it a validation error); a full
        // arena falls back to a buffer per op, so a smaller one only costs speed.
        let param_arena_bytes = PARAM_ARENA_BYTES
            .min(device.limits().max_buffer_size / 256 * 256)
            .max(256);
        let params_buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("op params"),
            size: param_arena_bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let profiler = profile.then(|| Mutex::new(Profiler::new(&device)));
        Ok(GpuContext {
            device,
            queue,
            info,
            instance,
            adapter,
            pipelines: Mutex::new(HashMap::new()),
            params: Mutex::new(ParamArena {
                staged: Vec::new(),
                open_encoders: 0,
            }),
            params_buffer,
            param_arena_bytes,
            profiler,
            attention_scratch: Mutex::new(None),
            dummy,
            health,
        })
    }

    /// `Ok` while the device works: [`EngineError::DeviceLost`] once it is lost (driver reset, GPU removed,
    /// `Device::destroy`), [`EngineError::Gpu`] after an uncaptured wgpu error. Every readback checks it.
    pub fn check_healthy(&self) -> Result<()> {
        if let Some(why) = self.health.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(EngineError::DeviceLost(why));
        }
        if let Some(e) = self.health.error.lock().ok().and_then(|l| l.clone()) {
            return Err(EngineError::Gpu(e));
        }
        Ok(())
    }

    /// A failed map: the device's state says more than the map error when the device is gone.
    fn map_failed(&self, e: String) -> EngineError {
        match self.check_healthy() {
            Err(dev) => dev,
            Ok(()) => EngineError::Map(e),
        }
    }

    /// Largest single storage binding (and buffer) the kernels may use, kept below 4 GiB so that byte
    /// offsets fit the kernels' u32 arithmetic.
    pub fn max_binding_bytes(&self) -> u64 {
        let l = &self.info.limits;
        (l.max_storage_buffer_binding_size
            .min(l.max_buffer_size)
            .min(u32::MAX as u64 - 3)
            / 4)
            * 4
    }

    /// A storage buffer of at least `floats` f32s for split attention's partials. It is shared by every
    /// attention dispatch: each dispatch's combine runs before the next attention in the same queue order.
    pub(crate) fn attention_scratch(&self, floats: u64) -> Result<wgpu::Buffer> {
        let bytes = floats
            .checked_mul(4)
            .filter(|&b| b <= self.max_binding_bytes())
            .ok_or_else(|| {
                invalid(
                    "attention",
                    "partials",
                    floats,
                    "exceed the largest binding",
                )
            })?;
        let mut s = self
            .attention_scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = s.as_ref().filter(|b| b.size() >= bytes) {
            return Ok(b.clone());
        }
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("attention partials"),
            size: bytes.max(16).next_power_of_two(),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        *s = Some(b.clone());
        Ok(b)
    }

    /// KV cache element type: f16 with shader-f16, f32 otherwise.
    pub fn kv_dtype(&self) -> DType {
        if self.info.f16 {
            DType::F16
        } else {
            DType::F32
        }
    }

    /// Allocates an uninitialised (zeroed by wgpu) buffer of `len` elements.
    pub fn zeros(&self, dtype: DType, len: u64, label: &str) -> Result<GpuBuffer> {
        if dtype == DType::F16 && !self.info.f16 {
            return Err(EngineError::NoF16 {
                op: "zeros",
                field: "dtype",
            });
        }
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| invalid("zeros", "len", len, "overflows"))?;
        let size = (bytes.div_ceil(4) * 4).max(4);
        if size > self.max_binding_bytes() {
            return Err(EngineError::BufferTooLarge {
                label: label.to_string(),
                needed: size,
                limit: self.max_binding_bytes(),
            });
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            // UNIFORM: the matvec may read its input vector through a uniform binding (see matvec_quant.wgsl).
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer { buffer, len, dtype })
    }

    /// Uploads host f32 values (activations, norm weights, biases).
    pub fn upload_f32(&self, data: &[f32], label: &str) -> Result<GpuBuffer> {
        self.upload_pod(DType::F32, data, label)
    }

    /// Uploads host u32 values (token ids).
    pub fn upload_u32(&self, data: &[u32], label: &str) -> Result<GpuBuffer> {
        self.upload_pod(DType::U32, data, label)
    }

    fn upload_pod<T: bytemuck::Pod>(
        &self,
        dtype: DType,
        data: &[T],
        label: &str,
    ) -> Result<GpuBuffer> {
        let buf = self.zeros(dtype, data.len() as u64, label)?;
        if !data.is_empty() {
            self.queue
                .write_buffer(&buf.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(buf)
    }

    /// Overwrites elements from `offset` (e.g. the next token id) without a new allocation.
    pub fn write_u32(&self, buf: &GpuBuffer, offset: u64, data: &[u32]) -> Result<()> {
        buf.expect("write_u32", "buf", DType::U32)?;
        buf.check_span("write_u32", "offset", offset, data.len() as u64)?;
        self.queue
            .write_buffer(&buf.buffer, offset * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites f32 elements from `offset`.
    pub fn write_f32(&self, buf: &GpuBuffer, offset: u64, data: &[f32]) -> Result<()> {
        buf.expect("write_f32", "buf", DType::F32)?;
        buf.check_span("write_f32", "offset", offset, data.len() as u64)?;
        self.queue
            .write_buffer(&buf.buffer, offset * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// A recorder for ops; submit it with [`GpuContext::submit`] (which uploads the ops' parameters).
    pub fn encoder(&self) -> Recorder {
        self.arena().open_encoders += 1;
        Recorder {
            enc: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("meddr"),
                }),
            pass: None,
        }
    }

    /// Submits one recording (a whole decode step should be one submit). The parameters its ops staged go
    /// to the GPU in one write just before it; the arena restarts once no recording is pending, so a decode
    /// step reuses the same offsets every time.
    pub fn submit(&self, recorder: Recorder) -> wgpu::SubmissionIndex {
        let commands = recorder.finish();
        // The write and the submit happen under one lock: another thread's next write to the same offsets
        // must land after this submission, never between this write and this submit.
        let mut a = self.arena();
        if !a.staged.is_empty() {
            self.queue.write_buffer(&self.params_buffer, 0, &a.staged);
        }
        let index = self.queue.submit([commands]);
        a.open_encoders = a.open_encoders.saturating_sub(1);
        if a.open_encoders == 0 {
            a.staged.clear();
        }
        index
    }

    /// Runs `record` with `cache` serving the bind groups of its dispatches on this thread (lent and returned,
    /// so the caller keeps ownership). Only dispatches whose parameters sit in the arena are cached.
    pub fn with_bind_group_cache<T>(
        &self,
        cache: &mut BindGroupCache,
        record: impl FnOnce() -> T,
    ) -> T {
        let lent = std::mem::take(cache);
        let previous = ACTIVE_BIND_GROUPS.with(|a| a.borrow_mut().replace(lent));
        let out = record();
        *cache = ACTIVE_BIND_GROUPS
            .with(|a| std::mem::replace(&mut *a.borrow_mut(), previous))
            .unwrap_or_default();
        out
    }

    fn arena(&self) -> std::sync::MutexGuard<'_, ParamArena> {
        self.params.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stages `params` in the arena: `(offset, size)` of its binding, or `None` when the arena is full.
    fn stage_params(&self, params: &[u32]) -> Option<(u64, u64)> {
        let align = u64::from(self.info.limits.min_uniform_buffer_offset_alignment.max(4));
        let bytes: &[u8] = bytemuck::cast_slice(params);
        let size = (bytes.len() as u64).max(16).div_ceil(16) * 16;
        let mut a = self.arena();
        let offset = (a.staged.len() as u64).div_ceil(align) * align;
        if offset + size > self.param_arena_bytes {
            return None;
        }
        a.staged.resize(offset as usize, 0);
        a.staged.extend_from_slice(bytes);
        a.staged.resize((offset + size) as usize, 0);
        Some((offset, size))
    }

    /// Blocks until the GPU is idle (natively; the browser polls by itself).
    pub fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }

    /// Registers for the completion of everything submitted so far; `last` is the newest of those
    /// submissions (natively [`GpuContext::wait_done`] waits for it only, not for work submitted later).
    /// Register before submitting more: the prefill waits for chunk k − 1 while chunk k runs, so the GPU
    /// never idles on the host's check between chunks.
    pub fn work_done(&self, last: wgpu::SubmissionIndex) -> WorkDone {
        let (tx, rx) = oneshot();
        self.queue.on_submitted_work_done(move || tx.send(()));
        WorkDone { rx, last }
    }

    /// Waits for a [`GpuContext::work_done`] registration (in the browser by yielding to the event loop until
    /// WebGPU's `onSubmittedWorkDone` resolves, so the page's messages, e.g. a stop request, are handled).
    pub async fn wait_done(&self, done: WorkDone) -> Result<()> {
        self.check_healthy()?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(done.last),
                timeout: None,
            });
        }
        #[cfg(target_arch = "wasm32")]
        let _ = done.last;
        done.rx.await;
        self.check_healthy()
    }

    /// Copies `len_bytes` from `offset_bytes` of `src` to the host (rounded to 4-byte multiples).
    pub async fn read_bytes(
        &self,
        src: &wgpu::Buffer,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> Result<Vec<u8>> {
        let size = len_bytes.div_ceil(4) * 4;
        if size == 0 {
            return Ok(Vec::new());
        }
        if offset_bytes % 4 != 0
            || offset_bytes
                .checked_add(size)
                .is_none_or(|e| e > src.size())
        {
            return Err(invalid(
                "read",
                "offset_bytes",
                offset_bytes,
                format!(
                    "with {size} bytes does not fit the {}-byte buffer",
                    src.size()
                ),
            ));
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(src, offset_bytes, &staging, 0, size);
        self.submit(enc);
        let (tx, rx) = oneshot();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            tx.send(r.map_err(|e| e.to_string()))
        });
        self.check_healthy()?;
        self.poll_wait();
        rx.await.map_err(|e| self.map_failed(e))?;
        self.check_healthy()?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| self.map_failed(e.to_string()))?;
            view[..len_bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// Maps the first `len` bytes of a caller-owned MAP_READ buffer whose copy was recorded in an earlier
    /// submit, so a decode step can record its readback copy in its own (single) submit.
    pub(crate) async fn map_read(&self, staging: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
        self.map_read_after(staging, len, None).await
    }

    /// [`GpuContext::map_read`] of a buffer that submission `after` wrote: natively it waits for that
    /// submission only, not for steps queued behind it (waiting for all of them would leave the GPU idle
    /// between each token's read and the next queue_greedy_step, undoing the queueing). In the browser the
    /// map resolves as soon as its own buffer is ready either way.
    pub(crate) async fn map_read_after(
        &self,
        staging: &wgpu::Buffer,
        len: u64,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot();
        staging.map_async(wgpu::MapMode::Read, 0..len, move |r| {
            tx.send(r.map_err(|e| e.to_string()))
        });
        self.check_healthy()?;
        match after {
            #[cfg(not(target_arch = "wasm32"))]
            Some(index) => {
                let _ = self.device.poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                });
            }
            _ => self.poll_wait(),
        }
        rx.await.map_err(|e| self.map_failed(e))?;
        self.check_healthy()?;
        let data = {
            let view = staging
                .get_mapped_range(0..len)
                .map_err(|e| self.map_failed(e.to_string()))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// Reads a whole f32 buffer back.
    pub async fn read_f32(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        buf.expect("read_f32", "buf", DType::F32)?;
        let bytes = self.read_bytes(&buf.buffer, 0, buf.len * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads `len` u32 elements from `offset` (one u32 per decode step for the sampled token).
    pub async fn read_u32(&self, buf: &GpuBuffer, offset: u64, len: u64) -> Result<Vec<u32>> {
        buf.expect("read_u32", "buf", DType::U32)?;
        buf.check_span("read_u32", "offset", offset, len)?;
        let bytes = self.read_bytes(&buf.buffer, offset * 4, len * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads an f16 buffer (the KV cache) back as f32.
    pub async fn read_f16_as_f32(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        buf.expect("read_f16", "buf", DType::F16)?;
        let bytes = self.read_bytes(&buf.buffer, 0, buf.len * 2).await?;
        Ok(bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(buf))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f16_as_f32_blocking(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f16_as_f32(buf))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32_blocking(&self, buf: &GpuBuffer, offset: u64, len: u64) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32(buf, offset, len))
    }

    /// Returns the cached pipeline `key`, compiling `source()` on first use.
    pub(crate) fn pipeline(
        &self,
        key: &str,
        entry: &str,
        source: impl FnOnce() -> String,
    ) -> wgpu::ComputePipeline {
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return p.clone();
        }
        // Compile outside the lock: shader compilation is slow on CPU drivers and other threads may need
        // unrelated pipelines meanwhile. A rare duplicate compile is harmless.
        let src = source();
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(p) = &self.profiler {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .names
                .insert(pipeline.clone(), key.to_string());
        }
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert(pipeline)
            .clone()
    }

    /// Records one dispatch into the recording's open compute pass: binding 0 is a fresh uniform buffer with `params` (each recorded op needs its
    /// own, since all writes land before the single submit), then `buffers` at their binding numbers.
    pub(crate) fn dispatch(
        &self,
        enc: &mut Recorder,
        pipeline: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) {
        let bound: Vec<(u32, wgpu::BindingResource<'_>)> = buffers
            .iter()
            .map(|&(binding, b)| (binding, b.as_entire_binding()))
            .collect();
        self.dispatch_bound(enc, pipeline, params, &bound, groups)
    }

    /// [`GpuContext::dispatch`] with explicit binding ranges.
    pub(crate) fn dispatch_bound(
        &self,
        enc: &mut Recorder,
        pipeline: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        // Parameters live in the shared arena (one upload per submit) or, when it is full, in a buffer of
        // their own.
        let own;
        let resource = match self.stage_params(params) {
            Some((offset, size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params_buffer,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
            None => {
                own = self
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: bytemuck::cast_slice(params),
                        usage: wgpu::BufferUsages::UNIFORM,
                    });
                own.as_entire_binding()
            }
        };
        let key = cache_key(pipeline, &resource, buffers);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource,
        }];
        entries.extend(buffers.iter().map(|(binding, b)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: b.clone(),
        }));
        let create = || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        };
        let cached = key.and_then(|key| {
            ACTIVE_BIND_GROUPS.with(|active| {
                let mut active = active.borrow_mut();
                let cache = active.as_mut()?;
                if cache.groups.len() >= BIND_GROUP_CACHE_MAX {
                    cache.groups.clear();
                }
                Some(cache.groups.entry(key).or_insert_with(create).clone())
            })
        });
        let bind_group = cached.unwrap_or_else(create);
        let mut profiler = self
            .profiler
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()));
        // A profiled dispatch gets a pass of its own: timestamps are written at pass boundaries.
        let timestamp_writes = profiler.as_mut().and_then(|p| p.next_pass(pipeline));
        let profiled = timestamp_writes.is_some();
        if profiled {
            enc.end_pass();
        }
        let pass = enc.pass.get_or_insert_with(|| {
            enc.enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes,
                })
                .forget_lifetime()
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if profiled {
            enc.end_pass();
        }
    }

    /// Splits `n` workgroups over x and y (each ≤ the per-dimension limit, 65535 by default); kernels rebuild
    /// the linear index as `wid.x + wid.y · num_workgroups.x`.
    pub(crate) fn grid(&self, op: &'static str, n: u64) -> Result<[u32; 3]> {
        let max = u64::from(self.info.limits.max_compute_workgroups_per_dimension.max(1));
        if n == 0 {
            return Ok([0, 0, 0]);
        }
        let x = n.min(max);
        let y = n.div_ceil(x);
        if y > max {
            return Err(invalid(op, "workgroups", n, format!("exceeds {max}²")));
        }
        Ok([x as u32, y as u32, 1])
    }
}

/// Bind groups of recordings that repeat exactly (a decode step: the same pipelines, buffers and parameter
/// offsets every token), owned by whoever records them (a `GpuModel`) so they die with its buffers. Making
/// ~450 bind groups per token is the main host cost of a step, and in a browser each one crosses to the GPU
/// process.
#[derive(Default)]
pub struct BindGroupCache {
    groups: HashMap<BindKey, wgpu::BindGroup>,
}

impl BindGroupCache {
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Pipeline plus every binding as (slot, buffer, offset, size).
type BindKey = (
    wgpu::ComputePipeline,
    Vec<(u32, wgpu::Buffer, u64, Option<u64>)>,
);

/// A cache that keeps missing (keys that never repeat) is reset rather than grown without bound.
const BIND_GROUP_CACHE_MAX: usize = 16384;

thread_local! {
    /// The cache lent to the recording on this thread by [`GpuContext::with_bind_group_cache`].
    static ACTIVE_BIND_GROUPS: std::cell::RefCell<Option<BindGroupCache>> =
        const { std::cell::RefCell::new(None) };
}

/// The cache key of a dispatch whose parameters live in the arena; `None` (never cached) otherwise.
fn cache_key(
    pipeline: &wgpu::ComputePipeline,
    params: &wgpu::BindingResource<'_>,
    buffers: &[(u32, wgpu::BindingResource<'_>)],
) -> Option<BindKey> {
    let part = |slot: u32, r: &wgpu::BindingResource<'_>| match r {
        wgpu::BindingResource::Buffer(b) => {
            Some((slot, b.buffer.clone(), b.offset, b.size.map(|s| s.get())))
        }
        _ => None,
    };
    let mut parts = vec![part(0, params)?];
    for (slot, r) in buffers {
        parts.push(part(*slot, r)?);
    }
    Some((pipeline.clone(), parts))
}

/// Bytes of op parameters one submit can carry in the arena (256-byte slots: 4096 ops; a MedDr decode step
/// records about 900).
const PARAM_ARENA_BYTES: u64 = 1 << 20;

/// Op parameters staged on the host while an encoder is recorded, uploaded once at submit: a decode step
/// would otherwise create one uniform buffer per op.
struct ParamArena {
    staged: Vec<u8>,
    open_encoders: usize,
}

/// A pending [`GpuContext::work_done`] registration.
pub struct WorkDone {
    rx: Receiver<()>,
    last: wgpu::SubmissionIndex,
}

/// Minimal one-shot channel for map_async's callback, so readback is a plain future on the web too.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);
struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    fn send(self, v: T) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.value = Some(v);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Ops recorded for one submit: a command encoder whose dispatches share one compute pass until a copy needs
/// the encoder. One pass per decode step instead of one per dispatch: in the browser every pass is a
/// round of commands through the GPU process (WebGPU orders and synchronises dispatches within a pass
/// exactly as across passes, so results are the same).
pub struct Recorder {
    enc: wgpu::CommandEncoder,
    /// The open pass; `'static` through `forget_lifetime`, so the encoder is locked until it ends.
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Recorder {
    /// Ends the open compute pass, if any (before the encoder itself records anything).
    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// `copy_buffer_to_buffer` after the dispatches recorded so far.
    pub fn copy_buffer_to_buffer(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.end_pass();
        self.enc
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// The recorded commands.
    pub fn finish(mut self) -> wgpu::CommandBuffer {
        self.end_pass();
        self.enc.finish()
    }
}
