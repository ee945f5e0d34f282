//! Prefill and decode throughput of a GGUF on whatever adapter wgpu picks:
//! `cargo run --release -p meddr-engine --example bench_decode -- model.gguf [prompt_tokens] [decode_tokens]`.
//!
//! Decode is greedy with the argmax fed back on the GPU (one submit and a 4-byte readback per token), so the
//! effective bandwidth (weight bytes per token × tokens/s) is directly comparable to the device's roofline.

use std::sync::Arc;
use std::time::Instant;

use meddr_engine::{ContextOptions, GpuContext, GpuModel, LoadOptions, Readback, StepInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: bench_decode model.gguf [prompt_tokens] [decode_tokens]")?;
    let n_prompt: u32 = args.next().map_or(Ok(128), |s| s.parse())?;
    let n_decode: u32 = args.next().map_or(Ok(32), |s| s.parse())?;
    if n_prompt == 0 || n_decode == 0 {
        return Err("prompt_tokens and decode_tokens must be positive".into());
    }

    let ctx = Arc::new(GpuContext::new_blocking(ContextOptions::default())?);
    println!("device: {}", ctx.info);
    let t = Instant::now();
    let file = meddr_gguf::GgufFile::open_model(&path, None)?;
    let opts = LoadOptions {
        context_length: Some(n_prompt + n_decode + 1),
        load_vision: false,
        ..Default::default()
    };
    let mut m = GpuModel::load(ctx, &file, &opts)?;
    println!(
        "load: {:.2} s; {}",
        t.elapsed().as_secs_f64(),
        m.memory_plan()
    );
    let vocab = m.config.vocab;
    // Deterministic ordinary ids (avoid 0..=8, usually special).
    let prompt: Vec<u32> = (0..n_prompt)
        .map(|i| 9 + (i * 7919) % (vocab - 9))
        .collect();

    // Warm-up: compiles every pipeline once.
    m.prefill(&prompt[..prompt.len().min(8)], None, 2, Readback::Token)?;
    m.decode_step(StepInput::Greedy, Readback::Token)?;

    let t = Instant::now();
    m.prefill(&prompt, None, n_decode, Readback::Token)?;
    let prefill_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for _ in 0..n_decode {
        m.decode_step(StepInput::Greedy, Readback::Token)?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    let bytes = m.decode_weight_bytes();
    let tps = f64::from(n_decode) / decode_s;
    println!(
        "prefill: {n_prompt} tokens in {:.3} s = {:.1} tok/s",
        prefill_s,
        f64::from(n_prompt) / prefill_s
    );
    println!("decode: {n_decode} tokens in {decode_s:.3} s = {tps:.2} tok/s");
    println!(
        "weights read per decoded token: {bytes} bytes ({:.1} MiB); effective {:.2} GB/s",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 * tps / 1e9
    );
    Ok(())
}
