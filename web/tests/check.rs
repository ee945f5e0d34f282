//! Header-only checks the browser runs before streaming weights: incremental parsing from growing
//! slices, MedDr recognition, device-limit refusals. Files are written with meddr-gguf's writer.

use meddr_gguf::{GgmlType, GgufHeader, GgufWriter, TensorSpec, Value};
use meddr_web::{check_device_limits, check_meddr, next_header_step, WebError, FIRST_HEADER_SLICE};

fn write(name: &str, meta: Vec<(String, Value)>, specs: Vec<TensorSpec>) -> Vec<u8> {
    // One folder per call: tests run in parallel and several write files of the same name (a shared folder
    // made one test's writer find another's finished file: FileExists).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-web-check-{}-{name}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    let mut w = GgufWriter::create(&path, meta, specs.clone()).unwrap();
    for s in &specs {
        let t = w.header().tensor(&s.name).unwrap().clone();
        w.write_tensor(&s.name, &vec![7u8; t.byte_size() as usize])
            .unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}

fn kv(k: &str, v: impl Into<Value>) -> (String, Value) {
    (k.to_string(), v.into())
}

/// A MedDr-shaped file: the keys `check_meddr` reads, a vocabulary large enough that the header spans
/// several 64 KiB slices, and the four tensors every MedDr file has.
fn meddr_like(vocab: usize, extra_meta: Vec<(String, Value)>) -> Vec<u8> {
    let tokens: Vec<String> = (0..vocab)
        .map(|i| format!("tok_{i:06}_padding_to_make_it_long"))
        .collect();
    let tokens: Vec<&str> = tokens.iter().map(|s| s.as_str()).collect();
    let mut meta = vec![
        kv("general.architecture", "llama"),
        kv("general.name", "dev"),
        kv("general.file_type", 0u32),
        kv("llama.block_count", 3u32),
        kv("llama.embedding_length", 64u32),
        kv("clip.vision.block_count", 2u32),
        kv("clip.vision.embedding_length", 32u32),
        kv("tokenizer.ggml.tokens", tokens),
    ];
    meta.extend(extra_meta);
    let specs = vec![
        TensorSpec::new("token_embd.weight", vec![64, 10], GgmlType::F32),
        TensorSpec::new("output.weight", vec![64, 10], GgmlType::Q8_0),
        TensorSpec::new("v.patch_embd.weight", vec![588, 32], GgmlType::F16),
        TensorSpec::new("mm.model.mlp.1.weight", vec![256, 64], GgmlType::Q4_K),
    ];
    write(&format!("v{vocab}"), meta, specs)
}

/// Mirrors worker-side parsing: start at FIRST_HEADER_SLICE, grow by what the parser asks.
fn parse_incrementally(bytes: &[u8]) -> (Result<GgufHeader, WebError>, Vec<u64>) {
    let len = bytes.len() as u64;
    let mut have = FIRST_HEADER_SLICE.min(len);
    let mut steps = vec![have];
    loop {
        match next_header_step(&bytes[..have as usize], len) {
            Ok(Ok(h)) => return (Ok(h), steps),
            Ok(Err(want)) => {
                assert!(
                    want > have && want <= len,
                    "asked for {want} with {have} of {len}"
                );
                have = want;
                steps.push(have);
            }
            Err(e) => return (Err(e), steps),
        }
    }
}

#[test]
fn incremental_header_matches_full_parse_in_few_slices() {
    let bytes = meddr_like(20_000, vec![kv("meddr.format_version", 1u32)]);
    let (h, steps) = parse_incrementally(&bytes);
    let h = h.unwrap();
    assert_eq!(h, GgufHeader::from_bytes(&bytes).unwrap());
    // ~0.9 MB of vocabulary: several slices but logarithmically many, and never the whole file.
    assert!(steps.len() >= 3 && steps.len() <= 8, "steps {steps:?}");
    let s = check_meddr(&h, bytes.len() as u64).unwrap();
    assert_eq!(
        (
            s.llm_layers,
            s.hidden,
            s.vocab,
            s.vision_layers,
            s.n_tensors
        ),
        (3, 64, 10, 2, 4)
    );
    let expected_bytes: u64 = h.tensors.iter().map(|t| t.byte_size()).sum();
    assert_eq!(s.tensor_bytes, expected_bytes);
    assert_eq!(s.largest_row_bytes, 588 * 2);
    assert_eq!(s.header_bytes, h.data_offset);
}

#[test]
fn a_plain_llama_gguf_is_accepted_as_text_only_and_one_without_embeddings_is_refused() {
    let bytes = meddr_like(10, vec![]);
    let mut h = parse_incrementally(&bytes).0.unwrap();
    // No meddr.* keys: a llama.cpp file, read as text only whatever else it holds.
    let s = check_meddr(&h, bytes.len() as u64).unwrap();
    assert_eq!((s.vision_layers, s.vision_width, s.llm_layers), (0, 0, 3));
    h.tensors.retain(|t| t.name != "token_embd.weight");
    let e = check_meddr(&h, bytes.len() as u64).unwrap_err();
    assert!(
        matches!(e, WebError::NotMedDr { .. }) && e.to_string().contains("token_embd.weight"),
        "{e}"
    );
}

#[test]
fn wrong_format_version_and_architecture_are_named() {
    let bytes = meddr_like(10, vec![kv("meddr.format_version", 2u32)]);
    let h = parse_incrementally(&bytes).0.unwrap();
    let e = check_meddr(&h, bytes.len() as u64).unwrap_err().to_string();
    assert!(e.contains("meddr.format_version is 2"), "{e}");

    let mut h2 = h.clone();
    h2.metadata.retain(|(k, _)| k != "general.architecture");
    h2.metadata
        .push(("general.architecture".into(), Value::from("qwen2")));
    let e = check_meddr(&h2, bytes.len() as u64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"qwen2\""), "{e}");
}

#[test]
fn non_gguf_bytes_are_refused_from_the_first_slice() {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(200_000, 0);
    let (r, steps) = parse_incrementally(&bytes);
    assert!(matches!(r, Err(WebError::NotGguf { .. })), "{r:?}");
    assert_eq!(steps.len(), 1);
    assert!(r.unwrap_err().to_string().contains("89"));
}

#[test]
fn truncated_file_is_an_error_not_a_loop() {
    let bytes = meddr_like(5_000, vec![kv("meddr.format_version", 1u32)]);
    let cut = &bytes[..150_000];
    let (r, _) = parse_incrementally(cut);
    // Named by the field that runs past the end, without fetching beyond the file.
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("remain in the file"),
        "{e}"
    );
}

#[test]
fn missing_tensor_data_is_caught_before_upload() {
    let bytes = meddr_like(10, vec![kv("meddr.format_version", 1u32)]);
    let h = GgufHeader::from_bytes(&bytes).unwrap();
    let e = check_meddr(&h, bytes.len() as u64 - 100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the end of the file"), "{e}");
}

#[test]
fn rows_larger_than_a_binding_are_refused_with_the_tensor_name() {
    let bytes = meddr_like(10, vec![kv("meddr.format_version", 1u32)]);
    let h = GgufHeader::from_bytes(&bytes).unwrap();
    check_device_limits(&h, 588 * 2).unwrap();
    match check_device_limits(&h, 588 * 2 - 4) {
        Err(WebError::ExceedsDeviceLimit {
            tensor,
            needed,
            limit,
        }) => {
            assert_eq!(
                (tensor.as_str(), needed, limit),
                ("v.patch_embd.weight", 1176, 1172)
            );
        }
        other => panic!("expected ExceedsDeviceLimit, got {other:?}"),
    }
}

/// llama.cpp's layout in the browser: a MedDr language model alone is refused with what to do; with its
/// mmproj (in either order) it is one model whose tensors lie inside the merged byte space; two language
/// models are refused naming both.
#[test]
fn a_language_model_and_its_mmproj_pair_in_either_order() {
    let text_meta = vec![
        kv("general.architecture", "llama"),
        kv("general.name", "dev"),
        kv("llama.block_count", 3u32),
        kv("llama.embedding_length", 64u32),
        kv("meddr.format_version", 1u32),
        kv("tokenizer.ggml.tokens", vec!["a", "b"]),
    ];
    let text = write(
        "pair-text",
        text_meta,
        vec![
            TensorSpec::new("token_embd.weight", vec![64, 10], GgmlType::F32),
            TensorSpec::new("output.weight", vec![64, 10], GgmlType::Q8_0),
        ],
    );
    let proj = write(
        "pair-proj",
        vec![
            kv("general.architecture", "clip"),
            kv("general.name", "dev"),
            kv("meddr.format_version", 1u32),
            kv("clip.has_vision_encoder", true),
            kv("clip.vision.block_count", 2u32),
            kv("clip.vision.embedding_length", 32u32),
        ],
        vec![
            TensorSpec::new("v.patch_embd.weight", vec![588, 32], GgmlType::F16),
            TensorSpec::new("mm.model.mlp.1.weight", vec![256, 64], GgmlType::Q4_K),
        ],
    );
    let ht = GgufHeader::from_bytes(&text).unwrap();
    let hp = GgufHeader::from_bytes(&proj).unwrap();
    let e = check_meddr(&ht, text.len() as u64).unwrap_err().to_string();
    assert!(e.contains("mmproj") && e.contains("both files"), "{e}");
    let (lt, lp) = (text.len() as u64, proj.len() as u64);
    for (a, b, first_is_model) in [
        ((&ht, lt, "m.gguf"), (&hp, lp, "m.mmproj.gguf"), true),
        ((&hp, lp, "m.mmproj.gguf"), (&ht, lt, "m.gguf"), false),
    ] {
        let pair = meddr_web::check::pair_headers(a, b).unwrap();
        assert_eq!(pair.first_is_model, first_is_model);
        assert!(pair.mmproj_base >= lt && pair.merged_len == pair.mmproj_base + lp);
        let s = check_meddr(&pair.header, pair.merged_len).unwrap();
        assert_eq!((s.n_tensors, s.vision_layers, s.llm_layers), (4, 2, 3));
        // Every mmproj tensor's merged range maps back into the mmproj file's own bytes.
        for name in ["v.patch_embd.weight", "mm.model.mlp.1.weight"] {
            let r = pair
                .header
                .tensor_range(pair.header.tensor(name).unwrap())
                .unwrap();
            let own = hp.tensor_range(hp.tensor(name).unwrap()).unwrap();
            assert_eq!(r.start - pair.mmproj_base, own.start, "{name}");
            assert_eq!(r.end - pair.mmproj_base, own.end, "{name}");
        }
    }
    let e = meddr_web::check::pair_headers((&ht, lt, "a.gguf"), (&ht, lt, "b.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a.gguf") && e.contains("b.gguf"), "{e}");
}
