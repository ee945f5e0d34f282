//! The writer never leaves a partial file behind and never silently overwrites.
mod common;

use common::TempDir;
use meddr_gguf::*;

fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("a", vec![4], GgmlType::F32),
        TensorSpec::new("b", vec![32, 2], GgmlType::Q8_0),
    ]
}

fn meta() -> Vec<(String, Value)> {
    vec![("general.architecture".into(), Value::from("llama"))]
}

fn assert_empty(dir: &TempDir) {
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "no final and no temp file"
    );
}

#[test]
fn temp_file_until_finish() {
    let dir = TempDir::new("w-tmp");
    let path = dir.path("m.gguf");
    let mut w = GgufWriter::create(&path, meta(), specs()).unwrap();
    assert_eq!(
        dir.entries(),
        vec![format!(".m.gguf.tmp-{}", std::process::id())]
    );
    assert_eq!(
        w.temp_path(),
        dir.path(&format!(".m.gguf.tmp-{}", std::process::id()))
    );
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[1; 68]).unwrap();
    assert!(!path.exists());
    w.finish().unwrap();
    assert_eq!(dir.entries(), vec!["m.gguf".to_string()]);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_bytes("b").unwrap(), &[1; 68]);
}

#[test]
fn errors_midway_remove_everything() {
    type Step = fn(&mut GgufWriter) -> Result<()>;
    let cases: Vec<(&str, Step)> = vec![
        ("wrong order", |w| w.write_tensor("b", &[0; 68])),
        ("unknown tensor", |w| w.write_tensor("zzz", &[0; 16])),
        ("too short", |w| w.write_tensor("a", &[0; 15])),
        ("too long", |w| w.write_tensor("a", &[0; 17])),
        ("chunks too long", |w| {
            w.begin_tensor("a")?;
            w.write_bytes(&[0; 10])?;
            w.write_bytes(&[0; 10])
        }),
        ("end too early", |w| {
            w.begin_tensor("a")?;
            w.write_bytes(&[0; 10])?;
            w.end_tensor()
        }),
        ("begin while open", |w| {
            w.begin_tensor("a")?;
            w.begin_tensor("b")
        }),
        ("bytes without begin", |w| w.write_bytes(&[0; 4])),
        ("too many tensors", |w| {
            w.write_tensor("a", &[0; 16])?;
            w.write_tensor("b", &[0; 68])?;
            w.write_tensor("a", &[0; 16])
        }),
    ];
    for (what, step) in cases {
        let dir = TempDir::new("w-err");
        let path = dir.path("m.gguf");
        let mut w = GgufWriter::create(&path, meta(), specs()).unwrap();
        let e = step(&mut w).expect_err(what);
        assert!(matches!(e, GgufError::Writer(_)), "{what}: {e}");
        assert_empty(&dir);
        // Poisoned: later calls fail too, and finish cannot produce a file.
        assert!(w.write_tensor("a", &[0; 16]).is_err(), "{what}");
        assert!(w.finish().is_err(), "{what}");
        assert_empty(&dir);
    }
}

#[test]
fn finish_checks_all_tensors_written() {
    let dir = TempDir::new("w-fin");
    let path = dir.path("m.gguf");
    let mut w = GgufWriter::create(&path, meta(), specs()).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains("\"b\""), "{e}");
    assert_empty(&dir);

    let mut w = GgufWriter::create(&path, meta(), specs()).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.begin_tensor("b").unwrap();
    w.write_bytes(&[0; 68]).unwrap();
    assert!(w.finish().is_err(), "tensor still open");
    assert_empty(&dir);
}

#[test]
fn drop_without_finish_removes_temp() {
    let dir = TempDir::new("w-drop");
    {
        let mut w = GgufWriter::create(dir.path("m.gguf"), meta(), specs()).unwrap();
        w.write_tensor("a", &[0; 16]).unwrap();
        assert_eq!(dir.entries().len(), 1);
    }
    assert_empty(&dir);
}

#[test]
fn refuses_overwrite_without_flag() {
    let dir = TempDir::new("w-ow");
    let path = dir.path("m.gguf");
    std::fs::write(&path, b"precious").unwrap();
    let e = GgufWriter::create(&path, meta(), specs()).unwrap_err();
    assert!(
        matches!(&e, GgufError::FileExists { path: p } if p == &path),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    assert_eq!(dir.entries(), vec!["m.gguf".to_string()]);

    let opts = WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    let mut w = GgufWriter::create_with(&path, opts, meta(), specs()).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 68]).unwrap();
    w.finish().unwrap();
    assert_eq!(GgufFile::open(&path).unwrap().header.tensors.len(), 2);
    assert_eq!(dir.entries(), vec!["m.gguf".to_string()]);

    // A file appearing at the target while writing is not clobbered either.
    let other = dir.path("n.gguf");
    let w = GgufWriter::create(&other, meta(), vec![]).unwrap();
    std::fs::write(&other, b"raced").unwrap();
    let e = w.finish().unwrap_err();
    assert!(matches!(e, GgufError::FileExists { .. }), "{e}");
    assert_eq!(std::fs::read(&other).unwrap(), b"raced");
    assert_eq!(
        dir.entries(),
        vec!["m.gguf".to_string(), "n.gguf".to_string()]
    );
}

#[test]
fn invalid_layouts_rejected_before_any_file() {
    let dir = TempDir::new("w-inv");
    let path = dir.path("m.gguf");
    let kv = |k: &str, v: Value| vec![(k.to_string(), v)];
    let t = |name: &str, dims: Vec<u64>, ty| vec![TensorSpec::new(name, dims, ty)];
    type Case = (
        Vec<(String, Value)>,
        Vec<TensorSpec>,
        fn(&GgufError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (kv("general.alignment", Value::U32(0)), vec![], |e| {
            matches!(e, GgufError::BadAlignment { value: 0 })
        }),
        (kv("general.alignment", Value::U32(3)), vec![], |e| {
            matches!(e, GgufError::BadAlignment { value: 3 })
        }),
        (kv("general.alignment", Value::U64(32)), vec![], |e| {
            matches!(e, GgufError::TypeMismatch { .. })
        }),
        (
            vec![("k".into(), Value::U8(1)), ("k".into(), Value::U8(2))],
            vec![],
            |e| matches!(e, GgufError::DuplicateKey { .. }),
        ),
        (
            vec![],
            [
                t("w", vec![4], GgmlType::F32),
                t("w", vec![4], GgmlType::F32),
            ]
            .concat(),
            |e| matches!(e, GgufError::DuplicateTensor { .. }),
        ),
        (vec![], t("w", vec![1, 1, 1, 1, 1], GgmlType::F32), |e| {
            matches!(e, GgufError::BadDimCount { n_dims: 5, .. })
        }),
        (vec![], t("w", vec![4, 0], GgmlType::F32), |e| {
            matches!(e, GgufError::BadDim { .. })
        }),
        (vec![], t("w", vec![100], GgmlType::Q4_K), |e| {
            matches!(e, GgufError::NotBlockMultiple { .. })
        }),
        (vec![], t("w", vec![1 << 62, 1 << 62], GgmlType::F32), |e| {
            matches!(e, GgufError::Overflow { .. })
        }),
        (kv(&"k".repeat((64 << 20) + 1), Value::U8(0)), vec![], |e| {
            matches!(e, GgufError::StringTooLong { .. })
        }),
    ];
    for (m, s, check) in cases {
        let e = GgufWriter::create(&path, m, s).unwrap_err();
        assert!(check(&e), "{e}");
        assert_empty(&dir);
    }
}

#[test]
fn io_errors_name_the_path() {
    let e = GgufWriter::create("/nonexistent-dir-meddr/x/m.gguf", meta(), specs()).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent-dir-meddr/x/"), "{e}");
    let dir = TempDir::new("w-io");
    // A directory as the target: the rename fails and reports the path.
    let target = dir.path("isdir");
    std::fs::create_dir(target.join("")).unwrap();
    std::fs::write(target.join("f"), b"x").unwrap();
    let opts = WriteOptions {
        overwrite: true,
        ..Default::default()
    };
    let w = GgufWriter::create_with(&target, opts, meta(), vec![]).unwrap();
    let e = w.finish().unwrap_err();
    assert!(
        matches!(e, GgufError::Io { .. }) && e.to_string().contains("isdir"),
        "{e}"
    );
    assert_eq!(
        dir.entries(),
        vec!["isdir".to_string()],
        "temp file removed"
    );
}

/// Skipped tensors read back as zeros, the file has its full length, and (on filesystems with holes) a large
/// skipped tensor takes no disk.
#[test]
fn skipped_tensors_are_holes_that_read_as_zeros() {
    let dir = TempDir::new("w-skip");
    let path = dir.path("m.gguf");
    let big = 64 << 20; // 64 MiB of f32
    let specs = vec![
        TensorSpec::new("a", vec![4], GgmlType::F32),
        TensorSpec::new("big", vec![big / 4], GgmlType::F32),
        TensorSpec::new("b", vec![32, 2], GgmlType::Q8_0),
        TensorSpec::new("last", vec![1 << 20], GgmlType::F32),
    ];
    let mut w = GgufWriter::create(&path, meta(), specs).unwrap();
    w.write_tensor("a", &[7; 16]).unwrap();
    w.skip_tensor("big").unwrap();
    w.write_tensor("b", &[1; 68]).unwrap();
    // Out of order is refused like any write.
    assert!(w.skip_tensor("a").is_err());
    let mut w = GgufWriter::create_with(
        &path,
        WriteOptions {
            overwrite: true,
            ..Default::default()
        },
        meta(),
        vec![
            TensorSpec::new("a", vec![4], GgmlType::F32),
            TensorSpec::new("big", vec![big / 4], GgmlType::F32),
            TensorSpec::new("b", vec![32, 2], GgmlType::Q8_0),
            TensorSpec::new("last", vec![1 << 20], GgmlType::F32),
        ],
    )
    .unwrap();
    w.write_tensor("a", &[7; 16]).unwrap();
    w.skip_tensor("big").unwrap();
    w.write_tensor("b", &[1; 68]).unwrap();
    // The last tensor skipped too: the file must still reach its declared end.
    w.skip_tensor("last").unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_bytes("a").unwrap(), &[7; 16]);
    assert!(f.tensor_bytes("big").unwrap().iter().all(|&b| b == 0));
    assert_eq!(f.tensor_bytes("b").unwrap(), &[1; 68]);
    assert_eq!(f.tensor_bytes("last").unwrap().len(), 4 << 20);
    assert!(f.tensor_bytes("last").unwrap().iter().all(|&b| b == 0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&path).unwrap();
        assert!(m.len() > (68 << 20), "{}", m.len());
        // 512-byte blocks actually allocated: far below the 68 MiB declared (tmpfs and ext4 have holes).
        assert!(
            m.blocks() * 512 < (8 << 20),
            "{} bytes allocated",
            m.blocks() * 512
        );
    }
}
