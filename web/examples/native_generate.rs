//! Native twin of the browser's generate path (same `Session` code, native wgpu): reference token ids for
//! the real-browser test and the native side of the browser-vs-native speed comparison.
//! Run on Chromium's own SwiftShader with `VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json`.
//!
//! `native_generate --model m.gguf [--image img] --question q --max-new-tokens N [--ignore-eos] [--f32]
//! [--runs R]` prints `{"tokens": [...], "text": ..., "stats": {...}, "runs": [{...} × R], "device": ...}`:
//! R generations (each a new conversation) in one process, as the browser benchmark runs them in one page.
//! Also `loadMs`, the model's GPU bytes and memory plan (what the browser's `load()` reports) and, on
//! Linux, the process's peak resident memory (`peakRssBytes`, VmHWM: the mapped file's pages included).

use std::sync::Arc;

use meddr_engine::{ContextOptions, GpuContext, LoadOptions};
use meddr_gguf::GgufFile;
use meddr_runtime::{GenerationOptions, SamplingParams, StopPolicy};
use meddr_web::session::{Ask, Session};

fn main() {
    if let Err(e) = run() {
        eprintln!("native_generate: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = None;
    let mut image = None;
    let mut question = String::new();
    let mut max_new = 64usize;
    let mut ignore_eos = false;
    let mut force_f32 = false;
    let mut runs = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(val()?),
            "--image" => image = Some(val()?),
            "--question" => question = val()?,
            "--max-new-tokens" => max_new = val()?.parse()?,
            "--ignore-eos" => ignore_eos = true,
            "--f32" => force_f32 = true,
            "--runs" => runs = val()?.parse::<usize>()?.max(1),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let model = model.ok_or("--model is required")?;
    let ctx = Arc::new(GpuContext::new_blocking(ContextOptions {
        force_f32,
        ..Default::default()
    })?);
    eprintln!("device: {}", ctx.info);
    // The model and, beside it, its mmproj (llama.cpp's layout), seen as one file as the browser sees them.
    let file = GgufFile::open_model(&model, None)?;
    let opts = LoadOptions {
        context_length: Some(4096),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let mut session = Session::load_from(
        ctx.clone(),
        &file.header,
        file.span_len(),
        &opts,
        |off, dst: &mut [u8]| file.read_at(off, dst),
    )?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let plan = session.model.memory_plan();
    eprintln!("loaded in {:.1} s: {plan}", load_ms / 1e3);
    let image = image.map(std::fs::read).transpose()?;
    let gen = GenerationOptions {
        max_new_tokens: max_new,
        sampling: SamplingParams::default(),
        stop: if ignore_eos {
            StopPolicy::IgnoreEos
        } else {
            StopPolicy::UpstreamEos
        },
        logprobs: None,
        interrupt: Default::default(),
    };
    let mut all = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs {
        let o = pollster::block_on(session.generate(
            image.as_deref(),
            &Ask::default(),
            &question,
            &gen,
            |_, _| true,
        ))?;
        all.push(o.stats.clone());
        out = Some(o);
    }
    let out = out.ok_or("no run")?;
    let json = serde_json::json!({
        "tokens": out.tokens,
        "text": out.text,
        "stopReason": out.stop_reason,
        "stats": out.stats,
        "runs": all,
        "loadMs": load_ms,
        "gpuBytes": plan.total_gpu(),
        "memoryPlan": plan.to_string(),
        "peakRssBytes": peak_rss_bytes(),
        "device": ctx.info.to_string(),
    });
    println!("{json}");
    Ok(())
}

/// The process's peak resident set (VmHWM of /proc/self/status); None off Linux.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
