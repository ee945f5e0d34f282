//! llama.cpp's language model + mmproj layout read as one file: merged metadata and tensors, every byte
//! where it was written, discovery beside the model, and mismatched pairs refused with both names.

mod common;
use common::TempDir;
use meddr_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, TensorSpec, Value};
use std::path::{Path, PathBuf};

fn write(path: &Path, meta: &[(&str, Value)], tensors: &[(&str, Vec<u64>, u8)]) {
    let md = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let specs = tensors
        .iter()
        .map(|(n, d, _)| TensorSpec::new(*n, d.clone(), GgmlType::F32))
        .collect();
    let mut w = GgufWriter::create(path, md, specs).unwrap();
    for (n, d, fill) in tensors {
        let len = d.iter().product::<u64>() as usize * 4;
        // Distinct bytes per tensor and position, so a wrong offset cannot read the right data.
        let bytes: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        w.write_tensor(n, &bytes).unwrap();
    }
    w.finish().unwrap();
}

fn expected(d: &[u64], fill: u8) -> Vec<u8> {
    let len = d.iter().product::<u64>() as usize * 4;
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

fn text_meta() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::from("llama")),
        ("general.type", Value::from("model")),
        ("general.name", Value::from("pair")),
        ("llama.embedding_length", Value::U32(8)),
        ("meddr.format_version", Value::U32(1)),
        ("meddr.image.num_tokens", Value::U32(4)),
        (
            "meddr.quantize.fallbacks",
            Value::Array(meddr_gguf::Array::String(vec!["blk.0.a: x".into()])),
        ),
    ]
}

fn proj_meta(num_tokens: u32) -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::from("clip")),
        ("general.type", Value::from("mmproj")),
        ("general.name", Value::from("pair")),
        ("clip.has_vision_encoder", Value::Bool(true)),
        ("clip.vision.projection_dim", Value::U32(8)),
        ("meddr.format_version", Value::U32(1)),
        ("meddr.image.num_tokens", Value::U32(num_tokens)),
        (
            "meddr.quantize.fallbacks",
            Value::Array(meddr_gguf::Array::String(vec!["v.blk.0.b: y".into()])),
        ),
    ]
}

fn text_tensors() -> Vec<(&'static str, Vec<u64>, u8)> {
    // Odd sizes, so the text file's length is not a multiple of the alignment.
    vec![
        ("token_embd.weight", vec![8, 5], 1),
        ("blk.0.attn_norm.weight", vec![3], 50),
    ]
}

fn proj_tensors() -> Vec<(&'static str, Vec<u64>, u8)> {
    vec![
        ("v.patch_embd.weight", vec![7, 3], 100),
        ("mm.model.mlp.0.weight", vec![5], 200),
    ]
}

fn pair(dir: &Path, stem: &str, proj_name: &str) -> (PathBuf, PathBuf) {
    let t = dir.join(format!("{stem}.gguf"));
    let p = dir.join(proj_name);
    write(&t, &text_meta(), &text_tensors());
    write(&p, &proj_meta(4), &proj_tensors());
    (t, p)
}

fn check_all_tensors(f: &GgufFile) {
    for (n, d, fill) in text_tensors().into_iter().chain(proj_tensors()) {
        assert_eq!(
            f.tensor_bytes(n).unwrap(),
            expected(&d, fill).as_slice(),
            "{n}"
        );
        // The engine's path: absolute (merged) ranges read with read_at.
        let t = f.tensor(n).unwrap();
        let r = f.header.tensor_range(t).unwrap();
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        f.read_at(r.start, &mut buf).unwrap();
        assert_eq!(buf, expected(&d, fill), "{n} via read_at");
    }
}

#[test]
fn pair_beside_the_model_reads_as_one_file() {
    let dir = TempDir::new("split");
    for (stem, proj) in [("a", "a.mmproj.gguf"), ("b", "mmproj-b.gguf")] {
        let (t, p) = pair(dir.0.as_path(), stem, proj);
        let f = GgufFile::open_model(&t, None).unwrap();
        assert_eq!(f.mmproj_path(), Some(p.as_path()));
        assert_eq!(f.path(), t.as_path());
        let h = &f.header;
        // The language model's identity wins; the vision keys join it.
        assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(h.get_str("general.type").unwrap(), "model");
        assert!(h.get_bool("clip.has_vision_encoder").unwrap());
        assert_eq!(
            h.get_str_array("meddr.quantize.fallbacks").unwrap(),
            vec!["blk.0.a: x", "v.blk.0.b: y"]
        );
        assert_eq!(h.tensors.len(), 4);
        check_all_tensors(&f);
        let len_t = std::fs::metadata(&t).unwrap().len();
        let len_p = std::fs::metadata(&p).unwrap().len();
        assert_eq!(f.total_len(), len_t + len_p);
        assert!(f.mmproj_base().unwrap() >= len_t);
        // Read past the language model's end but before the mmproj's start: an error, not bytes.
        let mut one = [0u8; 1];
        if f.mmproj_base().unwrap() > len_t {
            assert!(f.read_at(len_t, &mut one).is_err());
        }
        assert!(f
            .read_at(f.mmproj_base().unwrap() + len_p, &mut one)
            .is_err());
    }
}

#[test]
fn explicit_mmproj_path_and_plain_open() {
    let dir = TempDir::new("split");
    let (t, p) = pair(dir.0.as_path(), "m", "elsewhere.gguf");
    // Not found beside (its name follows neither convention): a text model.
    let alone = GgufFile::open_model(&t, None).unwrap();
    assert!(alone.mmproj_path().is_none());
    assert!(alone.header.get("clip.has_vision_encoder").is_none());
    let f = GgufFile::open_model(&t, Some(&p)).unwrap();
    check_all_tensors(&f);
    // `open` never looks beside the file.
    let (t2, _) = pair(dir.0.as_path(), "n", "n.mmproj.gguf");
    assert_eq!(GgufFile::open(&t2).unwrap().header.tensors.len(), 2);
}

fn mismatch(r: Result<GgufFile, GgufError>) -> String {
    match r {
        Err(e @ GgufError::SplitMismatch { .. }) => e.to_string(),
        other => panic!("expected a SplitMismatch, got {other:?}"),
    }
}

#[test]
fn mismatched_pairs_are_refused_naming_both_files() {
    let dir = TempDir::new("split");
    let d = dir.0.as_path();
    let (t, p) = pair(d, "m", "m.mmproj.gguf");

    // A different model's mmproj: shared key disagrees.
    let other = d.join("other.gguf");
    write(&other, &proj_meta(16), &proj_tensors());
    let e = mismatch(GgufFile::open_model(&t, Some(&other)));
    assert!(
        e.contains("meddr.image.num_tokens") && e.contains("other.gguf") && e.contains("m.gguf"),
        "{e}"
    );

    // Two language models.
    let e = mismatch(GgufFile::open_model(&t, Some(&t)));
    assert!(e.contains("\"llama\""), "{e}");

    // The mmproj given as the model.
    let e = mismatch(GgufFile::open_model(&p, None));
    assert!(e.contains("mmproj file"), "{e}");
    let e = mismatch(GgufFile::open_model(&p, Some(&p)));
    assert!(e.contains("itself an mmproj"), "{e}");

    // A tensor in both files.
    let dup = d.join("dup.gguf");
    write(&dup, &proj_meta(4), &[("token_embd.weight", vec![8, 5], 9)]);
    let e = mismatch(GgufFile::open_model(&t, Some(&dup)));
    assert!(e.contains("token_embd.weight"), "{e}");

    // A single-file model that already has its vision tower: used as it is, an explicit mmproj refused.
    let single = d.join("single.gguf");
    let mut meta = text_meta();
    meta.push(("clip.has_vision_encoder", Value::Bool(true)));
    let mut ts = text_tensors();
    ts.extend(proj_tensors());
    write(&single, &meta, &ts);
    std::fs::copy(&p, d.join("single.mmproj.gguf")).unwrap();
    let f = GgufFile::open_model(&single, None).unwrap();
    assert!(f.mmproj_path().is_none());
    check_all_tensors(&f);
    let e = mismatch(GgufFile::open_model(&single, Some(&p)));
    assert!(e.contains("already holds a vision tower"), "{e}");

    // A broken mmproj beside the model: its own error, with its path.
    std::fs::write(d.join("m.mmproj.gguf"), b"GGUF\x03\x00").unwrap();
    let e = GgufFile::open_model(&t, None).unwrap_err().to_string();
    assert!(!e.is_empty());
}
