//! `meddr specialist …` and `meddr gsco …`: GSCo's specialists, reference index, collaborative prompt and
//! evaluation, on the same device as MedDr.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use meddr_cli::{CpuBackend, GpuBackend, GpuOptions, VisionLoad};
use meddr_engine::{ContextOptions, GpuContext};
use meddr_gguf::GgufFile;
use meddr_gsco::dataset::{FolderSet, Labels, MedMnistSplit};
use meddr_gsco::shard::{self, Shard};
use meddr_gsco::{eval, Collaboration, Gsco, Index, IndexDtype, Template};
use meddr_image::RgbImage;
use meddr_reference::GgufStore;
use meddr_runtime::{
    check_request, encode_prompt, generate, tokenizer_from_gguf_header, Backend, GenerationOptions,
    ModelInfo, StopPolicy, TokenEvent, UserText,
};
use meddr_specialist::{ConfigOverrides, Device, FeatureMode, Specialist, Task};
use serde_json::{json, Value};

use crate::{Device as Where, DISCLAIMER};

const SPECIALIST_EXAMPLES: &str = "\
Examples:
  meddr specialist predict --specialist pcam_resnet18_64 --image slide.png
  meddr specialist predict --specialist my_timm_model --img-size 28 --labels a,b,c --image x.png --json

A specialist folder is timm's Hugging Face layout: config.json (architecture, num_classes, label_names,
pretrained_cfg with mean/std/input_size, and GSCo's img_size and task) and model.safetensors.
tests/py/timm_to_specialist.py converts a timm .pth checkpoint into one.

Research aid, not a medical device: do not use for diagnosis.";

const GSCO_EXAMPLES: &str = "\
Examples:
  # 1. Index the labelled reference cases once (MedMNIST .npz split, or a folder + labels CSV):
  meddr gsco index --specialist pcam_resnet18_64 --medmnist pcam.npz --split train -o pcam.gscoidx
  # 2. Ask MedDr with the specialists' diagnoses and the most similar cases in the prompt:
  meddr gsco run -m meddr-q4_k_m.gguf --specialist pcam_resnet18_64 --index pcam.gscoidx \\
      --template pcam200 --image slide.png
  # 3. Evaluate over a test split (resumable: rerun the same command to continue):
  meddr gsco eval -m meddr-q4_k_m.gguf --specialist pcam_resnet18_64 --index pcam.gscoidx \\
      --template pcam200 --medmnist pcam.npz --split test --out pcam-results.jsonl
  # 4. The same on a cluster: shard K of N per job (Slurm: --array=1-4, K = $SLURM_ARRAY_TASK_ID), then merge:
  meddr gsco eval ... --shard 2/4 --out pcam-results.2of4.jsonl
  meddr gsco merge pcam-results.*of4.jsonl -o pcam-results.jsonl

Research aid, not a medical device: do not use for diagnosis.";

#[derive(Subcommand)]
pub enum SpecialistCommand {
    /// Classify one image with a timm specialist: logits, probabilities and predicted labels.
    #[command(after_help = SPECIALIST_EXAMPLES)]
    Predict(PredictArgs),
    /// Measure images/s of a specialist (forward with unpooled features, as index building runs it).
    Bench(SpecialistBenchArgs),
}

#[derive(Args)]
pub struct SpecialistBenchArgs {
    #[command(flatten)]
    s: SpecialistOpts,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed batches (after one warm-up batch).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, value_enum, default_value_t = Where::Gpu)]
    device: Where,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum GscoCommand {
    /// Build a reference-case index (RAD) from a labelled set with a specialist.
    #[command(after_help = GSCO_EXAMPLES)]
    Index(IndexArgs),
    /// Specialists' diagnoses (MoED) + similar cases (RAD) in the prompt, then MedDr's answer.
    #[command(after_help = GSCO_EXAMPLES)]
    Run(RunArgs),
    /// Evaluate GSCo over a labelled test set: per-image records (appended, resumable) and summary metrics.
    #[command(after_help = GSCO_EXAMPLES)]
    Eval(EvalArgs),
    /// Join the results files of `gsco eval --shard K/N` (K = 1…N) into the file one unsharded run writes,
    /// and print its summary metrics.
    #[command(after_help = GSCO_EXAMPLES)]
    Merge(MergeArgs),
    /// Benchmark retrieval: build a random index of N references and time exact top-10 search.
    BenchSearch(BenchSearchArgs),
}

#[derive(Args)]
pub struct BenchSearchArgs {
    /// Reference cases.
    #[arg(long, default_value_t = 10_000)]
    n_ref: usize,
    /// Feature dimension (512 = pooled ResNet-18, 25088 = unpooled).
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Queries searched in one batch.
    #[arg(long, default_value_t = 16)]
    queries: usize,
    /// Stored feature type of the random index.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Where the index file goes (default: a temporary file, removed afterwards).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Where::Gpu)]
    device: Where,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct SpecialistOpts {
    /// Specialist folder (config.json + model.safetensors). Repeat for several (MoED: one entry each).
    #[arg(long = "specialist", required = true)]
    specialists: Vec<PathBuf>,
    /// Dataset image side for a plain timm config without GSCo's `img_size` (all specialists).
    #[arg(long)]
    img_size: Option<u32>,
    /// Task for a config without GSCo's `task`.
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Comma-separated label names for a config without `label_names`.
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    MultiClass,
    MultiLabel,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    s: SpecialistOpts,
    /// Image (JPEG, PNG, BMP, TIFF, WebP); resized to the specialist's img_size if it differs (Pillow bicubic).
    #[arg(long)]
    image: PathBuf,
    /// gpu: burn on the wgpu device MedDr uses (Vulkan, Metal, DX12); cpu: burn's pure-Rust CPU backend.
    #[arg(long, value_enum, default_value_t = Where::Gpu, hide_possible_values = true)]
    device: Where,
    /// Print one JSON object ({"architecture", "labels", "logits", "probabilities", "predicted", …}).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DataArgs {
    /// MedMNIST .npz file ({split}_images uint8 [N,S,S,3] or [N,S,S], {split}_labels [N,L]).
    #[arg(long, conflicts_with_all = ["images", "labels_csv"])]
    medmnist: Option<PathBuf>,
    /// Which split of the .npz (default: train for `index`, test for `eval`).
    #[arg(long)]
    split: Option<String>,
    /// Folder of images (with --labels-csv: columns image,label; multi-label: names joined by '/').
    #[arg(long, requires = "labels_csv")]
    images: Option<PathBuf>,
    /// Labels CSV for --images: header `image,label`; `image` relative to the folder; `label` a label name or
    /// class index (multi-label: names joined by '/', `none` or empty for no label).
    #[arg(long, requires = "images")]
    labels_csv: Option<PathBuf>,
}

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    s: SpecialistOpts,
    #[command(flatten)]
    data: DataArgs,
    /// Output index file.
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// Stored feature type (f16 halves the file; distances move by ~1e-5).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Opt-in: index pooled features (the classifier's input, e.g. 512 values for ResNet-18) instead of
    /// upstream's unpooled ones (25,088): ~49× smaller, but the neighbours are not upstream's.
    #[arg(long)]
    pooled: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// gpu: the wgpu device (Vulkan, Metal, DX12); cpu: burn's pure-Rust CPU backend.
    #[arg(long, value_enum, default_value_t = Where::Gpu, hide_possible_values = true)]
    device: Where,
    /// Print one JSON summary object instead of text and a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

#[derive(Args)]
pub struct CollabArgs {
    /// GGUF model file (meddr-quantize output).
    #[arg(short = 'm', long)]
    model: PathBuf,
    #[command(flatten)]
    s: SpecialistOpts,
    /// Reference index (meddr gsco index); it was built by one of the --specialist folders.
    #[arg(long)]
    index: PathBuf,
    /// Similar cases written into the prompt.
    #[arg(long, default_value_t = 10)]
    top_n: usize,
    /// Task prompt: `pcam200` (built in) or a template file with ###RAD### and ###MOED### placeholders
    /// (newlines become spaces and 4 spaces one, as upstream folds its template).
    #[arg(long)]
    template: String,
    /// MedDr's answer length limit (upstream's GSCo setting: 512; greedy, stops at <|im_end|>).
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// gpu: MedDr and the specialists on one wgpu device; cpu: burn's CPU backend + the f32 reference.
    #[arg(long, value_enum, default_value_t = Where::Gpu)]
    device: Where,
    /// GPU: use f32 kernels even where shader-f16 exists.
    #[arg(long)]
    force_f32: bool,
    /// How control tokens in the GSCo prompt (the template, and labels from the specialists' and index's
    /// files) are read: `upstream` parses them as chat markup, as upstream does; `literal` as plain text.
    #[arg(long, value_enum, default_value_t = crate::UserTextArg::Upstream)]
    user_text: crate::UserTextArg,
    /// Print one JSON object (run: moed, rad, prompt, answer, tokens; eval: the summary metrics).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    c: CollabArgs,
    /// The image to diagnose.
    #[arg(long)]
    image: PathBuf,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    c: CollabArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Results file (JSON lines, appended; an existing file from the same settings is resumed).
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate only shard K of N (1 ≤ K ≤ N, as Slurm numbers `--array=1-N`): batches of 8 images are
    /// dealt round robin, batch b to shard (b mod N) + 1. Each shard writes its own --out (resumable);
    /// `meddr gsco merge` joins the N files into what one unsharded run writes.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
}

#[derive(Args)]
pub struct MergeArgs {
    /// The results files of `gsco eval --shard K/N`, K = 1…N, of one run, in any order.
    #[arg(required = true, value_name = "SHARD_FILE")]
    shards: Vec<PathBuf>,
    /// The merged results file: the bytes an unsharded run writes, written whole or not at all.
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Print the summary metrics as one JSON object (the object of `gsco eval --json`).
    #[arg(long)]
    json: bool,
}

fn overrides(s: &SpecialistOpts) -> Result<ConfigOverrides> {
    if let Some(l) = &s.labels {
        if let Some(i) = l.iter().position(|x| x.trim().is_empty()) {
            bail!("--labels: name {} of {:?} is empty", i + 1, l);
        }
    }
    Ok(ConfigOverrides {
        img_size: s.img_size,
        task: s.task.map(|t| match t {
            TaskArg::MultiClass => Task::MultiClass,
            TaskArg::MultiLabel => Task::MultiLabel,
        }),
        label_names: s
            .labels
            .as_ref()
            .map(|l| l.iter().map(|x| x.trim().to_string()).collect()),
    })
}

/// The device: on `gpu`, one wgpu device shared by burn and (for run/eval) the MedDr engine.
struct Devices {
    burn: Device,
    ctx: Option<Arc<GpuContext>>,
}

fn devices(w: Where, force_f32: bool) -> Result<Devices> {
    match w {
        Where::Cpu => Ok(Devices {
            burn: meddr_specialist::cpu_device(),
            ctx: None,
        }),
        Where::Gpu => {
            let ctx = GpuContext::new_blocking(ContextOptions {
                force_f32,
                all_adapter_features: true,
                ..Default::default()
            })
            .context("opening the GPU (use --device cpu on machines without one)")?;
            let burn = meddr_specialist::wgpu_device(
                &ctx.instance,
                &ctx.adapter,
                &ctx.device,
                &ctx.queue,
            )?;
            Ok(Devices {
                burn,
                ctx: Some(Arc::new(ctx)),
            })
        }
    }
}

fn load_specialists(s: &SpecialistOpts, device: &Device) -> Result<Vec<Specialist>> {
    let o = overrides(s)?;
    s.specialists
        .iter()
        .map(|d| Specialist::load(d, &o, device).map_err(anyhow::Error::from))
        .collect()
}

fn read_rgb(path: &Path) -> Result<RgbImage> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .len();
    if len > crate::MAX_IMAGE_FILE_BYTES {
        bail!(
            "image {} is {len} bytes, above the {}-byte limit",
            path.display(),
            crate::MAX_IMAGE_FILE_BYTES
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let (img, notes) = meddr_image::decode_rgb_with_notes(&bytes)
        .with_context(|| format!("image {}", path.display()))?;
    for n in notes {
        eprintln!("meddr: warning: image {}: {n}", path.display());
    }
    Ok(img)
}

fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

pub fn specialist(cmd: SpecialistCommand) -> Result<()> {
    let a = match cmd {
        SpecialistCommand::Predict(a) => a,
        SpecialistCommand::Bench(b) => return specialist_bench(b),
    };
    let dev = devices(a.device, false)?;
    let specs = load_specialists(&a.s, &dev.burn)?;
    let img = read_rgb(&a.image)?;
    let mut out = Vec::new();
    for s in &specs {
        let x = s
            .preprocess(&img)
            .with_context(|| format!("image {}", a.image.display()))?;
        let r = s.run(&x, 1, None)?;
        let p = &r.predictions[0];
        out.push(json!({
            "specialist": s.name(),
            "architecture": s.config.architecture_name,
            "task": s.config.task.as_str(),
            "labels": s.config.label_names,
            "logits": p.logits,
            "probabilities": p.probabilities,
            "predicted": p.predicted_names(&s.config.label_names),
        }));
    }
    if a.json {
        // One specialist: one object (the documented contract); several: an array of them.
        let v = if out.len() == 1 {
            out.remove(0)
        } else {
            Value::Array(out)
        };
        println!("{v}");
    } else {
        for o in &out {
            println!(
                "{} ({}):",
                o["specialist"].as_str().unwrap_or(""),
                o["architecture"].as_str().unwrap_or("")
            );
            let labels = o["labels"].as_array().cloned().unwrap_or_default();
            let probs = o["probabilities"].as_array().cloned().unwrap_or_default();
            for (l, p) in labels.iter().zip(&probs) {
                println!(
                    "  {:>8.4}  {}",
                    p.as_f64().unwrap_or(f64::NAN),
                    l.as_str().unwrap_or("")
                );
            }
            let names: Vec<&str> = o["predicted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "  predicted: {}",
                if names.is_empty() {
                    "(no label above 0.5)".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
        eprintln!("{DISCLAIMER}");
    }
    Ok(())
}

/// A labelled set, opened for streaming.
enum DataSet {
    MedMnist(MedMnistSplit),
    Folder(FolderSet),
}

impl DataSet {
    fn open(d: &DataArgs, default_split: &str, spec: &Specialist) -> Result<DataSet> {
        match (&d.medmnist, &d.images, &d.labels_csv) {
            (Some(p), _, _) => Ok(DataSet::MedMnist(MedMnistSplit::open(p, d.split.as_deref().unwrap_or(default_split))?)),
            (None, Some(dir), Some(csv)) => Ok(DataSet::Folder(FolderSet::open(dir, csv, &spec.config.label_names, spec.config.task)?)),
            _ => bail!("give the labelled images: --medmnist FILE.npz [--split S], or --images DIR --labels-csv FILE"),
        }
    }
    fn count(&self) -> usize {
        match self {
            DataSet::MedMnist(m) => m.count,
            DataSet::Folder(f) => f.files.len(),
        }
    }
    fn labels(&self) -> &Labels {
        match self {
            DataSet::MedMnist(m) => &m.labels,
            DataSet::Folder(f) => &f.labels,
        }
    }
    fn source(&self) -> String {
        match self {
            DataSet::MedMnist(m) => format!("{}:{}", m.path.display(), m.split),
            DataSet::Folder(f) => format!("{} ({})", f.dir.display(), f.csv.display()),
        }
    }
    fn label_path(&self) -> PathBuf {
        match self {
            DataSet::MedMnist(m) => m.path.clone(),
            DataSet::Folder(f) => f.csv.clone(),
        }
    }
    /// Streams images in batches of `batch` aligned to multiples of `batch` (the last one shorter), the
    /// batches that start below `limit` and that `want(start)`, whole: a batch's contents never depend on
    /// `limit`.
    fn for_each_batch(
        &mut self,
        batch: usize,
        limit: usize,
        want: &dyn Fn(usize) -> bool,
        f: &mut dyn FnMut(usize, &[RgbImage]) -> meddr_gsco::Result<()>,
    ) -> meddr_gsco::Result<()> {
        match self {
            DataSet::MedMnist(m) => m.for_each_batch(batch, |start, imgs| {
                if start >= limit || !want(start) {
                    return Ok(());
                }
                f(start, imgs)
            }),
            DataSet::Folder(fs) => {
                let n = fs.files.len();
                let mut start = 0;
                while start < n.min(limit) {
                    let end = (start + batch.max(1)).min(n);
                    if !want(start) {
                        start = end;
                        continue;
                    }
                    let mut imgs = Vec::new();
                    for p in &fs.files[start..end] {
                        imgs.push(read_rgb(p).map_err(|e| {
                            meddr_gsco::GscoError::Invalid(meddr_cli::error_message(&e))
                        })?);
                    }
                    f(start, &imgs)?;
                    start = end;
                }
                Ok(())
            }
        }
    }
}

/// Images per `gsco eval` batch (specialists and retrieval run on a batch at once).
const EVAL_BATCH: usize = 8;

pub fn gsco(cmd: GscoCommand) -> Result<()> {
    match cmd {
        GscoCommand::Index(a) => index(a),
        GscoCommand::Run(a) => run(a),
        GscoCommand::Eval(a) => eval_cmd(a),
        GscoCommand::Merge(a) => merge_cmd(a),
        GscoCommand::BenchSearch(a) => bench_search(a),
    }
}

fn where_str(w: Where) -> &'static str {
    match w {
        Where::Gpu => "gpu",
        Where::Cpu => "cpu",
    }
}

fn specialist_bench(a: SpecialistBenchArgs) -> Result<()> {
    if a.batch == 0 || a.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let dev = devices(a.device, false)?;
    let spec = load_specialists(&a.s, &dev.burn)?.remove(0);
    // A deterministic non-constant input (a ramp): the speed does not depend on the values.
    let n = spec.input_len() * a.batch;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    spec.run(&x, a.batch, Some(FeatureMode::Unpooled))?;
    let t = std::time::Instant::now();
    for _ in 0..a.iters {
        spec.run(&x, a.batch, Some(FeatureMode::Unpooled))?;
    }
    let s = t.elapsed().as_secs_f64();
    let out = json!({
        "specialist": spec.name(),
        "architecture": spec.config.architecture_name,
        "device": where_str(a.device),
        "adapter": dev.ctx.as_ref().map(|c| c.info.to_string()),
        "batch": a.batch,
        "iters": a.iters,
        "input_size": spec.config.input_size,
        "images_per_s": (a.batch * a.iters) as f64 / s.max(1e-9),
        "ms_per_batch": s * 1e3 / a.iters as f64,
        "peak_rss_bytes": crate::peak_rss_bytes(),
    });
    if a.json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().into_iter().flatten() {
            println!("{k:>16}: {v}");
        }
    }
    Ok(())
}

fn bench_search(a: BenchSearchArgs) -> Result<()> {
    if a.n_ref < 10 || a.dim == 0 || a.queries == 0 {
        bail!("--n-ref must be at least 10 (the search returns the top 10), --dim and --queries at least 1");
    }
    let dev = devices(a.device, false)?;
    let (path, temp) = match &a.out {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("meddr-bench-{}.gscoidx", std::process::id())),
            true,
        ),
    };
    let dtype = match a.dtype {
        DtypeArg::F32 => IndexDtype::F32,
        DtypeArg::F16 => IndexDtype::F16,
    };
    let meta = meddr_gsco::IndexMeta {
        specialist_name: "bench-random".into(),
        specialist_architecture: "none".into(),
        specialist_sha256: "0".repeat(64),
        feature_mode: FeatureMode::Pooled,
        feature_dim: a.dim,
        task: Task::MultiClass,
        label_names: vec!["a".into(), "b".into()],
        source: "random".into(),
        count: a.n_ref,
        dtype,
    };
    let labels = Labels {
        columns: 1,
        values: (0..a.n_ref).map(|i| (i % 2) as u32).collect(),
    };
    // xorshift: reproducible features without a dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let t = std::time::Instant::now();
    let mut w = meddr_gsco::IndexWriter::create(&path, &meta, &labels, true)?;
    let rows_per_push = (1usize << 22) / a.dim + 1;
    let mut done = 0;
    while done < a.n_ref {
        let k = rows_per_push.min(a.n_ref - done);
        let f: Vec<f32> = (0..k * a.dim).map(|_| next()).collect();
        w.push(&f)?;
        done += k;
    }
    w.finish()?;
    let build_s = t.elapsed().as_secs_f64();
    let rss_after_build = crate::peak_rss_bytes();
    let index = Index::open(&path)?;
    let q: Vec<f32> = (0..a.queries * a.dim).map(|_| next()).collect();
    // Warm-up (pipeline compilation), then the timed search.
    index.search(&q[..a.dim], 10, &dev.burn)?;
    let t = std::time::Instant::now();
    let hits = index.search(&q, 10, &dev.burn)?;
    let search_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if temp {
        let _ = std::fs::remove_file(&path);
    }
    let out = json!({
        "n_ref": a.n_ref,
        "dim": a.dim,
        "queries": a.queries,
        "dtype": dtype.as_str(),
        "device": where_str(a.device),
        "index_bytes": bytes,
        "build_s": build_s,
        "build_peak_rss_bytes": rss_after_build,
        "search_s": search_s,
        "ms_per_query": search_s * 1e3 / a.queries as f64,
        "first_neighbour": hits.first().and_then(|h| h.first()).map(|n| json!({"index": n.index, "distance": n.distance})),
        "peak_rss_bytes": crate::peak_rss_bytes(),
    });
    if a.json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().into_iter().flatten() {
            println!("{k:>20}: {v}");
        }
    }
    Ok(())
}

fn index(a: IndexArgs) -> Result<()> {
    if a.s.specialists.len() != 1 {
        bail!(
            "an index is built by exactly one --specialist (got {})",
            a.s.specialists.len()
        );
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.out.is_dir() {
        bail!(
            "-o {}: is a folder; give the index file's path",
            a.out.display()
        );
    }
    if a.out.exists() && !a.force {
        bail!("{} exists (use --force to replace it)", a.out.display());
    }
    let parent = a
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "-o {}: folder {} does not exist",
            a.out.display(),
            parent.display()
        );
    }
    let dev = devices(a.device, false)?;
    let spec = load_specialists(&a.s, &dev.burn)?.remove(0);
    let mut data = DataSet::open(&a.data, "train", &spec)?;
    let count = data.count();
    let mode = if a.pooled {
        FeatureMode::Pooled
    } else {
        FeatureMode::Unpooled
    };
    let dtype = match a.dtype {
        DtypeArg::F32 => IndexDtype::F32,
        DtypeArg::F16 => IndexDtype::F16,
    };
    let labels = data.labels().clone();
    labels.check(
        &data.label_path(),
        spec.config.task,
        spec.config.num_classes,
    )?;
    let pb = bar(count as u64, "indexing", a.json);
    let t = std::time::Instant::now();
    let source = data.source();
    meddr_gsco::build_index(
        &spec,
        mode,
        count,
        &labels,
        &source,
        &a.out,
        dtype,
        a.force,
        &mut |f| data.for_each_batch(a.batch, usize::MAX, &|_| true, f),
        &mut |done, _| pb.set_position(done as u64),
    )
    .with_context(|| format!("building index {}", a.out.display()))?;
    pb.finish_and_clear();
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    let out = json!({
        "index": a.out.display().to_string(),
        "specialist": spec.name(),
        "architecture": spec.config.architecture_name,
        "weights_sha256": spec.weights_sha256,
        "cases": count,
        "feature_mode": mode.as_str(),
        "feature_dim": spec.feature_dim(mode),
        "dtype": dtype.as_str(),
        "bytes": size,
        "seconds": t.elapsed().as_secs_f64(),
        "source": source,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "indexed {count} case{} ({} features of dimension {}, {}) from {source} with {} in {:.1} s → {} ({size} bytes)",
            if count == 1 { "" } else { "s" },
            mode.as_str(),
            spec.feature_dim(mode),
            dtype.as_str(),
            spec.name(),
            t.elapsed().as_secs_f64(),
            a.out.display()
        );
    }
    Ok(())
}

/// MedDr loaded for GSCo: the model, its tokenizer and info.
struct MedDr {
    backend: Box<dyn Backend>,
    tokenizer: meddr_tokenizer::MedDrTokenizer,
    info: ModelInfo,
    opts: GenerationOptions,
    user_text: UserText,
    /// The control-token warning was printed.
    warned: bool,
}

impl MedDr {
    /// Checks the model file is a MedDr GGUF with a vision tower (header only: fast, before any output or
    /// results file is written). Returns its canonical path and size, its identity in eval settings.
    fn probe(c: &CollabArgs) -> Result<(String, u64)> {
        let file = GgufFile::open_model(&c.model, None)
            .with_context(|| format!("cannot read model {}", c.model.display()))?;
        let info = ModelInfo::from_gguf_header(&file.header)
            .with_context(|| format!("model {}", c.model.display()))?;
        if info.vision.is_none() {
            bail!(
                "model {} has no vision tower; GSCo asks MedDr about the image",
                c.model.display()
            );
        }
        let canon = std::fs::canonicalize(&c.model).unwrap_or_else(|_| c.model.clone());
        Ok((canon.display().to_string(), file.total_len()))
    }

    fn load(c: &CollabArgs, ctx: Option<Arc<GpuContext>>) -> Result<MedDr> {
        let file = GgufFile::open_model(&c.model, None)
            .with_context(|| format!("cannot read model {}", c.model.display()))?;
        let info = ModelInfo::from_gguf_header(&file.header)
            .with_context(|| format!("model {}", c.model.display()))?;
        if info.vision.is_none() {
            bail!(
                "model {} has no vision tower; GSCo asks MedDr about the image",
                c.model.display()
            );
        }
        let tokenizer =
            tokenizer_from_gguf_header(&file.header).context("tokenizer in the GGUF")?;
        // Upstream's GSCo generation: greedy, max_new_tokens 512, stop on eos only.
        let opts = GenerationOptions {
            max_new_tokens: c.max_new_tokens,
            stop: StopPolicy::UpstreamEos,
            ..Default::default()
        };
        let backend: Box<dyn Backend> = match ctx {
            Some(ctx) => Box::new(
                GpuBackend::on_context(
                    ctx,
                    &file,
                    &GpuOptions {
                        force_f32: c.force_f32,
                        context_length: None,
                        vision: VisionLoad::Resident,
                        prefill_chunk: None,
                    },
                )
                .with_context(|| format!("loading {} on the GPU", c.model.display()))?,
            ),
            None => Box::new(
                CpuBackend::load(&GgufStore::from_file(file))
                    .with_context(|| format!("loading {}", c.model.display()))?,
            ),
        };
        Ok(MedDr {
            backend,
            tokenizer,
            info,
            opts,
            user_text: c.user_text.into(),
            warned: false,
        })
    }

    /// MedDr's answer about `img` to `question`. The image goes through MedDr's own preprocessing with
    /// `pad2square` off, as upstream's `RAGDataset` builds its transform.
    fn answer(
        &mut self,
        img: &RgbImage,
        question: &str,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<meddr_runtime::GenerationResult> {
        let v = self
            .info
            .vision
            .as_ref()
            .ok_or_else(|| anyhow!("no vision tower"))?;
        let p = &v.preprocessing;
        let resized = meddr_image::resize_bicubic(img, p.image_size, p.image_size);
        let pixel_values = meddr_image::normalize_chw(&resized, p.mean, p.std);
        let prompt = encode_prompt(&self.tokenizer, &self.info, question, true, self.user_text)?;
        if let Some(w) = prompt.warning("pass `--user-text literal`") {
            // Once per run: an eval would repeat it for every image.
            if !std::mem::replace(&mut self.warned, true) {
                eprintln!("meddr: warning: the GSCo prompt (template, specialist labels, similar cases' labels): {w}");
            }
        }
        let ids = prompt.ids;
        check_request(ids.len(), &self.opts, self.backend.context_length())?;
        let features = self
            .backend
            .encode_image(&pixel_values)
            .map_err(|e| anyhow!("encoding the image: {e}"))?;
        let r = generate(
            self.backend.as_mut(),
            &self.tokenizer,
            &self.info,
            &ids,
            Some(&features),
            &self.opts,
            |ev: &TokenEvent| {
                if on_text(&ev.token.text) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        )?;
        Ok(r)
    }
}

struct Setup {
    specs: Vec<Specialist>,
    index: Index,
    template: Template,
    ctx: Option<Arc<GpuContext>>,
}

fn setup(c: &CollabArgs) -> Result<Setup> {
    let template = Template::from_arg(&c.template)?;
    let index = Index::open(&c.index)?;
    let dev = devices(c.device, c.force_f32)?;
    let specs = load_specialists(&c.s, &dev.burn)?;
    // Check the pairing before MedDr's (long) load.
    Gsco::new(&specs, &index, &template, c.top_n)?;
    Ok(Setup {
        specs,
        index,
        template,
        ctx: dev.ctx,
    })
}

fn run(a: RunArgs) -> Result<()> {
    let st = setup(&a.c)?;
    let img = read_rgb(&a.image)?;
    MedDr::probe(&a.c)?;
    // Everything that can fail on the inputs fails before the first line of output.
    let mut meddr = MedDr::load(&a.c, st.ctx.clone())?;
    let g = Gsco::new(&st.specs, &st.index, &st.template, a.c.top_n)?;
    let collab = g
        .collaborate(std::slice::from_ref(&img))
        .with_context(|| format!("image {}", a.image.display()))?
        .remove(0);
    if !a.c.json {
        println!("Specialists (MoED):");
        for m in &collab.moed {
            let probs: Vec<String> = m
                .prediction
                .probabilities
                .iter()
                .map(|p| format!("{p:.4}"))
                .collect();
            println!(
                "  {} ({}): {}   probabilities [{}]",
                m.specialist,
                m.architecture,
                m.text,
                probs.join(", ")
            );
        }
        println!("Similar cases (RAD) from {}:", st.index.path.display());
        for (k, r) in collab.rad.iter().enumerate() {
            println!(
                "  {:>2}. case {:>6}  {:<24} distance {:.6}",
                k + 1,
                r.index,
                r.label,
                r.distance
            );
        }
        println!("Prompt:\n  {:?}", collab.prompt);
        print!("MedDr: ");
        let _ = std::io::stdout().flush();
    }
    let json_mode = a.c.json;
    let mut stdout = std::io::stdout().lock();
    let r = meddr.answer(&img, &collab.prompt, |t| {
        json_mode
            || stdout
                .write_all(t.as_bytes())
                .and_then(|_| stdout.flush())
                .is_ok()
    })?;
    if json_mode {
        let mut v = Collaboration::to_json(&collab);
        v["answer"] = json!(r.text);
        v["tokens"] = json!(r.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
        v["stop_reason"] = json!(r.stop_reason.as_str());
        v["index"] = json!({"path": st.index.path.display().to_string(), "specialist": st.index.meta.specialist_name, "cases": st.index.meta.count});
        v["disclaimer"] = json!(DISCLAIMER);
        let _ = writeln!(stdout, "{v}");
    } else {
        let _ = writeln!(stdout);
        eprintln!(
            "[{} tokens, stop: {}] {DISCLAIMER}",
            r.tokens.len(),
            r.stop_reason.as_str()
        );
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let st = setup(&a.c)?;
    let g = Gsco::new(&st.specs, &st.index, &st.template, a.c.top_n)?;
    let first = &st.specs[g.retriever];
    let mut data = DataSet::open(&a.data, "test", first)?;
    let task = first.config.task;
    let names = first.config.label_names.clone();
    data.labels().check(&data.label_path(), task, names.len())?;
    if let Some(s) = st
        .specs
        .iter()
        .find(|s| s.config.task != task || s.config.label_names != names)
    {
        bail!("specialist {} has other labels or task than {} ({:?} vs {:?}): an evaluation scores one label set", s.name(), first.name(), s.config.label_names, names);
    }
    let (model_path, model_bytes) = MedDr::probe(&a.c)?;
    let settings = json!({
        "model": model_path,
        "model_bytes": model_bytes,
        "specialists": st.specs.iter().map(|s| s.weights_sha256.clone()).collect::<Vec<_>>(),
        "index": st.index.meta.specialist_sha256,
        "index_cases": st.index.meta.count,
        "index_mode": st.index.meta.feature_mode.as_str(),
        "index_dtype": st.index.meta.dtype.as_str(),
        "index_bytes": std::fs::metadata(&st.index.path).map(|m| m.len()).unwrap_or(0),
        "index_labels": st.index.meta.label_names,
        "top_n": a.c.top_n,
        "template": st.template.text,
        "data": data.source(),
        "max_new_tokens": a.c.max_new_tokens,
        "device": match a.c.device { Where::Gpu => "gpu", Where::Cpu => "cpu" },
    });
    let limit = a.limit.unwrap_or(usize::MAX).min(data.count());
    // A shard's file records its shard, the images the run covers and how they were dealt (crate
    // meddr_gsco::shard); `gsco merge` checks the rest of the settings are the same in every shard.
    let settings = match a.shard {
        Some(sh) => sh.settings(&settings, limit, EVAL_BATCH, task),
        None => settings,
    };
    let mine = |i: usize| a.shard.is_none_or(|sh| sh.owns(i, EVAL_BATCH));
    let mut results = eval::ResultsFile::open(&a.out, &settings)?;
    let total = (0..limit).filter(|&i| mine(i)).count();
    let todo = (0..limit)
        .filter(|&i| mine(i) && !results.done.contains(&i))
        .count();
    let mut meddr = if todo > 0 {
        Some(MedDr::load(&a.c, st.ctx.clone())?)
    } else {
        None
    };
    let pb = bar(total as u64, "evaluating", a.c.json);
    pb.set_position((total - todo) as u64);
    let labels = data.labels().clone();
    // A shard runs only its own batches, whole (the batch is the unit dealt to shards).
    data.for_each_batch(EVAL_BATCH, limit, &mine, &mut |start, imgs| {
        let pending: Vec<usize> = (0..imgs.len())
            .filter(|&k| start + k < limit && !results.done.contains(&(start + k)))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        // The whole aligned batch, even when part of it is done or beyond --limit: the batch's size changes
        // the rounding of the specialists' batched kernels, and a record must not depend on where a run
        // resumed or stopped (crates/cli/tests/crash_safety.rs).
        let collabs = g.collaborate(imgs)?;
        for (k, c) in pending.iter().map(|&k| (k, &collabs[k])) {
            let qid = start + k;
            let truth = labels.row(qid).to_vec();
            let annotation = meddr_gsco::prompt::label_string(&truth, task, &names);
            let m = meddr
                .as_mut()
                .ok_or_else(|| meddr_gsco::GscoError::Invalid("MedDr not loaded".into()))?;
            let r = m.answer(&imgs[k], &c.prompt, |_| true).map_err(|e| {
                meddr_gsco::GscoError::Invalid(format!(
                    "MedDr on image {qid}: {}",
                    meddr_cli::error_message(&e)
                ))
            })?;
            let rad_rows: Vec<Vec<u32>> = c
                .rad
                .iter()
                .map(|nb| st.index.labels.row(nb.index).to_vec())
                .collect();
            let (knn, matched) = eval::score(task, &names, &r.text, &rad_rows);
            results.append(eval::record(
                qid,
                &annotation,
                &truth,
                c,
                &r.text,
                &rad_rows,
                &knn,
                matched.as_deref(),
            ))?;
            pb.inc(1);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    // The summary covers this run's images (ids below --limit, this shard's), each once.
    let records: Vec<Value> = results
        .records
        .iter()
        .filter(|r| {
            r["question_id"]
                .as_u64()
                .is_some_and(|q| (q as usize) < limit && mine(q as usize))
        })
        .cloned()
        .collect();
    let s = eval::summarize(&records, task, &names)?;
    print_summary(&a.out, &s, a.c.top_n, a.c.json, a.shard);
    Ok(())
}

/// Prints `gsco eval`'s summary (text, or one JSON object with `--json`); `gsco merge` prints the same.
fn print_summary(
    results: &Path,
    s: &eval::Summary,
    top_n: usize,
    json_mode: bool,
    shard: Option<Shard>,
) {
    let mut out = json!({
        "results": results.display().to_string(),
        "images": s.images,
        "specialists": s.specialists.iter().map(|(n, m)| json!({"specialist": n, "ACC": m.acc, "AUC": m.auc, "per_class_AUC": m.per_class_auc})).collect::<Vec<_>>(),
        "knn_vote_ACC": s.knn_acc,
        "meddr_ACC": s.meddr_acc,
        "meddr_unmatched_answers": s.meddr_unmatched,
        "disclaimer": DISCLAIMER,
    });
    if let Some(sh) = shard {
        out["shard"] = json!(sh.to_string());
    }
    if json_mode {
        println!("{out}");
        return;
    }
    match shard {
        Some(sh) => println!(
            "shard {sh}: {} images → {} (metrics of this shard; `meddr gsco merge` joins the {} shard files)",
            s.images,
            results.display(),
            sh.n
        ),
        None => println!("{} images → {}", s.images, results.display()),
    }
    println!("{:<32} {:>8} {:>8}", "", "ACC", "AUC");
    for (n, m) in &s.specialists {
        println!(
            "{:<32} {:>8.4} {:>8}",
            format!("specialist {n}"),
            m.acc,
            m.auc.map_or("n/a".into(), |a| format!("{a:.4}"))
        );
    }
    println!(
        "{:<32} {:>8.4}",
        format!("kNN vote (top {top_n})"),
        s.knn_acc
    );
    println!(
        "{:<32} {:>8.4}   ({} of {} answers named no single option)",
        "MedDr + GSCo", s.meddr_acc, s.meddr_unmatched, s.images
    );
    eprintln!("{DISCLAIMER}");
}

/// `gsco merge`: checks the shard files are the N shards of one run, each complete, then writes the
/// unsharded run's file (whole or not at all) and prints its summary.
fn merge_cmd(a: MergeArgs) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if a.shards
        .iter()
        .any(|p| canon(p).is_some() && canon(p) == canon(&a.out))
    {
        bail!(
            "-o {}: is one of the shard files; write the merged file elsewhere",
            a.out.display()
        );
    }
    let m = shard::merge(&a.shards)?;
    let s = eval::summarize(&m.records, m.task, &m.label_names)?;
    shard::write_atomic(&a.out, &m.bytes, a.force)?;
    if !a.json {
        eprintln!(
            "merged {} shard files ({} records) → {}",
            m.shards,
            m.records.len(),
            a.out.display()
        );
    }
    print_summary(&a.out, &s, m.top_n, a.json, None);
    Ok(())
}
