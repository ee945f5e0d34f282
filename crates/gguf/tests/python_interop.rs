//! Cross-checks against gguf-py (an independent implementation): it reads what we write, we read what it
//! writes, and both readers must agree bit for bit.
mod common;

use common::{
    all_type_specs, run_python, rust_dump, sample_metadata, tensor_bytes, TempDir, PY_DUMP,
};
use meddr_gguf::*;

fn dump_with_python(path: &std::path::Path) -> String {
    run_python(PY_DUMP, &[path.to_str().unwrap()])
}

fn dump_ours(f: &GgufFile) -> String {
    rust_dump(&f.header, |t| f.tensor_data(t).to_vec())
}

#[test]
fn gguf_py_reads_our_file() {
    let dir = TempDir::new("py-reads");
    let path = dir.path("ours.gguf");
    let specs = all_type_specs();
    let mut w = GgufWriter::create(&path, sample_metadata(), specs.clone()).unwrap();
    let mut expected_tensors = String::new();
    let offsets: Vec<u64> = w.header().tensors.iter().map(|t| t.offset).collect();
    for (i, s) in specs.iter().enumerate() {
        let d = tensor_bytes(s, i as u64 + 100);
        w.write_tensor(&s.name, &d).unwrap();
        let dims: Vec<String> = s.dims.iter().map(|d| d.to_string()).collect();
        expected_tensors += &format!(
            "tensor {} {} {} {} {} {}\n",
            s.name,
            dims.join(","),
            s.ty.id(),
            offsets[i],
            d.len(),
            common::hex(&d)
        );
    }
    w.finish().unwrap();

    let py = dump_with_python(&path);
    // Metadata as we meant it (not as we read it back), so this does not depend on our reader.
    let mut expected = String::new();
    for (k, v) in sample_metadata() {
        expected += &format!("kv {k} {}\n", common::canon(&v));
    }
    expected += &expected_tensors;
    let f = GgufFile::open(&path).unwrap();
    expected += &format!("alignment 64\ndata_offset {}\n", f.header.data_offset);
    assert_eq!(py, expected);
    assert_eq!(dump_ours(&f), py);
}

const PY_WRITE: &str = r#"
import sys
import numpy as np
import gguf
T = gguf.GGMLQuantizationType
w = gguf.GGUFWriter(sys.argv[1], 'llama')
if sys.argv[2] != 'none':
    w.add_custom_alignment(int(sys.argv[2]))
w.add_name('py-written')
w.add_uint8('p.u8', 200)
w.add_int8('p.i8', -100)
w.add_uint16('p.u16', 60000)
w.add_int16('p.i16', -30000)
w.add_uint32('p.u32', 123456)
w.add_int32('p.i32', -7)
w.add_float32('p.f32', 0.1)
w.add_uint64('p.u64', 2**63 + 5)
w.add_int64('p.i64', -(2**40))
w.add_float64('p.f64', 1.0 / 3.0)
w.add_bool('p.bool', True)
w.add_string('p.str', 'ünïcode ✓')
w.add_array('p.ints', [1, 2, 3])
w.add_array('p.floats', [0.485, 0.456, 0.406])
w.add_array('p.strs', ['a', 'bc', ''])
w.add_array('p.bools', [True, False])
w.add_array('p.nested', [[1, 2], [3]])
w.add_tensor('f32', np.arange(24, dtype=np.float32).reshape(3, 8))
w.add_tensor('f16', (np.arange(64, dtype=np.float16) / 8).reshape(2, 32))
w.add_tensor('q8', np.arange(136, dtype=np.uint8).reshape(2, 68), raw_dtype=T.Q8_0)
w.add_tensor('q4k', (np.arange(144 * 3) % 251).astype(np.uint8).reshape(3, 144), raw_dtype=T.Q4_K)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
"#;

fn check_py_written(alignment: &str, expect_align: u64) {
    let dir = TempDir::new("we-read");
    let path = dir.path("py.gguf");
    run_python(PY_WRITE, &[path.to_str().unwrap(), alignment]);
    let f = GgufFile::open(&path).unwrap();
    let h = &f.header;

    // Values as the script wrote them.
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, expect_align);
    assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(h.get_str("general.name").unwrap(), "py-written");
    assert_eq!(h.get("p.u8"), Some(&Value::U8(200)));
    assert_eq!(h.get("p.i8"), Some(&Value::I8(-100)));
    assert_eq!(h.get("p.u16"), Some(&Value::U16(60000)));
    assert_eq!(h.get("p.i16"), Some(&Value::I16(-30000)));
    assert_eq!(h.get("p.u32"), Some(&Value::U32(123456)));
    assert_eq!(h.get("p.i32"), Some(&Value::I32(-7)));
    assert_eq!(h.get("p.f32"), Some(&Value::F32(0.1)));
    assert_eq!(h.get("p.u64"), Some(&Value::U64((1 << 63) + 5)));
    assert_eq!(h.get("p.i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(h.get("p.f64"), Some(&Value::F64(1.0 / 3.0)));
    assert!(h.get_bool("p.bool").unwrap());
    assert_eq!(h.get_str("p.str").unwrap(), "ünïcode ✓");
    assert_eq!(
        h.get("p.ints"),
        Some(&Value::Array(Array::I32(vec![1, 2, 3])))
    );
    assert_eq!(h.get_u32_array("p.ints").unwrap(), vec![1, 2, 3]);
    assert_eq!(
        h.get_f32_array("p.floats").unwrap(),
        vec![0.485, 0.456, 0.406]
    );
    assert_eq!(h.get_str_array("p.strs").unwrap(), vec!["a", "bc", ""]);
    assert_eq!(
        h.get("p.bools"),
        Some(&Value::Array(Array::Bool(vec![true, false])))
    );
    assert_eq!(
        h.get("p.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3])
        ])))
    );

    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32", "f16", "q8", "q4k"]);
    let t = f.tensor("f32").unwrap();
    assert_eq!((t.dims.as_slice(), t.ty), (&[8u64, 3][..], GgmlType::F32));
    let want: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
    assert_eq!(f.tensor_data(t), &want[..]);
    let t = f.tensor("f16").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty, t.byte_size()),
        (&[32u64, 2][..], GgmlType::F16, 128)
    );
    let t = f.tensor("q8").unwrap();
    assert_eq!((t.dims.as_slice(), t.ty), (&[64u64, 2][..], GgmlType::Q8_0));
    assert_eq!(
        f.tensor_data(t),
        &(0..136).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    let t = f.tensor("q4k").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.ty),
        (&[256u64, 3][..], GgmlType::Q4_K)
    );
    assert_eq!(
        f.tensor_data(t),
        &(0..432).map(|i| (i % 251) as u8).collect::<Vec<_>>()[..]
    );
    for t in &h.tensors {
        assert_eq!(t.offset % expect_align, 0);
    }

    // Everything else (padding, offsets, f16 bytes) must agree with gguf-py's own reader.
    assert_eq!(dump_ours(&f), dump_with_python(&path));
}

#[test]
fn we_read_gguf_py_file_default_alignment() {
    check_py_written("none", 32);
}

#[test]
fn we_read_gguf_py_file_custom_alignment() {
    check_py_written("128", 128);
}
