//! Bad inputs give typed errors, never panics.

mod common;

use common::*;
use meddr_tokenizer::{MedDrTokenizer, SentencePieceModel, TokenizerError, TokenizerSpec};

fn copy_fixture(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    for f in [
        "tokenizer.model",
        "added_tokens.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn truncated_model_is_a_protobuf_error_with_offset() {
    let bytes = std::fs::read(fixture_dir().join("tokenizer.model")).unwrap();
    let mut rng = Rng(7);
    let mut cuts: Vec<usize> = (1..64).collect();
    cuts.extend((0..300).map(|_| 1 + rng.below(bytes.len() - 1)));
    for cut in cuts {
        match SentencePieceModel::parse(&bytes[..cut]) {
            // A cut on a field boundary inside the piece list is a valid (shorter) model; then it has fewer pieces.
            Ok(m) => assert!(m.pieces.len() < 2000, "cut {cut}"),
            Err(TokenizerError::Protobuf { offset, .. }) => {
                assert!(offset <= cut, "cut {cut}: offset {offset}")
            }
            Err(e) => panic!("cut {cut}: unexpected error {e}"),
        }
    }
    // Through the directory reader the error surfaces unchanged.
    let dir = copy_fixture("truncated");
    std::fs::write(dir.join("tokenizer.model"), &bytes[..bytes.len() / 2]).unwrap();
    let err = TokenizerSpec::from_hf_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Protobuf { .. }), "{err}");
    assert!(err.to_string().contains("offset"), "{err}");
}

#[test]
fn garbage_model_bytes() {
    for bad in [
        &b""[..],
        b"\x07",
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x0b\x00",
        b"\x0a\x02\x15\x00",
    ] {
        match SentencePieceModel::parse(bad) {
            Err(TokenizerError::Protobuf { .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A piece with an invalid type, and a piece whose string is not UTF-8.
    let e = SentencePieceModel::parse(b"\x0a\x05\x0a\x01a\x18\x09").unwrap_err();
    assert!(e.to_string().contains("type = 9"), "{e}");
    let e = SentencePieceModel::parse(b"\x0a\x03\x0a\x01\xff").unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[test]
fn bad_json_is_a_json_error() {
    let dir = copy_fixture("badjson");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"add_bos_token\": false,",
    )
    .unwrap();
    let err = TokenizerSpec::from_hf_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Json { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    assert!(matches!(
        MedDrTokenizer::from_hf_json("{\"model\": "),
        Err(TokenizerError::Json { .. })
    ));
    let wordpiece = r#"{"version":"1.0","model":{"type":"WordPiece","vocab":{"a":0}}}"#;
    assert!(matches!(
        MedDrTokenizer::from_hf_json(wordpiece),
        Err(TokenizerError::Unsupported(_))
    ));
}

#[test]
fn added_token_clash_and_gap() {
    let dir = copy_fixture("clash");
    // id 5 is the SentencePiece piece "<|System|>".
    std::fs::write(dir.join("added_tokens.json"), r#"{"<foo>": 5}"#).unwrap();
    let err = TokenizerSpec::from_hf_dir(&dir).unwrap_err();
    match &err {
        TokenizerError::AddedToken { content, id: 5, .. } => assert_eq!(content, "<foo>"),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("<|System|>"), "{err}");

    // Same id, different content in added_tokens.json and tokenizer_config.json.
    std::fs::write(dir.join("added_tokens.json"), r#"{"<image>": 2000}"#).unwrap();
    assert!(matches!(
        TokenizerSpec::from_hf_dir(&dir),
        Err(TokenizerError::AddedToken { id: 2000, .. })
    ));

    // A gap after the last added token.
    std::fs::write(dir.join("added_tokens.json"), r#"{"<late>": 2010}"#).unwrap();
    let err = TokenizerSpec::from_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizerError::AddedToken { id: 2010, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2009"), "{err}");
}

#[test]
fn gguf_parts_are_validated() {
    let spec = fixture_spec();
    let parts = |types: Vec<i32>, bos: u32, json: Option<String>| {
        TokenizerSpec::from_gguf_parts(
            spec.tokens.clone(),
            spec.scores.clone(),
            types,
            bos,
            spec.eos_id,
            spec.unk_id,
            spec.pad_id,
            false,
            false,
            false,
            json,
        )
    };
    assert!(matches!(
        parts(spec.token_types[..10].to_vec(), 1, None),
        Err(TokenizerError::Config(_))
    ));
    let mut bad = spec.token_types.clone();
    bad[17] = 9;
    let e = parts(bad, 1, None).unwrap_err();
    assert!(e.to_string().contains("token_type[17] = 9"), "{e}");
    assert!(parts(spec.token_types.clone(), 5000, None).is_err());
    // JSON that disagrees with the arrays.
    let other = spec.hf_json.replace("\"<IMG_CONTEXT>\"", "\"<IMG_CTX>\"");
    assert!(
        parts(spec.token_types.clone(), 1, Some(other)).is_ok(),
        "added-token text may differ (llama.cpp rewrites it)"
    );
    let mut v: serde_json::Value = serde_json::from_str(&spec.hf_json).unwrap();
    v["added_tokens"].as_array_mut().unwrap().pop();
    let shorter = v.to_string();
    assert!(matches!(
        parts(spec.token_types.clone(), 1, Some(shorter)),
        Err(TokenizerError::Config(_))
    ));
}

/// Every input the fuzzer (`tests/fuzz`, targets `tokenizer_json` and `sentencepiece`) ever crashed on, run
/// through the same calls as the fuzz targets: each must now be a clean error or a working tokenizer.
#[test]
fn fuzz_regressions_fail_cleanly() {
    let dir = workspace_root().join("tests/fuzz/regressions");
    let mut n = 0;
    for target in ["tokenizer_json", "sentencepiece"] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            n += 1;
            if target == "sentencepiece" {
                let _ = SentencePieceModel::parse(&bytes);
                continue;
            }
            let Ok(json) = std::str::from_utf8(&bytes) else {
                continue;
            };
            match MedDrTokenizer::from_hf_json(json) {
                Ok(tok) => {
                    tok.encode("<|im_start|>user\nIs <|im_end|> 日本 ok?")
                        .unwrap();
                    let _ = tok.decode(&[0, 1, 2], false);
                }
                Err(e) => assert!(!e.to_string().is_empty(), "{}", p.display()),
            }
        }
    }
    assert!(n > 0, "no regression inputs under {}", dir.display());
}
