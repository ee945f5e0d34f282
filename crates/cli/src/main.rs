//! `meddr`: ask MedDr about a medical image from one GGUF file.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use meddr_cli::{report, CpuBackend};
use meddr_gguf::GgufFile;
use meddr_reference::{GgufStore, ModelConfig};
use meddr_runtime::{
    build_prompt, check_request, generate, tokenizer_from_gguf_header, Backend, GenerationOptions,
    GenerationResult, ModelInfo, SamplingParams, StopPolicy, TokenEvent,
};
use serde_json::{json, Value};

const DISCLAIMER: &str = "Research aid, not a medical device: do not use for diagnosis.";

/// Images larger than this are refused before reading (a 448² model input never needs more).
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

const EXAMPLES: &str = "\
Examples:
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
    /// Show hyper-parameters, tensor types and sizes per component, and a memory plan.
    Info {
        /// GGUF file written by meddr-quantize.
        model: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// wgpu engine (not built into this binary yet).
    Gpu,
    /// f32 reference on the CPU: exact but slow; dequantises the whole file into memory.
    Cpu,
}

#[derive(clap::Args)]
struct RunArgs {
    /// GGUF model file (meddr-quantize output).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Image to ask about (JPEG, PNG, BMP, TIFF, WebP).
    #[arg(long)]
    image: Option<PathBuf>,
    /// The question (leading/trailing whitespace is stripped, as upstream does).
    #[arg(short = 'p', long)]
    prompt: String,
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
    /// Print one JSON object (tokens, log-probs, text, stop reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Where to run. Only `cpu` is available in this build.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Run(a) => run(a),
        Command::Info { model } => info(&model),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("meddr: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn open_model(path: &Path) -> Result<(GgufFile, ModelInfo)> {
    let file =
        GgufFile::open(path).with_context(|| format!("cannot read model {}", path.display()))?;
    let info = ModelInfo::from_gguf_header(&file.header)
        .with_context(|| format!("model {}", path.display()))?;
    Ok((file, info))
}

fn info(path: &Path) -> Result<()> {
    let (file, info) = open_model(path)?;
    let cfg = ModelConfig::from_gguf(&file.header)
        .with_context(|| format!("model {}", path.display()))?;
    print!(
        "{}",
        report::render(&file.header, &info, &cfg, file.bytes().len() as u64)
    );
    Ok(())
}

fn read_image(path: &Path, info: &ModelInfo) -> Result<Vec<f32>> {
    let vision = info
        .vision
        .as_ref()
        .ok_or_else(|| anyhow!("this model has no vision tower, but --image was given"))?;
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
    let p = &vision.preprocessing;
    let cfg = meddr_image::PreprocessConfig {
        image_size: p.image_size,
        pad2square: p.pad2square,
        pad_color: p.pad_color,
        mean: p.mean,
        std: p.std,
    };
    let out = meddr_image::preprocess(&bytes, &cfg)
        .with_context(|| format!("image {}", path.display()))?;
    Ok(out.pixel_values)
}

fn run(a: RunArgs) -> Result<()> {
    if a.device == Device::Gpu {
        bail!("GPU backend not built yet; use --device cpu");
    }
    let (file, info) = open_model(&a.model)?;
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
    };
    let pixel_values = a
        .image
        .as_deref()
        .map(|p| read_image(p, &info))
        .transpose()?;
    let num_image_tokens = info.vision.as_ref().map_or(0, |v| v.num_image_tokens);
    let prompt = build_prompt(
        &info.system_message,
        &a.prompt,
        pixel_values.is_some(),
        num_image_tokens,
    );
    let ids = tokenizer.encode(&prompt).context("tokenizing the prompt")?;
    // Reject impossible requests before the (slow) weight load.
    check_request(ids.len(), &opts, info.context_length)?;

    let store = GgufStore::from_file(file);
    let mut backend =
        CpuBackend::load(&store).with_context(|| format!("loading {}", a.model.display()))?;
    drop(store);
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
        &mut backend,
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
        let _ = writeln!(stdout, "{}", to_json(&result));
    } else {
        let _ = writeln!(stdout);
        eprintln!(
            "[{} tokens, stop: {}] {DISCLAIMER}",
            result.tokens.len(),
            result.stop_reason.as_str()
        );
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
