//! Mutation "fuzzing": corrupt or cut a valid file in many ways; parsing must return Ok/Err, never panic,
//! and whatever parses must be internally consistent.
mod common;

use common::{all_type_specs, sample_metadata, tensor_bytes, Rng, TempDir};
use meddr_gguf::*;

fn base_file() -> Vec<u8> {
    let dir = TempDir::new("fuzz");
    let path = dir.path("base.gguf");
    let specs: Vec<TensorSpec> = all_type_specs().into_iter().take(12).collect();
    let mut w = GgufWriter::create(&path, sample_metadata(), specs.clone()).unwrap();
    for (i, s) in specs.iter().enumerate() {
        w.write_tensor(&s.name, &tensor_bytes(s, i as u64)).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Runs every entry point on `bytes`; checks invariants of anything that parses.
fn exercise(bytes: &[u8]) -> bool {
    let _ = GgufHeader::parse(bytes);
    let _ = GgufHeader::parse_with_len(bytes, Some(bytes.len() as u64 + 1000));
    let _ = GgufHeader::read_from(bytes);
    match GgufHeader::from_bytes(bytes) {
        Ok(h) => {
            h.validate_against_len(bytes.len() as u64).unwrap();
            for t in &h.tensors {
                let r = h.tensor_range(t).unwrap();
                assert!(r.end <= bytes.len() as u64 && r.start >= h.data_offset);
                assert_eq!(t.try_byte_size().unwrap(), r.end - r.start);
            }
            for (k, _) in &h.metadata {
                let _ = (
                    h.get_u32(k),
                    h.get_f32(k),
                    h.get_str(k),
                    h.get_u32_array(k),
                    h.get_str_array(k),
                );
            }
            // What we parse, we can re-encode and parse again identically.
            let enc = h.encode().unwrap();
            assert_eq!(enc.len() as u64, h.data_offset);
            match GgufHeader::parse(&enc).unwrap() {
                // Compare encodings: NaN values make `==` on headers false.
                ParseOutcome::Complete(h2) => assert_eq!(h2.encode().unwrap(), enc),
                ParseOutcome::NeedMore { .. } => panic!("re-encoded header incomplete"),
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

#[test]
fn truncation_at_every_length() {
    let base = base_file();
    let h = GgufHeader::from_bytes(&base).unwrap();
    let hdr = h.data_offset as usize;
    for n in (0..=hdr + 64).chain((hdr..base.len()).step_by(97)) {
        let cut = &base[..n];
        assert!(
            !exercise(cut) || n >= base.len() - 64,
            "truncated file of {n} bytes parsed"
        );
        // Unknown length: a header prefix asks for more, or (once only padding is missing) completes.
        if n < hdr {
            match GgufHeader::parse(cut) {
                Ok(ParseOutcome::NeedMore { at_least }) => assert!(at_least > n as u64),
                Ok(ParseOutcome::Complete(p)) => assert_eq!(p, h, "prefix {n}"),
                Err(e) => panic!("prefix {n}: {e}"),
            }
        }
    }
}

#[test]
fn single_byte_mutations_in_header() {
    let base = base_file();
    let hdr = GgufHeader::from_bytes(&base).unwrap().data_offset as usize;
    let mut ok = 0;
    let mut bad = 0;
    for pos in 0..hdr {
        let orig = base[pos];
        for v in [
            0x00,
            0xff,
            0x80,
            0x7f,
            0x40,
            0x20,
            orig ^ 1,
            orig.wrapping_add(1),
            orig.wrapping_sub(1),
        ] {
            if v == orig {
                continue;
            }
            let mut b = base.clone();
            b[pos] = v;
            if exercise(&b) {
                ok += 1
            } else {
                bad += 1
            }
        }
    }
    // Sanity: both outcomes occur (value bytes may change freely, structure bytes may not).
    assert!(ok > 100 && bad > 100, "ok {ok} bad {bad}");
}

#[test]
fn random_multi_byte_mutations() {
    let base = base_file();
    let hdr = GgufHeader::from_bytes(&base).unwrap().data_offset as usize;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..4000 {
        let mut b = base.clone();
        for _ in 0..=rng.below(4) {
            let pos = (rng.below(hdr as u64) as usize).min(b.len() - 1);
            match rng.below(4) {
                // Plant a large little-endian number (lengths, counts, dims, offsets).
                0 if pos + 8 <= b.len() => {
                    let x = match rng.below(3) {
                        0 => rng.next_u64(),
                        1 => 1u64 << rng.below(64),
                        _ => rng.below(1 << 20),
                    };
                    b[pos..pos + 8].copy_from_slice(&x.to_le_bytes());
                }
                1 => b[pos] = rng.next_u64() as u8,
                2 => {
                    b.truncate(pos.max(1) + rng.below(64) as usize);
                }
                _ => {
                    let n = rng.below(16) as usize;
                    let bytes = rng.bytes(n);
                    b.splice(pos..pos, bytes);
                }
            }
        }
        exercise(&b);
    }
}

#[test]
fn mutated_files_through_mmap() {
    let base = base_file();
    let hdr = GgufHeader::from_bytes(&base).unwrap().data_offset as usize;
    let dir = TempDir::new("fuzz-mmap");
    let mut rng = Rng(42);
    for i in 0..150 {
        let mut b = base.clone();
        let pos = rng.below(hdr as u64) as usize;
        b[pos] = rng.next_u64() as u8;
        if i % 3 == 0 {
            b.truncate(rng.below(base.len() as u64) as usize);
        }
        let path = dir.path(&format!("m{i}.gguf"));
        std::fs::write(&path, &b).unwrap();
        if let Ok(f) = GgufFile::open(&path) {
            for t in &f.header.tensors {
                assert_eq!(f.tensor_data(t).len() as u64, t.byte_size());
            }
        }
        let _ = GgufHeader::read_from(&FileSource::open(&path).unwrap());
    }
}
