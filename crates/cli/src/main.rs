//! `meddr`: ask MedDr about a medical image from one GGUF file.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use meddr_cli::{report, CpuBackend, GpuBackend, GpuOptions, VisionLoad};
use meddr_gguf::GgufFile;
use meddr_reference::{GgufStore, ModelConfig};
use meddr_runtime::{
    check_request, encode_prompt, generate, tokenizer_from_gguf_header, Backend, GenerationOptions,
    GenerationResult, ModelInfo, SamplingParams, StopPolicy, TokenEvent, UserText,
};
use serde_json::{json, Value};

mod chat;
mod demo;
mod dicom_args;
mod gsco_cmd;
mod serve_cmd;

pub(crate) const DISCLAIMER: &str = "Research aid, not a medical device: do not use for diagnosis.";

/// Images larger than this are refused before reading (a 448² model input never needs more).
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

const EXAMPLES: &str = "\
Examples:
  meddr run        (no model: builds a synthetic demo model once, then asks about the bundled example image)
  meddr run -m meddr-q4_k_m.gguf --image chest.jpg -p \"Describe the findings.\"
  meddr run -m meddr-q4_k_m.gguf --image slide.png -p \"Is this tumor tissue?\" --json --logprobs 5
  meddr run -m meddr-q4_k_m.gguf -p \"Which test first for a suspected kidney stone?\" --temperature 0.7 --top-p 0.9 --seed 1
  meddr info meddr-q4_k_m.gguf

Research aid, not a medical device: do not use for diagnosis.";

#[derive(Parser)]
#[command(
    name = "meddr",
    version,
    about = "Run MedDr (InternVL-Chat-V1-2 medical vision-language model) from one GGUF file",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer a question, optionally about an image (greedy by default, like upstream's demo).
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Measure load time, ViT ms per image, prefill and decode tok/s, bytes read per decoded token and GB/s.
    Bench(BenchArgs),
    /// Show hyper-parameters, tensor types and sizes per component, and a memory plan.
    Info {
        /// GGUF file written by meddr-quantize (its mmproj beside it is read too), or any llama GGUF.
        model: PathBuf,
        /// The vision tower's mmproj GGUF (llama.cpp's split). Default: `<model>.mmproj.gguf` or
        /// `mmproj-<model>.gguf` beside the model, when there is one.
        #[arg(long, value_name = "PATH")]
        mmproj: Option<PathBuf>,
    },
    /// GSCo specialists (timm classifiers on burn): predict an image's labels.
    #[command(subcommand)]
    Specialist(gsco_cmd::SpecialistCommand),
    /// GSCo: specialists' diagnoses and similar reference cases in MedDr's prompt (index, run, eval).
    #[command(subcommand)]
    Gsco(gsco_cmd::GscoCommand),
    /// Interactive multi-turn chat (upstream's history format; the KV cache is kept between turns).
    #[command(after_help = chat::HELP)]
    Chat(chat::ChatArgs),
    /// OpenAI-compatible local server (chat completions with images, completions, streaming).
    #[command(after_help = serve_cmd::HELP)]
    Serve(serve_cmd::ServeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Device {
    /// wgpu engine (Vulkan, Metal, DX12 or GL): weights stay quantized on the GPU.
    Gpu,
    /// f32 reference on the CPU: exact but slow; dequantises the whole file into memory.
    Cpu,
}

/// `--user-text`: see [`UserText`].
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum UserTextArg {
    /// Control tokens in the question are chat markup, as upstream parses them.
    Upstream,
    /// The question is plain text: no control token can come from it.
    Literal,
}

impl From<UserTextArg> for UserText {
    fn from(a: UserTextArg) -> Self {
        match a {
            UserTextArg::Upstream => UserText::Upstream,
            UserTextArg::Literal => UserText::Literal,
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// GGUF model file (meddr-quantize output, or any llama.cpp llama GGUF). None: the demo model (a
    /// synthetic MedDr with random weights, built once into $MEDDR_CACHE or ~/.cache/meddr), asked about the
    /// bundled example image.
    #[arg(short = 'm', long)]
    model: Option<PathBuf>,
    /// The vision tower's mmproj GGUF (llama.cpp's split). Default: `<model>.mmproj.gguf` or
    /// `mmproj-<model>.gguf` beside the model, when there is one.
    #[arg(long, value_name = "PATH")]
    mmproj: Option<PathBuf>,
    /// Image to ask about (JPEG, PNG, BMP, TIFF, WebP, GIF, DICOM).
    #[arg(long)]
    image: Option<PathBuf>,
    #[command(flatten)]
    dicom: dicom_args::DicomArgs,
    /// The question (leading/trailing whitespace is stripped, as upstream does). Required with -m; the demo
    /// asks "Describe the image.".
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// 0 = greedy (upstream's setting).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the K most likely tokens (0 = off; sampling only).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off; sampling only).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Hugging Face repetition penalty over prompt and output (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampling RNG (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Report the log-probability of each token and its K most likely alternatives (≤ 20).
    #[arg(long)]
    logprobs: Option<usize>,
    /// Never stop early: always generate --max-new-tokens tokens.
    #[arg(long, conflicts_with = "stop_on_template_list")]
    ignore_eos: bool,
    /// Stop on any of the Hermes-2 template's stop tokens (2, 6, 7, 8) instead of upstream's eos only.
    #[arg(long)]
    stop_on_template_list: bool,
    /// How control tokens typed in the question (`<|im_end|>`, `<|im_start|>system`) are read: `upstream`
    /// parses them as chat markup, as upstream does (with a warning); `literal` reads them as plain text, for
    /// questions that hold text from documents or other people.
    #[arg(long, value_enum, default_value_t = UserTextArg::Upstream)]
    user_text: UserTextArg,
    /// Print one JSON object (tokens, log-probs, text, stop reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Where to run: the wgpu engine, or the f32 CPU reference (exact, slow, whole model in RAM as f32).
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// GPU: KV-cache positions (default: the model's context length).
    #[arg(long)]
    context_length: Option<u32>,
    /// GPU: encode the image with the vision tower alone and free it before the language model is loaded:
    /// the peak GPU memory is the larger of the two instead of their sum (MedDr at Q4_K_M then fits a
    /// 24 GB card; `meddr info` shows both figures)
    #[arg(long)]
    release_vision: bool,
    /// GPU: use f32 kernels even where shader-f16 exists (the path WebGPU without f16 takes).
    #[arg(long)]
    force_f32: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// The vision tower's mmproj GGUF (llama.cpp's split). Default: `<model>.mmproj.gguf` or
    /// `mmproj-<model>.gguf` beside the model, when there is one.
    #[arg(long, value_name = "PATH")]
    mmproj: Option<PathBuf>,
    /// Prompt length in tokens for the prefill measurement.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Decoded tokens for the decode measurement.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Also time the ViT on an image (models with a vision tower; a synthetic grey image when none is given).
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long)]
    force_f32: bool,
    /// The device's datasheet memory bandwidth in GB/s (e.g. 4800 for an H200): adds the decode step's
    /// fraction of it. The fraction of the bandwidth a streaming-read kernel measures is always given.
    #[arg(long, value_name = "GB_PER_S")]
    peak_gb_s: Option<f64>,
    /// Also time prefill and decode with this many tokens already in the KV cache (llama-bench's `-d`),
    /// comma-separated, e.g. `--depths 0,512,1536,4000`: how the cost grows with the context.
    #[arg(long, value_delimiter = ',', value_name = "TOKENS")]
    depths: Vec<u32>,
    /// Skip the image encode even when the model has a vision tower (language-model timings only).
    #[arg(long, conflicts_with = "image")]
    text_only: bool,
    /// Also time every kernel on the GPU (timestamp queries) for one image encode, the prefill and one decode
    /// step, after the timed runs: where the time goes, per kernel family.
    #[arg(long)]
    profile: bool,
    /// Decode matvec work split as ROWSxLANES (rows per workgroup × invocations per row; a trailing `s`
    /// sums each row with subgroup operations, a subgroup per row; `sN` gives each subgroup N rows at once,
    /// e.g. 8x32s4), overriding the device default (2x32s on GPUs with subgroups, 2x32 without, 32x1 on
    /// CPU drivers): for tuning on new hardware.
    #[arg(long, value_name = "ROWSxLANES[s[N]]", value_parser = clap::value_parser!(meddr_engine::MatvecShape))]
    matvec_shape: Option<meddr_engine::MatvecShape>,
    /// Size of the streaming-read measurement's buffer in MiB (0 skips it).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    read_bandwidth_mib: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// On a headless machine libwayland, probed by the Vulkan loader while wgpu enumerates adapters, prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." twice when the variable is missing: not
/// an error of ours, and not one at all without a display. Pointing it at the temp directory (for this process
/// only, before any thread starts) makes the probe fail quietly, as it does on any machine without Wayland.
fn quiet_display_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| !Path::new(&d).is_dir()) {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}

fn main() -> ExitCode {
    quiet_display_probe();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Run(a) => run(a),
        Command::Bench(b) => bench(b),
        Command::Info { model, mmproj } => info(&model, mmproj.as_deref()),
        Command::Specialist(c) => gsco_cmd::specialist(c),
        Command::Gsco(c) => gsco_cmd::gsco(c),
        Command::Chat(c) => chat::chat(c),
        Command::Serve(s) => serve_cmd::serve(s),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = meddr_cli::error_message(&e);
            eprintln!("meddr: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The model's weights on `device`: the wgpu engine, or the f32 CPU reference.
pub(crate) fn load_backend(
    path: &Path,
    file: GgufFile,
    device: Device,
    gopts: &GpuOptions,
) -> Result<Box<dyn Backend>> {
    Ok(match device {
        Device::Gpu => Box::new(
            GpuBackend::load(&file, gopts)
                .with_context(|| format!("loading {} on the GPU", path.display()))?,
        ),
        Device::Cpu => Box::new(
            CpuBackend::load(&GgufStore::from_file(file))
                .with_context(|| format!("loading {}", path.display()))?,
        ),
    })
}

/// "No vision tower" for an image request; a MedDr language model without its mmproj says where it looked.
fn no_vision(info: &ModelInfo, what: &str) -> anyhow::Error {
    if info.format_version > 0 {
        anyhow!(
            "this MedDr language model has no vision tower beside it, but {what}: put its mmproj file \
             (<model>.mmproj.gguf, written by meddr-quantize next to the model) in the same folder, or pass --mmproj PATH"
        )
    } else {
        anyhow!("this model has no vision tower, but {what}")
    }
}

/// Opens a model and, beside it or as given, its mmproj (the vision tower in llama.cpp's split layout).
pub(crate) fn open_model(path: &Path, mmproj: Option<&Path>) -> Result<(GgufFile, ModelInfo)> {
    let file = GgufFile::open_model(path, mmproj)
        .with_context(|| format!("cannot read model {}", path.display()))?;
    let info = ModelInfo::from_gguf_header(&file.header)
        .with_context(|| format!("model {}", path.display()))?;
    Ok((file, info))
}

fn info(path: &Path, mmproj: Option<&Path>) -> Result<()> {
    let (file, info) = open_model(path, mmproj)?;
    let cfg = ModelConfig::from_gguf(&file.header)
        .with_context(|| format!("model {}", path.display()))?;
    print!("{}", report::render(&file, &info, &cfg));
    Ok(())
}

/// The image's `pixel_values`, and what the user should be told about its conversion (printed on stderr
/// here, and given back for `--json`).
pub(crate) fn read_image(path: &Path, info: &ModelInfo) -> Result<(Vec<f32>, Vec<String>)> {
    read_image_with(path, info, &meddr_image::DicomOptions::default())
}

/// [`read_image`] with a DICOM file's window and frame (`--window`, `--frame`).
pub(crate) fn read_image_with(
    path: &Path,
    info: &ModelInfo,
    dicom: &meddr_image::DicomOptions,
) -> Result<(Vec<f32>, Vec<String>)> {
    info.vision
        .as_ref()
        .ok_or_else(|| no_vision(info, "--image was given"))?;
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .len();
    if len > MAX_IMAGE_FILE_BYTES {
        bail!(
            "image {} is {len} bytes, above the {MAX_IMAGE_FILE_BYTES}-byte limit",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    image_pixels_with(&bytes, &path.display().to_string(), info, dicom)
}

/// [`read_image`] on bytes already in memory; `name` names the image in messages.
pub(crate) fn image_pixels(
    bytes: &[u8],
    name: &str,
    info: &ModelInfo,
) -> Result<(Vec<f32>, Vec<String>)> {
    image_pixels_with(bytes, name, info, &meddr_image::DicomOptions::default())
}

/// [`image_pixels`] with a DICOM file's window and frame.
pub(crate) fn image_pixels_with(
    bytes: &[u8],
    name: &str,
    info: &ModelInfo,
    dicom: &meddr_image::DicomOptions,
) -> Result<(Vec<f32>, Vec<String>)> {
    let vision = info
        .vision
        .as_ref()
        .ok_or_else(|| no_vision(info, "an image was given"))?;
    let p = &vision.preprocessing;
    let cfg = p.config();
    let out = meddr_image::preprocess_with_options(bytes, &cfg, dicom)
        .with_context(|| format!("image {name}"))?;
    let notes: Vec<String> = out
        .notes
        .iter()
        .map(|n| format!("image {name}: {n}"))
        .collect();
    for n in &notes {
        eprintln!("meddr: warning: {n}");
    }
    Ok((out.pixel_values, notes))
}

fn run(mut a: RunArgs) -> Result<()> {
    let demo = a.model.is_none();
    let model_path = match a.model.take() {
        Some(m) => m,
        None => demo::demo_model()?,
    };
    let prompt = match a.prompt.take() {
        Some(p) => p,
        None if demo => demo::EXAMPLE_QUESTION.to_owned(),
        None => bail!("-p/--prompt is required with -m (the question to ask)"),
    };
    let (file, info) = open_model(&model_path, a.mmproj.as_deref())?;
    let tokenizer = tokenizer_from_gguf_header(&file.header).context("tokenizer in the GGUF")?;
    let opts = GenerationOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        },
        stop: if a.ignore_eos {
            StopPolicy::IgnoreEos
        } else if a.stop_on_template_list {
            StopPolicy::TemplateStopList
        } else {
            StopPolicy::UpstreamEos
        },
        logprobs: a.logprobs,
        interrupt: Default::default(),
    };
    let (pixel_values, warnings) = match a.image.as_deref() {
        Some(p) => {
            let (pv, w) = read_image_with(p, &info, &a.dicom.options())?;
            (Some(pv), w)
        }
        None if demo => {
            eprintln!(
                "meddr: asking {:?} about {}",
                prompt,
                demo::EXAMPLE_IMAGE_NAME
            );
            let (pv, w) = image_pixels(demo::EXAMPLE_IMAGE, demo::EXAMPLE_IMAGE_NAME, &info)?;
            (Some(pv), w)
        }
        None => (None, Vec::new()),
    };
    // Rejects impossible requests before the (slow) weight load.
    let prompt = encode_prompt(
        &tokenizer,
        &info,
        &prompt,
        pixel_values.is_some(),
        a.user_text.into(),
    )?;
    let mut warnings = warnings;
    if let Some(w) = prompt.warning("pass `--user-text literal`") {
        eprintln!("meddr: warning: {w}");
        warnings.push(w);
    }
    let ids = prompt.ids;
    check_request(ids.len(), &opts, info.context_length)?;

    let gopts = GpuOptions {
        force_f32: a.force_f32,
        context_length: a.context_length,
        vision: match &pixel_values {
            Some(pv) if a.release_vision => VisionLoad::EncodeFirst(pv.clone()),
            Some(_) => VisionLoad::Resident,
            // A text question needs no vision tower on the GPU.
            None => VisionLoad::Skip,
        },
        prefill_chunk: None,
    };
    let mut backend = match load_backend(&model_path, file, a.device, &gopts) {
        Ok(b) => b,
        // The demo should work on any machine: without a usable GPU it runs on the CPU reference.
        Err(e) if demo && a.device == Device::Gpu => {
            eprintln!(
                "meddr: no usable GPU ({}); the demo runs on the CPU reference instead",
                meddr_cli::error_message(&e)
            );
            let (file, _) = open_model(&model_path, a.mmproj.as_deref())?;
            load_backend(&model_path, file, Device::Cpu, &gopts)?
        }
        Err(e) => return Err(e),
    };
    check_request(ids.len(), &opts, backend.context_length())?;
    let features = match &pixel_values {
        Some(pv) => Some(
            backend
                .encode_image(pv)
                .map_err(|e| anyhow!("encoding the image: {e}"))?,
        ),
        None => None,
    };
    let json_mode = a.json;
    let mut stdout = std::io::stdout().lock();
    let result = generate(
        backend.as_mut(),
        &tokenizer,
        &info,
        &ids,
        features.as_deref(),
        &opts,
        |ev: &TokenEvent| {
            if !json_mode && !ev.token.text.is_empty() {
                // A closed stdout (e.g. `| head`) cancels generation instead of panicking.
                if stdout
                    .write_all(ev.token.text.as_bytes())
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if json_mode {
        let mut j = to_json(&result);
        j["warnings"] = json!(warnings);
        j["user_text"] = json!(UserText::from(a.user_text).as_str());
        let _ = writeln!(stdout, "{j}");
    } else {
        let _ = writeln!(stdout);
        eprintln!(
            "[{} tokens, stop: {}] {DISCLAIMER}",
            result.tokens.len(),
            result.stop_reason.as_str()
        );
        if demo {
            eprintln!(
                "meddr: that answer came from random weights (the demo model): the pipeline is the real one \
                 (quantize → load → vision → answer), the text is not. Pass -m with a real MedDr GGUF."
            );
        }
    }
    Ok(())
}

fn to_json(r: &GenerationResult) -> Value {
    let tokens: Vec<Value> = r
        .tokens
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "text": t.text,
                "logprob": t.logprob,
                "top_logprobs": t.top_logprobs.iter().map(|(id, lp)| json!({"id": id, "logprob": lp})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "prompt_tokens": r.prompt_tokens,
        "tokens": tokens,
        "text": r.text,
        "stop_reason": r.stop_reason.as_str(),
        "timings": {
            "prefill_s": r.timings.prefill_s,
            "decode_s": r.timings.decode_s,
            "prefill_tokens_per_s": r.timings.prefill_tokens_per_s,
            "decode_tokens_per_s": r.timings.decode_tokens_per_s,
        },
        "disclaimer": DISCLAIMER,
    })
}

fn bench(b: BenchArgs) -> Result<()> {
    use meddr_engine::{Readback, StepInput};
    use std::time::Instant;
    if let Some(p) = b.peak_gb_s.filter(|p| !(p.is_finite() && *p > 0.0)) {
        bail!("--peak-gb-s {p} is not a positive bandwidth");
    }
    let t0 = Instant::now();
    // Any llama-architecture GGUF can be benchmarked (llama.cpp comparisons use plain text models).
    let file = GgufFile::open_model(&b.model, b.mmproj.as_deref())
        .with_context(|| format!("cannot read model {}", b.model.display()))?;
    let info = ModelInfo::from_gguf_header(&file.header).ok();
    let ctx = meddr_engine::GpuContext::new_blocking(meddr_engine::ContextOptions {
        force_f32: b.force_f32,
        profile: b.profile,
        matvec_shape: b.matvec_shape,
        ..Default::default()
    })?;
    if b.profile && !ctx.can_profile() {
        bail!(
            "--profile: the adapter {} has no timestamp queries",
            ctx.info.name
        );
    }
    let gpu = GpuBackend::on_context(
        std::sync::Arc::new(ctx),
        &file,
        &GpuOptions {
            force_f32: b.force_f32,
            context_length: None,
            vision: VisionLoad::Resident,
            prefill_chunk: None,
        },
    )
    .with_context(|| format!("loading {} on the GPU", b.model.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    check_depths(&b, gpu.model().capacity())?;
    let mut backend = gpu;
    let mut image_pixels: Option<Vec<f32>> = None;
    let vit_ms = match info
        .as_ref()
        .and_then(|i| i.vision.as_ref().map(|v| (i, v)))
        .filter(|_| !b.text_only)
    {
        Some((info, v)) => {
            let pv = match &b.image {
                Some(p) => read_image(p, info)?.0,
                None => vec![0.0f32; 3 * (v.preprocessing.image_size as usize).pow(2)],
            };
            image_pixels = Some(pv.clone());
            // The first encode compiles the vision pipelines; the second is what each later image costs.
            let mut ms = [0.0f64; 2];
            for m in &mut ms {
                let t = Instant::now();
                backend
                    .encode_image(&pv)
                    .map_err(|e| anyhow!("encoding the image: {e}"))?;
                *m = t.elapsed().as_secs_f64() * 1e3;
            }
            Some(ms)
        }
        None => None,
    };
    let vocab = backend.model().config.vocab.max(200);
    // Ordinary text tokens (ids past the special ones), deterministic.
    let ids: Vec<u32> = (0..b.prompt_tokens as u32)
        .map(|i| 100 + (i * 7919) % (vocab - 100).max(1))
        .collect();
    check_request(
        ids.len(),
        &GenerationOptions {
            max_new_tokens: b.decode_tokens,
            ..Default::default()
        },
        backend.context_length(),
    )?;
    let model = backend_model(&mut backend);
    // Warm-up (as llama-bench does): compiles the prefill and decode pipelines outside the timings.
    model.prefill(&ids[..ids.len().min(8)], None, 1, Readback::Token)?;
    model.decode_step(StepInput::Greedy, Readback::Token)?;
    let t = Instant::now();
    model.prefill(&ids, None, b.decode_tokens as u32, Readback::Token)?;
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..b.decode_tokens {
        model.decode_step(StepInput::Greedy, Readback::Token)?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    // The same tokens with the next step queued before the last one is read (what the browser does): the
    // GPU no longer idles while the host reads a token and records the next step.
    model.prefill(&ids, None, b.decode_tokens as u32, Readback::Token)?;
    let t = Instant::now();
    let (mut queued, mut read) = (0, 0);
    while read < b.decode_tokens {
        while queued < b.decode_tokens && queued - read < meddr_engine::MAX_QUEUED_STEPS {
            model.queue_greedy_step()?;
            queued += 1;
        }
        pollster::block_on(model.read_queued_step())?;
        read += 1;
    }
    let queued_s = t.elapsed().as_secs_f64();
    let bytes = model.decode_weight_bytes();
    let plan = model.memory_plan();
    let decode_tps = b.decode_tokens as f64 / decode_s.max(1e-9);
    let effective = bytes as f64 * decode_tps / 1e9;
    let read = match b.read_bandwidth_mib {
        0 => None,
        mib => Some(
            model
                .context()
                .read_bandwidth(mib.saturating_mul(1 << 20), 10)
                .context("measuring the streaming-read bandwidth")?,
        ),
    };
    let prefill_tps = b.prompt_tokens as f64 / prefill_s.max(1e-9);
    let depths = bench_depths(model, &b, &ids, bytes)?;
    let device = model.context().info.to_string();
    let ms = model.context().info.matvec_shape;
    let matvec_shape = ms.to_string();
    let profile = if b.profile {
        let mut regions = serde_json::Map::new();
        let table = |v: Vec<meddr_engine::KernelTime>, lost: usize| {
            json!({
                "total_ms": v.iter().map(|k| k.ms).sum::<f64>(),
                "unmeasured_dispatches": lost,
                "kernels": v.iter().map(|k| json!({"kernel": k.kernel, "dispatches": k.dispatches, "ms": k.ms})).collect::<Vec<_>>(),
            })
        };
        if let Some(pv) = &image_pixels {
            model.context().profile_begin()?;
            backend
                .encode_image(pv)
                .map_err(|e| anyhow!("encoding the image: {e}"))?;
            let (v, lost) = backend_model(&mut backend).context().profile_end()?;
            regions.insert("image_encode".into(), table(v, lost));
        }
        let model = backend_model(&mut backend);
        model.context().profile_begin()?;
        model.prefill(&ids, None, 2, Readback::Token)?;
        let (v, lost) = model.context().profile_end()?;
        regions.insert("prefill".into(), table(v, lost));
        model.context().profile_begin()?;
        model.decode_step(StepInput::Greedy, Readback::Token)?;
        let (v, lost) = model.context().profile_end()?;
        regions.insert("decode_step".into(), table(v, lost));
        Some(serde_json::Value::Object(regions))
    } else {
        None
    };
    let out = json!({
        "model": b.model.display().to_string(),
        "device": device,
        "matvec_shape": matvec_shape,
        "load_s": load_s,
        "vit_ms_first_image": vit_ms.map(|m| m[0]),
        "vit_ms_per_image": vit_ms.map(|m| m[1]),
        // Time to first token of an image question: ViT + projector, then the prompt's prefill.
        "ttft_ms_image_prompt": vit_ms.map(|m| m[1] + prefill_s * 1e3),
        "prefill_tokens": b.prompt_tokens,
        "prefill_tokens_per_s": prefill_tps,
        "decode_tokens": b.decode_tokens,
        "decode_tokens_per_s": decode_tps,
        "decode_queued_tokens_per_s": b.decode_tokens as f64 / queued_s.max(1e-9),
        "weight_bytes_per_decoded_token": bytes,
        "effective_gb_per_s": effective,
        "read_kernel_gb_per_s": read.map(|r| r.gb_per_s()),
        "read_kernel_bytes": read.map(|r| r.bytes),
        "fraction_of_read_kernel": read.map(|r| effective / r.gb_per_s()),
        "peak_gb_per_s": b.peak_gb_s,
        "fraction_of_peak": b.peak_gb_s.map(|p| effective / p),
        "file_bytes": std::fs::metadata(&b.model).map(|m| m.len()).ok(),
        "weights_file_bytes": plan.vit_file + plan.projector_file + plan.llm_file,
        "weights_gpu_bytes": plan.vit_gpu + plan.projector_gpu + plan.llm_gpu,
        "gpu_bytes": plan.total_gpu(),
        // On CPU adapters (lavapipe) the GPU's buffers are this process's memory and count here too.
        "peak_rss_bytes": peak_rss_bytes(),
        "profile": profile,
        "depths": depths,
    });
    if b.json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().into_iter().flatten() {
            println!("{k:>32}: {v}");
        }
    }
    Ok(())
}

/// Every `--depths` value leaves room for the prompt and the decoded tokens in a KV cache of `capacity`.
fn check_depths(b: &BenchArgs, capacity: u32) -> Result<()> {
    for &d in &b.depths {
        let need = u64::from(d) + b.prompt_tokens as u64 + b.decode_tokens as u64;
        if need > u64::from(capacity) {
            bail!(
                "--depths {d}: {d} + {} prompt + {} decoded tokens = {need} exceed the context of {capacity}",
                b.prompt_tokens,
                b.decode_tokens
            );
        }
    }
    Ok(())
}

/// Prefill and decode at each `--depths` value: `depth` ordinary tokens are prefilled untimed, then the
/// prompt's prefill (from that position) and the decode are timed as in the main measurement. Per depth: the
/// bytes a decode step reads (weights + the K and V rows it attends to) and how the time per token grew
/// against that (1.0 = exactly as the bytes; issue 12.6 asks ≤ 1.5 up to 4096).
fn bench_depths(
    model: &mut meddr_engine::GpuModel,
    b: &BenchArgs,
    ids: &[u32],
    weight_bytes: u64,
) -> Result<Option<serde_json::Value>> {
    use meddr_engine::{Readback, StepInput};
    use std::time::Instant;
    if b.depths.is_empty() {
        return Ok(None);
    }
    let c = &model.config;
    let ctx_len = model.capacity();
    let kv_row_bytes = 2
        * u64::from(c.layers)
        * u64::from(c.n_kv_heads * c.head_dim)
        * model.context().kv_dtype().size();
    let vocab = c.vocab.max(200);
    let mut rows = Vec::new();
    let mut base: Option<(f64, u64)> = None;
    check_depths(b, ctx_len)?;
    for &d in &b.depths {
        if d > 0 {
            let fill: Vec<u32> = (0..d)
                .map(|i| 100 + (i * 104_729) % (vocab - 100).max(1))
                .collect();
            model.prefill(
                &fill,
                None,
                (b.prompt_tokens + b.decode_tokens) as u32,
                Readback::Token,
            )?;
        }
        let t = Instant::now();
        model.prefill_from(d, ids, None, b.decode_tokens as u32, Readback::Token)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..b.decode_tokens {
            model.decode_step(StepInput::Greedy, Readback::Token)?;
        }
        let ms_per_token = t.elapsed().as_secs_f64() * 1e3 / b.decode_tokens.max(1) as f64;
        // Mid-decode: the steps attend to d + prompt … d + prompt + decode positions.
        let kv_bytes =
            kv_row_bytes * (u64::from(d) + b.prompt_tokens as u64 + b.decode_tokens as u64 / 2);
        let step_bytes = weight_bytes + kv_bytes;
        let (ms0, bytes0) = *base.get_or_insert((ms_per_token, step_bytes));
        rows.push(json!({
            "depth": d,
            "prefill_tokens_per_s": b.prompt_tokens as f64 / prefill_s.max(1e-9),
            "decode_tokens_per_s": 1e3 / ms_per_token.max(1e-9),
            "decode_ms_per_token": ms_per_token,
            "kv_bytes_read_per_token": kv_bytes,
            "time_growth_over_bytes_growth": (ms_per_token / ms0) / (step_bytes as f64 / bytes0 as f64),
        }));
    }
    Ok(Some(serde_json::Value::Array(rows)))
}

/// The process's peak resident set (Linux `VmHWM`); `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn backend_model(b: &mut GpuBackend) -> &mut meddr_engine::GpuModel {
    b.model_mut()
}
