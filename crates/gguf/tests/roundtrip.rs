mod common;

use std::cell::RefCell;

use common::{all_type_specs, canon, sample_metadata, tensor_bytes, TempDir};
use meddr_gguf::*;

fn write_sample(dir: &TempDir, name: &str) -> (std::path::PathBuf, Vec<TensorSpec>, Vec<Vec<u8>>) {
    let path = dir.path(name);
    let specs = all_type_specs();
    let data: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| tensor_bytes(s, i as u64))
        .collect();
    let mut w = GgufWriter::create(&path, sample_metadata(), specs.clone()).unwrap();
    for (s, d) in specs.iter().zip(&data) {
        w.write_tensor(&s.name, d).unwrap();
    }
    w.finish().unwrap();
    (path, specs, data)
}

fn assert_same_metadata(h: &GgufHeader) {
    let want = sample_metadata();
    assert_eq!(h.metadata.len(), want.len());
    for ((k1, v1), (k2, v2)) in h.metadata.iter().zip(&want) {
        assert_eq!(k1, k2, "metadata order");
        assert_eq!(canon(v1), canon(v2), "value of {k1}");
    }
}

#[test]
fn round_trip_all_values_and_tensor_types() {
    let dir = TempDir::new("rt");
    let (path, specs, data) = write_sample(&dir, "m.gguf");
    assert_eq!(
        dir.entries(),
        vec!["m.gguf".to_string()],
        "no temp file left"
    );

    let f = GgufFile::open(&path).unwrap();
    let h = &f.header;
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
    assert_same_metadata(h);
    assert_eq!(h.tensors.len(), specs.len());
    for ((t, s), d) in h.tensors.iter().zip(&specs).zip(&data) {
        assert_eq!((&t.name, &t.dims, t.ty), (&s.name, &s.dims, s.ty));
        assert_eq!(t.offset % 64, 0, "{} offset aligned", t.name);
        assert_eq!(t.row_len(), s.dims[0]);
        assert_eq!(t.n_rows(), 3);
        assert_eq!(t.n_elements(), s.dims[0] * 3);
        assert_eq!(t.byte_size(), d.len() as u64);
        assert_eq!(t.byte_size(), t.row_bytes() * 3);
        assert_eq!(f.tensor_data(t), &d[..], "data of {}", t.name);
        assert_eq!(f.tensor_bytes(&s.name).unwrap(), &d[..]);
    }
    assert!(f.tensor("nope").is_none());

    // The same header through the other entry points.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&GgufHeader::from_bytes(&bytes).unwrap(), h);
    assert_eq!(
        &GgufHeader::read_from(&FileSource::open(&path).unwrap()).unwrap(),
        h
    );
    assert_eq!(&GgufHeader::read_from(&bytes[..]).unwrap(), h);
    // Re-encoding reproduces the header bytes exactly.
    assert_eq!(h.encode().unwrap(), bytes[..h.data_offset as usize]);
}

#[test]
fn getters_convert_and_name_the_key() {
    let dir = TempDir::new("get");
    let (path, _, _) = write_sample(&dir, "m.gguf");
    let h = GgufHeader::read_from(&FileSource::open(&path).unwrap()).unwrap();
    assert_eq!(h.get_u32("t.u8").unwrap(), 255);
    assert_eq!(h.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(h.get_i32("t.i8").unwrap(), -128);
    assert_eq!(h.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(h.get_i64("t.i64").unwrap(), i64::MIN);
    assert_eq!(h.get_f32("t.f32").unwrap(), -1.5e-7);
    assert_eq!(h.get_f64("t.f64").unwrap(), std::f64::consts::PI);
    assert!(h.get_bool("t.bool_t").unwrap());
    assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(h.get_u32_array("a.u8").unwrap(), vec![0, 1, 255]);
    assert_eq!(h.get_u32_array("a.u32").unwrap(), vec![7, 8, 9]);
    assert_eq!(h.get_i32_array("a.i8").unwrap(), vec![-1, 0, 127]);
    assert_eq!(h.get_f32_array("a.f32").unwrap(), vec![0.485, 0.456, 0.406]);
    assert_eq!(
        h.get_str_array("a.str").unwrap(),
        vec!["<s>", "</s>", "▁the", ""]
    );
    assert!(matches!(h.get("a.nested"), Some(Value::Array(Array::Array(v))) if v.len() == 4));

    let e = h.get_u32("t.i8").unwrap_err();
    assert!(
        matches!(&e, GgufError::ValueOutOfRange { key, .. } if key == "t.i8"),
        "{e}"
    );
    assert!(e.to_string().contains("-128"), "{e}");
    let e = h.get_u32("t.u64").unwrap_err();
    assert!(
        matches!(&e, GgufError::ValueOutOfRange { target: "u32", .. }),
        "{e}"
    );
    let e = h.get_u32("t.str").unwrap_err();
    assert!(
        matches!(&e, GgufError::TypeMismatch { key, .. } if key == "t.str"),
        "{e}"
    );
    assert!(e.to_string().contains("string"), "{e}");
    let e = h.get_str("t.u8").unwrap_err();
    assert!(
        e.to_string().contains("t.u8") && e.to_string().contains("u8 255"),
        "{e}"
    );
    assert!(
        matches!(h.get_f32("missing.key"), Err(GgufError::MissingKey { key }) if key == "missing.key")
    );
    assert!(
        matches!(h.get_u32_array("a.i8"), Err(GgufError::ValueOutOfRange { key, .. }) if key == "a.i8[0]")
    );
    assert!(matches!(
        h.get_f32_array("a.u32"),
        Err(GgufError::TypeMismatch { .. })
    ));
    assert!(matches!(
        h.get_bool("t.u8"),
        Err(GgufError::TypeMismatch { .. })
    ));
}

#[test]
fn chunked_writes_equal_whole_writes() {
    let dir = TempDir::new("chunk");
    let (whole, specs, data) = write_sample(&dir, "whole.gguf");
    let chunked = dir.path("chunked.gguf");
    let mut w = GgufWriter::create_with(
        &chunked,
        WriteOptions {
            overwrite: false,
            buffer_size: 7,
        },
        sample_metadata(),
        specs.clone(),
    )
    .unwrap();
    for (s, d) in specs.iter().zip(&data) {
        w.begin_tensor(&s.name).unwrap();
        for piece in d.chunks(13) {
            w.write_bytes(piece).unwrap();
        }
        w.write_bytes(&[]).unwrap();
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&chunked).unwrap()
    );
}

#[test]
fn default_alignment_is_32_and_key_not_added() {
    let dir = TempDir::new("align");
    let path = dir.path("a.gguf");
    let meta = vec![("general.name".to_string(), Value::from("x"))];
    let specs = vec![
        TensorSpec::new("a", vec![3], GgmlType::F32),
        TensorSpec::new("b", vec![5], GgmlType::F16),
    ];
    let mut w = GgufWriter::create(&path, meta, specs).unwrap();
    w.write_tensor("a", &[1; 12]).unwrap();
    w.write_tensor("b", &[2; 10]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.header.alignment, 32);
    assert!(f.header.get(ALIGNMENT_KEY).is_none());
    assert_eq!(f.header.metadata.len(), 1);
    assert_eq!(f.header.tensors[1].offset, 32);
    assert_eq!(f.tensor_bytes("b").unwrap(), &[2; 10]);
}

/// Feeding a file one byte at a time: every `NeedMore` asks for strictly more than it got, and the final
/// result equals a one-shot parse.
#[test]
fn incremental_parse_makes_progress() {
    let dir = TempDir::new("incr");
    let (path, _, _) = write_sample(&dir, "m.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let full = GgufHeader::from_bytes(&bytes).unwrap();
    let mut n = 0usize;
    let mut calls = 0;
    loop {
        calls += 1;
        match GgufHeader::parse(&bytes[..n]).unwrap() {
            ParseOutcome::Complete(h) => {
                assert_eq!(h, full);
                assert!(n as u64 <= full.data_offset, "no tensor data needed");
                break;
            }
            ParseOutcome::NeedMore { at_least } => {
                assert!(
                    at_least > n as u64,
                    "at_least {at_least} must exceed prefix {n}"
                );
                assert!(at_least <= full.data_offset);
                n = at_least as usize;
            }
        }
    }
    assert!(calls > 10);
    // A big prefix completes in one go; a prefix that includes data is fine too.
    assert!(matches!(
        GgufHeader::parse(&bytes).unwrap(),
        ParseOutcome::Complete(_)
    ));
}

/// A source that records which byte ranges were read.
struct Counting<'a> {
    data: &'a [u8],
    reads: RefCell<Vec<(u64, usize)>>,
}

impl ByteSource for Counting<'_> {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.reads.borrow_mut().push((offset, buf.len()));
        self.data.read_at(offset, buf)
    }
}

#[test]
fn read_from_reads_only_the_header() {
    let dir = TempDir::new("rf");
    // Small header, 6 MiB of data: one 1 MiB read.
    let path = dir.path("big.gguf");
    let n = 6 << 20;
    let mut w = GgufWriter::create(
        &path,
        vec![],
        vec![TensorSpec::new("w", vec![n / 4], GgmlType::F32)],
    )
    .unwrap();
    w.write_tensor("w", &vec![0u8; n as usize]).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let src = Counting {
        data: &bytes,
        reads: RefCell::new(vec![]),
    };
    let h = GgufHeader::read_from(&src).unwrap();
    assert_eq!(h.tensors[0].byte_size(), n);
    assert_eq!(*src.reads.borrow(), vec![(0, 1 << 20)]);

    // A 3 MiB header (big string array) needs growing reads, still short of the 8 MiB file.
    let path = dir.path("bighdr.gguf");
    let toks: Vec<String> = (0..120_000).map(|i| format!("token-{i:08}")).collect();
    let meta = vec![(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(Array::String(toks.clone())),
    )];
    let mut w = GgufWriter::create(
        &path,
        meta,
        vec![TensorSpec::new("w", vec![n / 4], GgmlType::F32)],
    )
    .unwrap();
    w.write_tensor("w", &vec![0u8; n as usize]).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let src = Counting {
        data: &bytes,
        reads: RefCell::new(vec![]),
    };
    let h = GgufHeader::read_from(&src).unwrap();
    assert_eq!(
        h.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        toks.len()
    );
    let reads = src.reads.borrow();
    let end = reads.iter().map(|&(o, l)| o + l as u64).max().unwrap();
    assert!(
        h.data_offset > 2 << 20 && h.data_offset < 4 << 20,
        "{}",
        h.data_offset
    );
    assert_eq!(end, 4 << 20, "grows 1 → 2 → 4 MiB: {reads:?}");
    // Reads are contiguous and never repeat bytes.
    let mut pos = 0;
    for &(o, l) in reads.iter() {
        assert_eq!(o, pos);
        pos += l as u64;
    }
}

#[test]
fn empty_file_with_no_tensors() {
    let dir = TempDir::new("empty");
    let path = dir.path("e.gguf");
    GgufWriter::create(&path, vec![], vec![])
        .unwrap()
        .finish()
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.header.tensors.is_empty() && f.header.metadata.is_empty());
    assert_eq!(f.header.data_offset, 32);
}
