//! Command line: `meddr-quantize <checkpoint_dir> -o <model.gguf> --type q4_k_m`.

use clap::Parser;
use meddr_quantize::recipe::parse_vision_type;
use meddr_quantize::synth::{write_checkpoint, SynthOptions, SynthShape};
use meddr_quantize::{quantize_checkpoint, write_layout, FileType, Options};
use std::path::PathBuf;
use std::process::ExitCode;

/// Streams a MedDr (InternVL-Chat-V1-2) Hugging Face checkpoint into one GGUF file: LoRA merged in f32,
/// unused ViT layers dropped, the language model in llama.cpp's layout, vision tower and tokenizer included.
#[derive(Parser, Debug)]
#[command(
    name = "meddr-quantize",
    version,
    after_help = "Example:\n  meddr-quantize ~/models/MedDr_0401 -o meddr-q4_k_m.gguf --type q4_k_m\n\nKeys and tensor names: docs/gguf-layout.md"
)]
struct Cli {
    /// Checkpoint directory: config.json, model.safetensors.index.json + shards (or model.safetensors), tokenizer files
    #[arg(required_unless_present = "synthetic", conflicts_with = "synthetic")]
    checkpoint_dir: Option<PathBuf>,
    /// No weights at hand: quantize a built-in random checkpoint of this preset instead (dev: the fixture's
    /// shapes; full: MedDr's 40B widths with the built-in tokenizer's vocabulary; 40b: MedDr's exact shape,
    /// Yi's 64,000-token vocabulary; full and 40b write ~80 GB to a temporary directory first, unless
    /// --layout-only)
    #[arg(long, value_name = "PRESET")]
    synthetic: Option<String>,
    /// Output GGUF: the language model (llama.cpp, LM Studio and ollama load it as a text model); the vision
    /// tower and projector go to <stem>.mmproj.gguf beside it (llama.cpp's mmproj layout). Both are written
    /// under temporary names and renamed when complete
    #[arg(short, long)]
    output: PathBuf,
    /// Language-model quantization: q4_k_m, q4_k_s, q4_0, q8_0, f16 or f32
    #[arg(short = 't', long = "type", default_value = "q4_k_m", value_parser = |s: &str| s.parse::<FileType>())]
    ftype: FileType,
    /// Block type of the ViT and projector matrices: f32, f16, q8_0, q5_0, q4_0, q4_1, q4_k, q5_k, q6_k
    /// [default: q8_0 for quantized files; f16/f32 files keep their type]
    #[arg(long, value_parser = parse_vision_type)]
    vision_type: Option<meddr_gguf::GgmlType>,
    /// Worker threads for quantization [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Write only the layout: every tensor declared (names, shapes, types, offsets) and all metadata, but no
    /// weight read or computed; the data are holes (zeros) taking no disk, and loaders refuse the files.
    /// For `meddr info`'s memory plan of a model you do not have, e.g. `--synthetic 40b --layout-only`
    /// (MedDr's 40B shape in a second)
    #[arg(long)]
    layout_only: bool,
    /// Overwrite existing output files
    #[arg(long)]
    force: bool,
    /// No progress output
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.threads == Some(0) {
        eprintln!("error: --threads must be at least 1");
        return ExitCode::from(2);
    }
    let opts = Options {
        ftype: cli.ftype,
        vision_type: cli.vision_type,
        threads: cli.threads,
        force: cli.force,
        progress: !cli.quiet,
    };
    // A synthetic checkpoint lives in a temporary directory removed on exit.
    let synth_dir;
    let dir = match (&cli.checkpoint_dir, &cli.synthetic) {
        (Some(d), _) => d.clone(),
        (None, Some(preset)) => {
            let shape = match SynthShape::preset(preset) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            synth_dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: cannot create a temporary directory: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ck = synth_dir.path().join(format!("synthetic-{preset}"));
            let so = SynthOptions {
                shape,
                lora_rank: 16,
                shard_bytes: 4_000_000_000,
                seed: 177,
                tokenizer_dir: None,
                force: false,
                layout_only: cli.layout_only,
            };
            if let Err(e) = write_checkpoint(&ck, &so, |_| {}) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            if !cli.quiet {
                if cli.layout_only {
                    eprintln!("no checkpoint given: the layout of a synthetic {preset} checkpoint (upstream layout, no weights)");
                } else {
                    eprintln!("no checkpoint given: quantizing a synthetic {preset} checkpoint (random weights, upstream layout)");
                }
            }
            ck
        }
        (None, None) => {
            eprintln!("error: give a checkpoint directory or --synthetic PRESET");
            return ExitCode::from(2);
        }
    };
    let run = if cli.layout_only {
        write_layout
    } else {
        quantize_checkpoint
    };
    match run(&dir, &cli.output, &opts) {
        Ok(s) => {
            if !cli.quiet {
                if let Some(r) = &s.fallback_report {
                    eprintln!("{r}");
                }
                let mmproj = s
                    .mmproj
                    .as_ref()
                    .map(|p| format!(" + {} ({:.3} GB)", p.display(), s.mmproj_bytes as f64 / 1e9))
                    .unwrap_or_default();
                if cli.layout_only {
                    eprintln!(
                        "wrote {}{mmproj} ({} tensors, {:.3} GB declared, the layout only: no weights, holes on disk; {:.1} s; {} ViT layers kept)",
                        s.output.display(),
                        s.tensors,
                        (s.output_bytes + s.mmproj_bytes) as f64 / 1e9,
                        s.seconds,
                        s.vision_layers_kept
                    );
                    return ExitCode::SUCCESS;
                }
                eprintln!(
                    "wrote {}{mmproj} ({} tensors, {:.3} GB from {:.3} GB of input, {:.1} s, {:.3} GB/s{}; {} ViT layers kept)",
                    s.output.display(),
                    s.tensors,
                    (s.output_bytes + s.mmproj_bytes) as f64 / 1e9,
                    s.input_bytes as f64 / 1e9,
                    s.seconds,
                    s.input_bytes as f64 / 1e9 / s.seconds.max(1e-9),
                    if s.lora_merged { ", LoRA merged" } else { "" },
                    s.vision_layers_kept
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
