mod common;

use std::str::FromStr;

use meddr_gguf::{GgmlType, GgufError};

/// Compares the whole type table (ids, names, block and type sizes) with gguf-py's `GGML_QUANT_SIZES`.
#[test]
fn type_table_matches_gguf_py() {
    let out = common::run_python(
        "from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES as S\n\
         for t in T: print(int(t), t.name, *S[t])",
        &[],
    );
    let mut py_ids = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (id, name, bs, ts): (u32, &str, u64, u64) = (
            f[0].parse().unwrap(),
            f[1],
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        let ty = GgmlType::from_id(id)
            .unwrap_or_else(|e| panic!("gguf-py type {name} ({id}) unknown to us: {e}"));
        assert!(
            ty.name().eq_ignore_ascii_case(name),
            "id {id}: our name {} vs gguf-py {name}",
            ty.name()
        );
        assert_eq!(
            (ty.block_size(), ty.type_size()),
            (bs, ts),
            "sizes of {name}"
        );
        py_ids.push(id);
    }
    let ours: Vec<u32> = GgmlType::ALL.iter().map(|t| t.id()).collect();
    py_ids.sort();
    assert_eq!(ours, py_ids, "type id sets differ");
}

#[test]
fn ids_names_and_removed_ids() {
    for t in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(t.id()).unwrap(), t);
        assert_eq!(GgmlType::from_str(t.name()).unwrap(), t);
        assert_eq!(GgmlType::from_str(&t.name().to_uppercase()).unwrap(), t);
        assert_eq!(t.to_string(), t.name());
    }
    for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
        assert!(
            matches!(GgmlType::from_id(id), Err(GgufError::UnknownGgmlType { id: i, .. }) if i == id),
            "id {id}"
        );
    }
    assert!(matches!(
        GgmlType::from_str("q4_2"),
        Err(GgufError::UnknownGgmlTypeName { .. })
    ));
    assert_eq!(GgmlType::Q4_K.name(), "q4_K");
    assert_eq!(GgmlType::BF16.name(), "bf16");
    assert_eq!(GgmlType::from_id(39).unwrap(), GgmlType::MXFP4);
}

#[test]
fn row_bytes_checks_blocks_and_overflow() {
    assert_eq!(GgmlType::Q4_K.row_bytes(4096).unwrap(), 16 * 144);
    assert_eq!(GgmlType::Q8_0.row_bytes(64).unwrap(), 2 * 34);
    assert_eq!(GgmlType::F32.row_bytes(3).unwrap(), 12);
    assert_eq!(GgmlType::Q4_0.row_bytes(0).unwrap(), 0);
    let e = GgmlType::Q4_K.row_bytes(100).unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::NotBlockMultiple {
                n_elements: 100,
                block_size: 256,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("q4_K"), "{e}");
    assert!(matches!(
        GgmlType::F64.row_bytes(u64::MAX / 2),
        Err(GgufError::Overflow { .. })
    ));
}
