//! Each kind of malformed file yields its own error variant, naming the field and value.
mod common;

use common::Raw;
use meddr_gguf::*;

fn err(bytes: &[u8]) -> GgufError {
    match GgufHeader::from_bytes(bytes) {
        Ok(h) => panic!("expected an error, parsed {h:?}"),
        Err(e) => e,
    }
}

/// A valid file: 1 kv, tensors "first.weight" (f32 [4]) at 0 and "second.weight" (f32 [8]) at 32.
fn valid() -> Vec<u8> {
    valid_with_dir_end().0
}

/// Also returns where the tensor directory ends (before padding).
fn valid_with_dir_end() -> (Vec<u8>, usize) {
    let mut r = Raw::header(3, 2, 1);
    r.kv_str("general.architecture", "llama")
        .tensor("first.weight", &[4], 0, 0)
        .tensor("second.weight", &[8], 0, 32);
    let end = r.0.len();
    r.data(32, 64);
    (r.0, end)
}

#[test]
fn valid_fixture_parses() {
    let b = valid();
    let h = GgufHeader::from_bytes(&b).unwrap();
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.data_offset as usize + 64, b.len());
}

#[test]
fn truncated() {
    let (b, dir_end) = valid_with_dir_end();
    // Inside the last tensor's offset field.
    let cut = &b[..dir_end - 4];
    let e = err(cut);
    assert!(
        matches!(&e, GgufError::Truncated { available, .. } if *available == cut.len() as u64),
        "{e}"
    );
    assert!(e.to_string().contains("tensor"), "{e}");
    // Without a known length the same prefix just needs more bytes.
    assert!(matches!(
        GgufHeader::parse(cut).unwrap(),
        ParseOutcome::NeedMore { .. }
    ));
    // Inside the data: the header is fine but tensor "b" does not fit.
    let e = err(&b[..b.len() - 1]);
    assert!(
        matches!(&e, GgufError::TensorOutOfBounds { tensor, .. } if tensor == "second.weight"),
        "{e}"
    );
    // Empty and 3-byte files.
    assert!(matches!(err(&[]), GgufError::Truncated { .. }));
    assert!(matches!(err(b"GGU"), GgufError::Truncated { .. }));
    assert!(matches!(
        GgufHeader::parse(b"GG").unwrap(),
        ParseOutcome::NeedMore { at_least: 4 }
    ));
}

#[test]
fn bad_magic() {
    let mut b = valid();
    b[0] = b'X';
    assert!(matches!(err(&b), GgufError::BadMagic { found } if &found == b"XGUF"));
    // Detected from the first byte, without waiting for more data.
    assert!(matches!(
        GgufHeader::parse(b"P"),
        Err(GgufError::BadMagic { .. })
    ));
}

#[test]
fn unsupported_versions() {
    let b = Raw::header(1, 0, 0).0;
    assert!(matches!(
        err(&b),
        GgufError::UnsupportedVersion { version: 1 }
    ));
    let b = Raw::header(0x0300_0000, 0, 0).0; // big-endian v3
    assert!(matches!(
        err(&b),
        GgufError::UnsupportedVersion {
            version: 0x0300_0000
        }
    ));
    let mut r = Raw::header(2, 0, 0);
    r.data(32, 0);
    assert_eq!(GgufHeader::from_bytes(&r.0).unwrap().version, 2);
}

#[test]
fn duplicates() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[4], 0, 0)
        .tensor("w", &[4], 0, 32)
        .data(32, 64);
    assert!(matches!(err(&r.0), GgufError::DuplicateTensor { name } if name == "w"));
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_str("k", "x");
    assert!(matches!(err(&r.0), GgufError::DuplicateKey { key } if key == "k"));
}

#[test]
fn invalid_keys() {
    // The GGUF spec's keys are non-empty ASCII, dot-separated: each bad kind is named, with the entry's index.
    for (key, why) in [
        ("", "empty"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ("a b", "space"),
        ("caf\u{e9}.x", "non-ASCII"),
        ("a\tb", "control"),
    ] {
        let mut r = Raw::header(3, 0, 2);
        r.kv_u32("general.ok", 1).kv_u32(key, 1);
        let e = err(&r.0);
        assert!(
            matches!(&e, GgufError::InvalidKey { index: 1, key: k, .. } if k == key),
            "{key:?}: {e:?}"
        );
        assert!(e.to_string().contains(why), "{key:?}: {e}");
    }
    // Real files' keys stay valid: case, '-', '_' and digits are free.
    let mut r = Raw::header(3, 0, 3);
    r.kv_u32("tokenizer.ggml.add_bos_token", 1)
        .kv_u32("LLM.context-length", 1)
        .kv_u32("a.b2.c_3", 1);
    GgufHeader::from_bytes(&r.0).unwrap();
    // The writer refuses to write one.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-gguf-badkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = GgufWriter::create(dir.join("x.gguf"), vec![("".into(), Value::U32(1))], vec![])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::InvalidKey { index: 0, .. }), "{e:?}");
    assert!(!dir.join("x.gguf").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_types() {
    for id in [4, 5, 31, 99] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("w", &[32], id, 0).data(32, 64);
        let e = err(&r.0);
        assert!(
            matches!(&e, GgufError::UnknownGgmlType { id: i, field } if *i == id && field.contains("\"w\"")),
            "{e}"
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(
        matches!(err(&r.0), GgufError::UnknownValueType { id: 13, field } if field.contains("\"k\""))
    );
}

#[test]
fn bad_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(32, 4);
    assert!(matches!(err(&r.0), GgufError::BadDimCount { tensor, n_dims: 5 } if tensor == "w"));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[], 0, 0).data(32, 4);
    assert!(matches!(
        err(&r.0),
        GgufError::BadDimCount { n_dims: 0, .. }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.str("w").u32(u32::MAX).data(1, 64);
    assert!(matches!(
        err(&r.0),
        GgufError::BadDimCount {
            n_dims: 4294967295,
            ..
        }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4, 0], 0, 0).data(32, 4);
    assert!(matches!(
        err(&r.0),
        GgufError::BadDim {
            axis: 1,
            value: 0,
            ..
        }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 40, 1 << 40], 0, 0).data(32, 4);
    assert!(matches!(err(&r.0), GgufError::Overflow { field } if field.contains("\"w\"")));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[33], 2, 0).data(32, 64); // q4_0 row of 33 elements
    assert!(matches!(
        err(&r.0),
        GgufError::NotBlockMultiple {
            ty: "q4_0",
            n_elements: 33,
            block_size: 32
        }
    ));
}

#[test]
fn huge_lengths() {
    // A key claiming 1 TiB.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 40).data(1, 64);
    let e = err(&r.0);
    assert!(
        matches!(&e, GgufError::StringTooLong { len, .. } if *len == 1 << 40),
        "{e}"
    );
    assert!(e.to_string().contains("metadata entry #0 key"), "{e}");
    // The same without a known length: still rejected (the cap does not depend on the length).
    assert!(matches!(
        GgufHeader::parse(&r.0),
        Err(GgufError::StringTooLong { .. })
    ));
    // Under the cap but longer than the file.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(1000).u64(0);
    assert!(matches!(
        err(&r.0),
        GgufError::LengthExceedsRemaining {
            len: 1000,
            remaining: 8,
            ..
        }
    ));
    // Array counts.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(10).u64(u64::MAX);
    let e = err(&r.0);
    assert!(
        matches!(&e, GgufError::LengthExceedsRemaining { len: u64::MAX, field, .. } if field.contains("\"k\"")),
        "{e}"
    );
    assert!(matches!(
        GgufHeader::parse(&r.0),
        Err(GgufError::Overflow { .. })
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(10).u64(1 << 50);
    assert!(matches!(
        err(&r.0),
        GgufError::LengthExceedsRemaining { .. }
    ));
    // Without a length the header cap applies (so read_from never fetches gigabytes).
    let e = GgufHeader::parse(&r.0).unwrap_err();
    assert!(
        matches!(&e, GgufError::HeaderTooLarge { needed, max: MAX_HEADER_LEN, .. } if *needed > 1 << 50),
        "{e}"
    );
    // A plausible array past the prefix: ask for exactly the bytes it needs, allocating nothing yet.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(0).u64(1000);
    let at = r.0.len() as u64 + 1000;
    assert_eq!(
        GgufHeader::parse(&r.0).unwrap(),
        ParseOutcome::NeedMore { at_least: at }
    );
    // Absurd counts of entries.
    let r = Raw::header(3, 0, u64::MAX);
    assert!(
        matches!(err(&r.0), GgufError::LengthExceedsRemaining { field, .. } if field == "metadata_kv_count")
    );
    let r = Raw::header(3, 1 << 60, 0);
    assert!(
        matches!(err(&r.0), GgufError::LengthExceedsRemaining { field, .. } if field == "tensor_count")
    );
}

#[test]
fn misaligned_and_overlapping() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, 16).data(32, 64);
    let e = err(&r.0);
    assert!(
        matches!(&e, GgufError::MisalignedOffset { tensor, offset: 16, alignment: 32 } if tensor == "w"),
        "{e}"
    );
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[4], 0, 32)
        .data(32, 128); // a is 64 bytes
    let e = err(&r.0);
    assert!(
        matches!(&e, GgufError::TensorOverlap { first, second, .. } if first == "a" && second == "b"),
        "{e}"
    );
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, !31u64).data(32, 64);
    assert!(matches!(err(&r.0), GgufError::Overflow { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, 64).data(32, 64);
    assert!(matches!(err(&r.0), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        let e = err(&r.0);
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == a as u64),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("general.alignment = {a}")),
            "{e}"
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "32");
    assert!(matches!(err(&r.0), GgufError::TypeMismatch { key, .. } if key == "general.alignment"));
    // Non-default alignment is honoured.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("w", &[4], 0, 0)
        .data(64, 16);
    let h = GgufHeader::from_bytes(&r.0).unwrap();
    assert_eq!((h.alignment, h.data_offset % 64), (64, 0));
}

#[test]
fn bad_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(7);
    r.0.push(2);
    assert!(matches!(err(&r.0), GgufError::InvalidBool { value: 2, .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(2);
    r.0.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(err(&r.0), GgufError::InvalidUtf8 { field } if field.contains("\"k\"")));
    // Arrays nested 100 deep.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9);
    for _ in 0..100 {
        r.u32(9).u64(1);
    }
    assert!(matches!(err(&r.0), GgufError::NestingTooDeep { .. }));
}

#[test]
fn byte_source_errors() {
    let b = valid();
    let mut buf = [0u8; 8];
    assert!(matches!(
        b[..].read_at(b.len() as u64 - 4, &mut buf),
        Err(GgufError::Truncated { .. })
    ));
    assert!(matches!(
        b[..].read_at(u64::MAX, &mut buf),
        Err(GgufError::Truncated { .. })
    ));
    let e = FileSource::open("/nonexistent/dir/x.gguf").unwrap_err();
    assert!(
        matches!(&e, GgufError::Io { .. }) && e.to_string().contains("/nonexistent/dir/x.gguf"),
        "{e}"
    );
    let e = GgufFile::open("/nonexistent/dir/x.gguf").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/dir/x.gguf"), "{e}");
}
