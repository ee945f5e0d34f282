//! llama.cpp's own tokenizer test vectors: the vocab-only GGUFs of its `models/` folder with their `.inp`/`.out`
//! cases (fetched by tests/setup.sh into `.cache/llama-vocab/`). Format and comparison as in llama.cpp's
//! `tests/test-tokenizer-0.cpp`: inputs are separated by `\n__ggml_vocab_test__\n`, each `.out` line holds the
//! ids of one input, tokenized with `add_special = false` (no BOS/EOS) and `parse_special = false`.
//!
//! Every vocabulary is either accepted, and then each byte-level BPE case must give exactly llama.cpp's ids
//! (and decode, stream and `token_bytes` back to the input), or refused with an error that names
//! `tokenizer.ggml.model` / `tokenizer.ggml.pre`. SentencePiece vocabularies (model `llama`) follow upstream
//! transformers, not llama.cpp: their pass counts are reported, not required.

use std::path::{Path, PathBuf};

use meddr_gguf::{Array, GgufHeader, Value};
use meddr_runtime::tokenizer_from_gguf_header;
use meddr_tokenizer::MedDrTokenizer;

fn vocab_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/llama-vocab");
    assert!(
        d.join("ggml-vocab-llama-bpe.gguf.out").is_file(),
        "{} is missing: run tests/setup.sh",
        d.display()
    );
    d
}

fn header(path: &Path) -> GgufHeader {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    GgufHeader::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (input, expected ids) pairs, as `read_tests` of test-tokenizer-0.cpp reads them.
fn cases(gguf: &Path) -> Option<Vec<(String, Vec<u32>)>> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).ok()?;
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).ok()?;
    // A separator at the very end starts no further case (the C++ reader stops at the end of the text).
    let sep = "\n__ggml_vocab_test__\n";
    let inputs: Vec<&str> = inp.strip_suffix(sep).unwrap_or(&inp).split(sep).collect();
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{}: .inp and .out disagree on the number of cases",
        gguf.display()
    );
    Some(
        inputs
            .into_iter()
            .zip(outputs)
            .map(|(i, o)| {
                let ids = o
                    .split_whitespace()
                    .map(|t| t.parse().unwrap_or_else(|_| panic!("bad id {t:?} in .out")))
                    .collect();
                (i.to_owned(), ids)
            })
            .collect(),
    )
}

fn meta_str<'a>(h: &'a GgufHeader, key: &str) -> Option<&'a str> {
    h.get_str(key).ok()
}

/// Everything besides the ids, for a byte-level case: lossless decode, streaming that adds up, token bytes.
fn check_round_trip(tok: &MedDrTokenizer, text: &str, ids: &[u32]) -> Result<(), String> {
    let decoded = tok.decode(ids, false).map_err(|e| e.to_string())?;
    if decoded != text {
        return Err(format!("decodes to {decoded:?}"));
    }
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| tok.token_bytes(id).unwrap())
        .collect();
    if bytes != text.as_bytes() {
        return Err(format!(
            "token_bytes concatenate to {:?}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let mut stream = tok.decode_stream();
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        let piece = if i + 1 == ids.len() {
            stream.step_last(id)
        } else {
            stream.step(id)
        };
        streamed.extend(piece.map_err(|e| e.to_string())?);
    }
    let skipped = tok.decode(ids, true).map_err(|e| e.to_string())?;
    if streamed != skipped {
        return Err(format!(
            "streams as {streamed:?}, decodes (skip special) as {skipped:?}"
        ));
    }
    Ok(())
}

fn llama_bpe_inputs(dir: &Path) -> Vec<String> {
    cases(&dir.join("ggml-vocab-llama-bpe.gguf"))
        .unwrap()
        .into_iter()
        .map(|(text, _)| text)
        .collect()
}

struct Outcome {
    passed: usize,
    failures: Vec<String>,
}

fn run_cases(tok: &MedDrTokenizer, cases: &[(String, Vec<u32>)], round_trip: bool) -> Outcome {
    let mut passed = 0;
    let mut failures = Vec::new();
    for (text, want) in cases {
        let got = match tok.encode_with(text, false, false) {
            Ok(ids) => ids,
            Err(e) => {
                failures.push(format!("{text:?}: error {e}"));
                continue;
            }
        };
        if &got != want {
            failures.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
            continue;
        }
        if round_trip {
            if let Err(e) = check_round_trip(tok, text, &got) {
                failures.push(format!("{text:?}: {e}"));
                continue;
            }
        }
        passed += 1;
    }
    Outcome { passed, failures }
}

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = vocab_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "only {} vocab files in {}",
        files.len(),
        dir.display()
    );
    let mut problems = Vec::new();
    let mut accepted_bpe_with_cases = 0;
    println!("llama.cpp vocab vectors ({}):", dir.display());
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let h = header(path);
        let model = meta_str(&h, "tokenizer.ggml.model")
            .unwrap_or("-")
            .to_owned();
        let pre = meta_str(&h, "tokenizer.ggml.pre").unwrap_or("-").to_owned();
        let cases = cases(path);
        match tokenizer_from_gguf_header(&h) {
            Err(e) => {
                let msg = e.to_string();
                println!("  {name} (model {model}, pre {pre}): refused: {msg}");
                if !msg.contains("tokenizer.ggml.model") && !msg.contains("tokenizer.ggml.pre") {
                    problems.push(format!("{name}: refused without naming model/pre: {msg}"));
                }
            }
            Ok(tok) => {
                let byte_level = tok.is_byte_level();
                let Some(cases) = cases else {
                    // No llama.cpp ids to compare with (e.g. pre `default`): the llama-bpe inputs must still
                    // encode and come back unchanged through decode, token bytes and the stream.
                    let mut round_trips = 0;
                    let inputs = llama_bpe_inputs(&dir);
                    for text in &inputs {
                        let r = tok
                            .encode_with(text, false, false)
                            .map_err(|e| e.to_string())
                            .and_then(|ids| {
                                if byte_level {
                                    check_round_trip(&tok, text, &ids)
                                } else {
                                    Ok(())
                                }
                            });
                        match r {
                            Ok(()) => round_trips += 1,
                            Err(e) => problems.push(format!("{name}: {text:?}: {e}")),
                        }
                    }
                    println!(
                        "  {name} (model {model}, pre {pre}): accepted, no .inp/.out cases; {round_trips}/{} llama-bpe inputs {}",
                        inputs.len(),
                        if byte_level { "round-trip" } else { "encode" }
                    );
                    continue;
                };
                let o = run_cases(&tok, &cases, byte_level);
                println!(
                    "  {name} (model {model}, pre {pre}): accepted: {}/{} cases",
                    o.passed,
                    cases.len()
                );
                for f in &o.failures {
                    println!("      {f}");
                }
                if byte_level {
                    accepted_bpe_with_cases += 1;
                    problems.extend(o.failures.iter().map(|f| format!("{name}: {f}")));
                }
            }
        }
    }
    assert!(
        accepted_bpe_with_cases >= 2,
        "expected llama-bpe and gpt-2 to be accepted"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// llama.cpp gives pre types `starcoder` and `refact` the same regexes as `smollm` (single digits, then GPT-2's),
/// and `mpt` the same as `gpt-2`; only decoding's space clean-up differs. Their vectors, read under the supported
/// name, check those paths against llama.cpp once more (MPT's vocabulary also has USER_DEFINED whitespace tokens,
/// matched whole in the text).
#[test]
fn supported_pre_types_on_vectors_of_same_regex_vocabs() {
    let dir = vocab_dir();
    for (name, as_pre) in [
        ("ggml-vocab-starcoder.gguf", "smollm"),
        ("ggml-vocab-refact.gguf", "smollm"),
        ("ggml-vocab-mpt.gguf", "gpt-2"),
    ] {
        let path = dir.join(name);
        let mut h = header(&path);
        let pre = h
            .metadata
            .iter_mut()
            .find(|(k, _)| k == "tokenizer.ggml.pre")
            .expect("tokenizer.ggml.pre");
        pre.1 = Value::String(as_pre.into());
        let tok = tokenizer_from_gguf_header(&h).unwrap();
        let cases = cases(&path).unwrap();
        let o = run_cases(&tok, &cases, true);
        println!(
            "{name} read as {as_pre}: {}/{} cases",
            o.passed,
            cases.len()
        );
        assert!(o.failures.is_empty(), "{name}:\n{}", o.failures.join("\n"));
    }
}

/// Malformed byte-level headers: typed errors naming the key (and the offending entry), never panics.
#[test]
fn malformed_byte_level_headers_name_the_key() {
    let path = vocab_dir().join("ggml-vocab-gpt-2.gguf");
    let base = header(&path);
    let with = |key: &str, v: Option<Value>| -> String {
        let mut h = base.clone();
        h.metadata.retain(|(k, _)| k != key);
        if let Some(v) = v {
            h.metadata.push((key.to_owned(), v));
        }
        match tokenizer_from_gguf_header(&h) {
            Ok(_) => panic!("{key}: accepted"),
            Err(e) => e.to_string(),
        }
    };
    let e = with("tokenizer.ggml.model", Some(Value::String("t5".into())));
    assert!(
        e.contains("tokenizer.ggml.model = \"t5\" is not supported"),
        "{e}"
    );
    let e = with("tokenizer.ggml.pre", Some(Value::String("qwen2".into())));
    assert!(e.contains("tokenizer.ggml.pre = \"qwen2\" is not supported (supported: default, llama-bpe, llama3, smollm, gpt-2)"), "{e}");
    let e = with("tokenizer.ggml.pre", Some(Value::U32(3)));
    assert!(e.contains("tokenizer.ggml.pre"), "{e}");
    let e = with("tokenizer.ggml.merges", None);
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = with(
        "tokenizer.ggml.merges",
        Some(Value::Array(Array::U32(vec![1, 2]))),
    );
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = with(
        "tokenizer.ggml.merges",
        Some(Value::Array(Array::String(vec![
            "Ġ t".into(),
            "nospace".into(),
        ]))),
    );
    assert!(e.contains("tokenizer.ggml.merges[1] = \"nospace\""), "{e}");
    let e = with(
        "tokenizer.ggml.token_type",
        Some(Value::Array(Array::I32(vec![1; 3]))),
    );
    assert!(e.contains("tokenizer.ggml.token_type has 3 entries"), "{e}");
    let e = with("tokenizer.ggml.bos_token_id", Some(Value::U32(50257)));
    assert!(e.contains("tokenizer.ggml.bos_token_id = 50257"), "{e}");
    let e = with(
        "tokenizer.ggml.tokens",
        Some(Value::Array(Array::String(vec![]))),
    );
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
}

/// The streaming decoder's windowed steps equal, step for step, decoding every id so far and handing out the
/// new complete text (its quadratic definition), on random id sequences of every vocabulary we accept
/// (byte-level BPE and SentencePiece): half the ids among the specials, added tokens and single-byte pieces.
#[test]
fn decode_stream_steps_equal_whole_decodes_in_every_accepted_vocab() {
    let dir = vocab_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut checked = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(tok) = tokenizer_from_gguf_header(&header(path)) else {
            continue;
        };
        let n = tok.vocab_size() as u32;
        let tricky: Vec<u32> = (0..n)
            .filter(|&i| {
                tok.is_special(i)
                    || tok.token_bytes(i).is_some_and(|b| b.len() == 1)
                    || tok.id_to_token(i).is_some_and(|t| t.starts_with('<'))
            })
            .collect();
        for case in 0..300 {
            let len = 1 + (next() % 40) as usize;
            let seq: Vec<u32> = (0..len)
                .map(|_| {
                    if next() % 2 == 0 && !tricky.is_empty() {
                        tricky[(next() % tricky.len() as u64) as usize]
                    } else {
                        (next() % u64::from(n)) as u32
                    }
                })
                .collect();
            let mut stream = tok.decode_stream();
            let mut emitted = 0usize;
            for (i, &id) in seq.iter().enumerate() {
                let full = tok.decode(&seq[..=i], true).unwrap();
                let last = i + 1 == len;
                let want = if (!last && full.ends_with('\u{FFFD}'))
                    || full.len() <= emitted
                    || !full.is_char_boundary(emitted)
                {
                    None
                } else {
                    let d = full[emitted..].to_owned();
                    emitted = full.len();
                    Some(d)
                };
                let got = if last {
                    stream.step_last(id)
                } else {
                    stream.step(id)
                }
                .unwrap();
                assert_eq!(got, want, "{name}: case {case}, step {i} of {seq:?}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} vocabularies accepted");
}
