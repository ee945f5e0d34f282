//! GSCo specialists: timm image classifiers fine-tuned per dataset, run with burn on the engine's own wgpu
//! device (or burn's CPU backend), reproducing upstream `inference_specialist.py`: the MedMNIST image →
//! `ToTensor` → `Normalize(mean, std)` → zero padding to the input size → `model(x)` for MoED and
//! `forward_features(x)` **unpooled** for RAD.
//!
//! ```no_run
//! # fn main() -> Result<(), meddr_specialist::SpecialistError> {
//! use meddr_specialist::{cpu_device, ConfigOverrides, FeatureMode, Specialist};
//! let s = Specialist::load("pcam_resnet18_64".as_ref(), &ConfigOverrides::default(), &cpu_device())?;
//! let x = s.preprocess_file(std::fs::read("slide.png").unwrap().as_slice())?;
//! let out = s.run(&x, 1, Some(FeatureMode::Unpooled))?;
//! println!("{:?}", out.predictions[0].predicted_names(&s.config.label_names));
//! # Ok(()) }
//! ```

pub mod arch;
pub mod config;
pub mod error;
pub mod weights;

use std::io::Read;
use std::path::{Path, PathBuf};

use burn_tensor::{Tensor, TensorData};
use meddr_image::RgbImage;
use sha2::{Digest, Sha256};

pub use arch::{Architecture, NetOutput, Network};
pub use burn_tensor::Device;
pub use config::{ConfigOverrides, SpecialistConfig, SpecialistPaths, Task};
pub use error::{Result, SpecialistError};

/// Largest `model.safetensors` accepted (ViT-L/16 in f32 is 1.2 GB).
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// Which features RAD compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureMode {
    /// Upstream's: `forward_features` flattened without pooling (ResNet-18: 512·7·7 = 25,088 values).
    Unpooled,
    /// Opt-in for very large reference sets: the classifier's input (`num_features` values: the average
    /// pool for CNNs, the class token for ViTs). Not what upstream computes; the neighbours differ.
    Pooled,
}

impl FeatureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureMode::Unpooled => "unpooled",
            FeatureMode::Pooled => "pooled",
        }
    }

    pub fn parse(s: &str) -> Option<FeatureMode> {
        match s {
            "unpooled" => Some(FeatureMode::Unpooled),
            "pooled" => Some(FeatureMode::Pooled),
            _ => None,
        }
    }
}

/// burn's pure-Rust CPU backend (for machines without a GPU).
#[cfg(not(target_arch = "wasm32"))]
pub fn cpu_device() -> Device {
    Device::flex()
}

/// Registers an existing wgpu device with burn, so the specialists run on the same device and queue as the
/// MedDr engine (`shared/docs/toolchain.md`: burn on our wgpu device). Call it once per device: each call
/// registers a new burn runtime. The device should have been created with the adapter's full feature set.
pub fn wgpu_device(
    instance: &burn_tensor::wgpu::wgpu::Instance,
    adapter: &burn_tensor::wgpu::wgpu::Adapter,
    device: &burn_tensor::wgpu::wgpu::Device,
    queue: &burn_tensor::wgpu::wgpu::Queue,
) -> Result<Device> {
    let setup = burn_tensor::wgpu::WgpuSetup {
        instance: instance.clone(),
        adapter: adapter.clone(),
        device: device.clone(),
        queue: queue.clone(),
        backend: adapter.get_info().backend,
    };
    Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| SpecialistError::Device(e.to_string()))
}

/// Reads a whole file, refusing more than `limit` bytes (checked before reading).
pub fn read_capped(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let io = |cause| SpecialistError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if size > limit {
        return Err(SpecialistError::TooLarge {
            path: path.to_path_buf(),
            what,
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

/// One image's classification (upstream: `nn.Softmax(dim=1)` + argmax, or `nn.Sigmoid()` > 0.5).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    /// Class indices: exactly one (multi-class) or the positive labels in label order (multi-label).
    pub predicted: Vec<usize>,
}

impl Prediction {
    /// Softmax/argmax or sigmoid/threshold in f32, as PyTorch computes them on the CPU.
    pub fn from_logits(logits: Vec<f32>, task: Task) -> Prediction {
        let (probabilities, predicted) = match task {
            Task::MultiClass => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                let p: Vec<f32> = exps.iter().map(|&e| e / sum).collect();
                // torch.argmax: the first maximum.
                let mut best = 0;
                for (i, &v) in p.iter().enumerate() {
                    if v > p[best] {
                        best = i;
                    }
                }
                (p, vec![best])
            }
            Task::MultiLabel => {
                let p: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
                let pos = p
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v > 0.5)
                    .map(|(i, _)| i)
                    .collect();
                (p, pos)
            }
        };
        Prediction {
            logits,
            probabilities,
            predicted,
        }
    }

    pub fn predicted_names<'a>(&self, labels: &'a [String]) -> Vec<&'a str> {
        self.predicted
            .iter()
            .filter_map(|&i| labels.get(i).map(String::as_str))
            .collect()
    }
}

/// Output of [`Specialist::run`] for a batch.
#[derive(Clone, Debug)]
pub struct BatchOutput {
    pub predictions: Vec<Prediction>,
    /// `[B, D]` row-major, not normalised; present when features were asked for.
    pub features: Option<Vec<f32>>,
    pub feature_dim: usize,
    /// `[B, num_features]`: the classifier's input (always read back; it is small).
    pub pooled: Vec<f32>,
}

/// A loaded specialist.
pub struct Specialist {
    pub config: SpecialistConfig,
    /// SHA-256 (hex) of `model.safetensors`: the identity an index records, so it is never queried with
    /// features of another network.
    pub weights_sha256: String,
    /// Where the specialist came from (its folder, or a name given by the caller).
    pub source: PathBuf,
    net: Network,
    device: Device,
}

impl Specialist {
    /// Loads `DIR/config.json` and `DIR/model.safetensors`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(dir: &Path, overrides: &ConfigOverrides, device: &Device) -> Result<Specialist> {
        let p = SpecialistPaths::in_dir(dir);
        if !dir.is_dir() {
            return Err(SpecialistError::Io {
                path: dir.to_path_buf(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such folder (a specialist is a folder with config.json and model.safetensors)",
                ),
            });
        }
        let cfg = read_capped(&p.config, config::MAX_CONFIG_BYTES, "a config.json")?;
        let weights = read_capped(&p.weights, MAX_WEIGHTS_BYTES, "specialist weights")?;
        let mut s = Self::from_bytes(&cfg, &p.config, &weights, &p.weights, overrides, device)?;
        s.source = dir.to_path_buf();
        Ok(s)
    }

    /// Loads from the two files' bytes (the browser's path); the paths only name them in messages.
    pub fn from_bytes(
        config_json: &[u8],
        config_path: &Path,
        weights: &[u8],
        weights_path: &Path,
        overrides: &ConfigOverrides,
        device: &Device,
    ) -> Result<Specialist> {
        let config = SpecialistConfig::from_json(config_json, config_path, overrides)?;
        let mut store =
            weights::WeightStore::new(weights, weights_path, &config.architecture_name, device)?;
        let net = Network::load(&mut store, config.architecture, config.num_classes)?;
        store.finish()?;
        let weights_sha256 = hex(&Sha256::digest(weights));
        Ok(Specialist {
            config,
            weights_sha256,
            source: config_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            net,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A short name for messages and JSON: the folder name.
    pub fn name(&self) -> String {
        self.source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.config.architecture_name.clone())
    }

    /// Values per image of the features in `mode`.
    pub fn feature_dim(&self, mode: FeatureMode) -> usize {
        match mode {
            FeatureMode::Unpooled => self
                .config
                .architecture
                .feature_shape(self.config.input_size)
                .iter()
                .product(),
            FeatureMode::Pooled => self.config.architecture.num_features(),
        }
    }

    /// Elements of one preprocessed image: `3 · input_size²`.
    pub fn input_len(&self) -> usize {
        3 * (self.config.input_size as usize).pow(2)
    }

    /// Upstream's transform of a uint8 RGB image of side `img_size` (an image of another size is first
    /// resized to `img_size`², Pillow bicubic): `(f32(u8) / 255 − mean) / std` in f32, then zero padding to
    /// `input_size` (after normalisation, so the border is 0). `[3, S, S]`.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let s = self.config.img_size;
        if img.width == 0
            || img.height == 0
            || img.data.len() != img.width as usize * img.height as usize * 3
        {
            return Err(SpecialistError::Input(format!(
                "image buffer of {} bytes does not hold {}x{} RGB pixels",
                img.data.len(),
                img.width,
                img.height
            )));
        }
        let resized;
        let img = if img.width != s || img.height != s {
            resized = meddr_image::resize_bicubic(img, s, s);
            &resized
        } else {
            img
        };
        let plane = meddr_image::normalize_chw(img, self.config.mean, self.config.std);
        let n = self.config.input_size as usize;
        let (l, t, _, _) = self.config.padding();
        let (l, t, s) = (l as usize, t as usize, s as usize);
        let mut out = vec![0f32; 3 * n * n];
        for c in 0..3 {
            for y in 0..s {
                let src = &plane[(c * s + y) * s..(c * s + y + 1) * s];
                let dst = (c * n + t + y) * n + l;
                out[dst..dst + s].copy_from_slice(src);
            }
        }
        Ok(out)
    }

    /// Decodes an image file (JPEG, PNG, BMP, TIFF, WebP; Pillow's `convert('RGB')`) and preprocesses it.
    pub fn preprocess_file(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let img = meddr_image::decode_rgb(bytes)?;
        self.preprocess(&img)
    }

    /// Runs `batch` preprocessed images (`batch · 3 · S²` values) through the network: predictions always,
    /// features in `features` mode when asked. One upload, one forward, one readback per output.
    /// Blocks until the results are read back (native only; the browser cannot block: [`Specialist::run_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(
        &self,
        inputs: &[f32],
        batch: usize,
        features: Option<FeatureMode>,
    ) -> Result<BatchOutput> {
        // burn's own synchronous readback is a `block_on` of the same future natively.
        pollster::block_on(self.run_async(inputs, batch, features))
    }

    /// [`Specialist::run`] with asynchronous readback (WebGPU's `mapAsync`): what the browser uses.
    pub async fn run_async(
        &self,
        inputs: &[f32],
        batch: usize,
        features: Option<FeatureMode>,
    ) -> Result<BatchOutput> {
        let n = self.config.input_size as usize;
        let want = batch.checked_mul(self.input_len());
        if batch == 0 || want != Some(inputs.len()) {
            return Err(SpecialistError::Input(format!(
                "{} input values for a batch of {batch} images of 3x{n}x{n}",
                inputs.len()
            )));
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            return Err(SpecialistError::Input(format!(
                "input value {i} is not finite"
            )));
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(inputs.to_vec(), [batch, 3, n, n]),
            &self.device,
        );
        let out = self.net.forward(x);
        let logits = read(out.logits).await?;
        let c = self.config.num_classes;
        let predictions = logits
            .chunks_exact(c)
            .map(|l| Prediction::from_logits(l.to_vec(), self.config.task))
            .collect();
        let pooled = read(out.pooled).await?;
        let (features, feature_dim) = match features {
            None => (None, 0),
            Some(FeatureMode::Unpooled) => (
                Some(read(out.features).await?),
                self.feature_dim(FeatureMode::Unpooled),
            ),
            Some(FeatureMode::Pooled) => {
                (Some(pooled.clone()), self.feature_dim(FeatureMode::Pooled))
            }
        };
        Ok(BatchOutput {
            predictions,
            features,
            feature_dim,
            pooled,
        })
    }
}

/// Reads a device tensor back as f32 values. burn's work on a shared queue is finished once this returns.
async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| SpecialistError::Device(format!("reading back a result: {e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| SpecialistError::Device(format!("reading back a result: {e:?}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
