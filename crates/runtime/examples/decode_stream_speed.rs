//! Host cost of streaming an answer's text as it grows (issue 12.6: decode time per token must not grow
//! faster than the bytes a step reads). Compares `DecodeStream` (a short window of ids per step) with the
//! definition it replaced, decoding every id so far at each step, on a real 32k SentencePiece LLaMA vocabulary
//! (llama.cpp's `ggml-vocab-llama-spm.gguf`, fetched by tests/setup.sh) and the byte-level llama-bpe one, over an
//! answer of up to 4,096 tokens (MedDr's context). Both produce the same deltas (checked here too).
//!
//!   cargo run --release -p meddr-runtime --example decode_stream_speed [-- TOKENS]

use std::path::Path;
use std::time::Instant;

use meddr_gguf::GgufHeader;
use meddr_runtime::tokenizer_from_gguf_header;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("TOKENS must be a number"))
        .unwrap_or(4096);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Ordinary prose with some non-ASCII (multi-byte characters split over byte pieces).
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    println!("| vocabulary | tokens | whole decode per step (ms, last step) | window (ms, last step) | whole total (s) | window total (s) | ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for vocab in ["llama-spm", "llama-bpe"] {
        let path = root.join(format!(".cache/llama-vocab/ggml-vocab-{vocab}.gguf"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run tests/setup.sh)", path.display()));
        let tok = tokenizer_from_gguf_header(&GgufHeader::from_bytes(&bytes).expect("GGUF header"))
            .expect("tokenizer");
        let mut ids = Vec::new();
        while ids.len() < n {
            ids.extend(tok.encode_with(&readme, false, false).expect("encode"));
        }
        ids.truncate(n);

        let t = Instant::now();
        let mut stream = tok.decode_stream();
        let mut window = Vec::with_capacity(n);
        let mut last_window = 0.0;
        for &id in &ids {
            let s = Instant::now();
            window.push(stream.step(id).expect("step"));
            last_window = s.elapsed().as_secs_f64() * 1e3;
        }
        let window_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut emitted = 0usize;
        let mut whole = Vec::with_capacity(n);
        let mut last_whole = 0.0;
        for i in 0..n {
            let s = Instant::now();
            let text = tok.decode(&ids[..=i], true).expect("decode");
            whole.push(if text.ends_with('\u{FFFD}') || text.len() <= emitted {
                None
            } else {
                let d = text[emitted..].to_owned();
                emitted = text.len();
                Some(d)
            });
            last_whole = s.elapsed().as_secs_f64() * 1e3;
        }
        let whole_s = t.elapsed().as_secs_f64();
        assert_eq!(window, whole, "{vocab}: the two give different deltas");
        println!(
            "| {vocab} | {n} | {last_whole:.3} | {last_window:.4} | {whole_s:.2} | {window_s:.4} | {:.0}× |",
            whole_s / window_s
        );
    }
}
