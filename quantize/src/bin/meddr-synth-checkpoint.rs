//! Command line: writes a random MedDr-shaped checkpoint in the exact upstream layout.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use meddr_quantize::synth::{write_checkpoint, SynthOptions, SynthShape};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes a random-weight checkpoint with MedDr's architecture and Hugging Face layout (PEFT-wrapped LoRA,
/// bf16 shards + index, config.json, tokenizer), streamed to disk. Shapes come from a preset, each overridable.
#[derive(Parser, Debug)]
#[command(
    name = "meddr-synth-checkpoint",
    version,
    after_help = "Examples:\n  meddr-synth-checkpoint -o /tmp/dev-ckpt                     # fixture-sized (2.7 M params)\n  meddr-synth-checkpoint -o /tmp/4gb --preset full --vit-layers 1 --llm-layers 3   # ~4.4 GB\n  meddr-synth-checkpoint -o /tmp/meddr-40b --preset 40b        # MedDr's exact 40B shape (64k vocabulary), ~80 GB"
)]
struct Cli {
    /// Output directory (must not exist unless --force)
    #[arg(short, long)]
    output: PathBuf,
    /// dev (the fixture's shapes), full (InternViT-6B + Yi-34B widths, the built-in vocabulary) or 40b (full with Yi's 64,000-token vocabulary)
    #[arg(long, default_value = "dev")]
    preset: String,
    #[arg(long)]
    vit_layers: Option<usize>,
    #[arg(long)]
    llm_layers: Option<usize>,
    #[arg(long)]
    vit_hidden: Option<usize>,
    #[arg(long)]
    vit_heads: Option<usize>,
    #[arg(long)]
    vit_mlp: Option<usize>,
    #[arg(long)]
    llm_hidden: Option<usize>,
    #[arg(long)]
    llm_heads: Option<usize>,
    #[arg(long)]
    llm_kv_heads: Option<usize>,
    #[arg(long)]
    llm_ffn: Option<usize>,
    /// LoRA rank of the unmerged adapters (0 = plain, already-merged names)
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// Maximum shard size in MB
    #[arg(long, default_value_t = 4000)]
    shard_mb: u64,
    #[arg(long, default_value_t = 177)]
    seed: u64,
    /// Tokenizer directory to copy (default: the built-in 2009-token tokenizer)
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary size (rows of embed_tokens / lm_head); at least the tokenizer's size: rows past it are
    /// padding, which the quantizer writes as [PAD{id}] tokens (e.g. --vocab 64000 for Yi's 64k scale)
    #[arg(long)]
    vocab: Option<usize>,
    /// Replace an existing output directory
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut shape = match SynthShape::preset(&cli.preset) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let set = |dst: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut shape.vit_layers, cli.vit_layers);
    set(&mut shape.llm_layers, cli.llm_layers);
    set(&mut shape.vit_hidden, cli.vit_hidden);
    set(&mut shape.vit_heads, cli.vit_heads);
    set(&mut shape.vit_mlp, cli.vit_mlp);
    set(&mut shape.llm_hidden, cli.llm_hidden);
    set(&mut shape.llm_heads, cli.llm_heads);
    set(&mut shape.llm_kv_heads, cli.llm_kv_heads);
    set(&mut shape.llm_ffn, cli.llm_ffn);
    set(&mut shape.vocab, cli.vocab);
    let zero = [
        shape.vit_hidden,
        shape.vit_heads,
        shape.vit_mlp,
        shape.vit_layers,
        shape.llm_hidden,
        shape.llm_heads,
        shape.llm_kv_heads,
        shape.llm_ffn,
        shape.llm_layers,
        shape.vocab,
    ];
    if zero.contains(&0) {
        eprintln!("error: every dimension must be at least 1: {shape:?}");
        return ExitCode::from(2);
    }
    let total: u64 = shape
        .tensors(cli.lora_rank)
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>() as u64 * 2)
        .sum();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(ProgressStyle::with_template("[{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        Some(b)
    } else {
        None
    };
    let opts = SynthOptions {
        shape,
        lora_rank: cli.lora_rank,
        shard_bytes: cli.shard_mb.max(1) * 1_000_000,
        seed: cli.seed,
        tokenizer_dir: cli.tokenizer,
        force: cli.force,
        layout_only: false,
    };
    let mut done = 0u64;
    let mut last_pct = 0u64;
    let res = write_checkpoint(&cli.output, &opts, |n| {
        done += n;
        if let Some(b) = &bar {
            b.set_position(done);
        } else if total > 0 && done * 100 / total >= last_pct + 10 {
            last_pct = done * 100 / total / 10 * 10;
            eprintln!(
                "progress: {last_pct:3}% {:.2}/{:.2} GB",
                done as f64 / 1e9,
                total as f64 / 1e9
            );
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match res {
        Ok(bytes) => {
            eprintln!(
                "wrote {} ({:.3} GB of bf16 weights)",
                cli.output.display(),
                bytes as f64 / 1e9
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
