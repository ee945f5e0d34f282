//! Cross-check against gguf-py (`gguf.quants`), an independent implementation of ggml's formats:
//! quantized bytes must be identical where gguf-py can quantize, and gguf-py's dequantization of our
//! bytes must match ours bit for bit for every type.

mod common;

use common::*;
use meddr_quants::{dequantize, quantize, QuantType};
use std::process::Command;

const SCRIPT: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

CAN_QUANTIZE = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0"}
for line in open(sys.argv[1]):
    ty, row, inp, ours, outp = line.split()
    row = int(row)
    qt = T[ty.upper()]
    ob = np.fromfile(ours, dtype=np.uint8)
    if inp != "-":
        x = np.fromfile(inp, dtype="<f4").reshape(-1, row)
        if ty in CAN_QUANTIZE:
            q = np.ascontiguousarray(quants.quantize(x, qt))
            q.view(np.uint8).tofile(outp + ".quant")
    n_rows = ob.size // (row // quants.GGML_QUANT_SIZES[qt][0] * quants.GGML_QUANT_SIZES[qt][1])
    with np.errstate(all="ignore"):
        deq = quants.dequantize(ob.reshape(n_rows, -1), qt)
    np.ascontiguousarray(deq, dtype="<f4").tofile(outp + ".deq")
"#;

struct Case {
    ty: QuantType,
    input: Option<Vec<f32>>,
    ours: Vec<u8>,
    n_elems: usize,
}

fn run_python(name: &str, cases: &[Case]) -> Vec<(Option<Vec<u8>>, Vec<f32>)> {
    let dir = scratch_dir(name);
    let script = dir.join("check.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut manifest = String::new();
    for (i, c) in cases.iter().enumerate() {
        let inp = match &c.input {
            Some(x) => {
                let p = dir.join(format!("{i}.f32"));
                std::fs::write(&p, f32_to_bytes(x)).unwrap();
                p.display().to_string()
            }
            None => "-".to_string(),
        };
        let ours = dir.join(format!("{i}.ours"));
        std::fs::write(&ours, &c.ours).unwrap();
        manifest += &format!(
            "{} 256 {} {} {}\n",
            c.ty.name(),
            inp,
            ours.display(),
            dir.join(i.to_string()).display()
        );
    }
    let mpath = dir.join("manifest.txt");
    std::fs::write(&mpath, manifest).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .arg(&mpath)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "gguf-py script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let res = (0..cases.len())
        .map(|i| {
            let q = std::fs::read(dir.join(format!("{i}.quant"))).ok();
            let d =
                bytes_to_f32(&std::fs::read(dir.join(format!("{i}.deq"))).expect("dequant output"));
            (q, d)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

#[test]
fn matches_gguf_py_on_adversarial_data() {
    let data = test_data(0x5eed_0001, 14 * 6);
    let cases: Vec<Case> = QuantType::ALL
        .iter()
        .map(|&ty| {
            let mut ours = Vec::new();
            quantize(ty, &data, &mut ours).unwrap_or_else(|e| panic!("{ty}: {e}"));
            Case {
                ty,
                input: Some(data.clone()),
                ours,
                n_elems: data.len(),
            }
        })
        .collect();
    let results = run_python("adv", &cases);
    let mut quant_checked = 0;
    for (c, (gq, gdeq)) in cases.iter().zip(results) {
        if let Some(gq) = gq {
            assert_eq!(gq.len(), c.ours.len(), "{}: quantized size", c.ty);
            if let Some(i) = gq.iter().zip(&c.ours).position(|(a, b)| a != b) {
                let blk = i / c.ty.type_size();
                panic!(
                    "{}: quantized bytes differ from gguf-py at byte {i} (block {blk}, data kind {}): ours {:?} theirs {:?}",
                    c.ty,
                    blk * c.ty.block_size() / 256 % KINDS as usize,
                    &c.ours[blk * c.ty.type_size()..(blk + 1) * c.ty.type_size()],
                    &gq[blk * c.ty.type_size()..(blk + 1) * c.ty.type_size()],
                );
            }
            quant_checked += 1;
        }
        let mut mine = vec![0.0f32; c.n_elems];
        dequantize(c.ty, &c.ours, &mut mine).unwrap();
        if let Some(i) = first_bit_diff(&mine, &gdeq) {
            panic!(
                "{}: dequantized value {i} differs: ours {:e} gguf-py {:e}",
                c.ty, mine[i], gdeq[i]
            );
        }
    }
    // F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0.
    assert_eq!(
        quant_checked, 7,
        "gguf-py quantized fewer types than expected"
    );
}

#[test]
fn dequantize_matches_gguf_py_on_random_bytes() {
    // Arbitrary bit patterns exercise every packing path, including non-finite f16 scales.
    let mut rng = Rng::new(0xb17e5);
    let n_elems = 256 * 64;
    let cases: Vec<Case> = QuantType::ALL
        .iter()
        .filter(|t| **t != QuantType::F32)
        .map(|&ty| {
            let n_bytes = meddr_quants::quantized_size(ty, n_elems).unwrap();
            let ours = (0..n_bytes).map(|_| rng.next_u64() as u8).collect();
            Case {
                ty,
                input: None,
                ours,
                n_elems,
            }
        })
        .collect();
    let results = run_python("rand", &cases);
    for (c, (_, gdeq)) in cases.iter().zip(results) {
        let mut mine = vec![0.0f32; n_elems];
        dequantize(c.ty, &c.ours, &mut mine).unwrap();
        for (i, (a, b)) in mine.iter().zip(&gdeq).enumerate() {
            let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(
                same,
                "{}: value {i} differs on random bytes: ours {a:e} gguf-py {b:e}",
                c.ty
            );
        }
    }
}

#[test]
fn overflow_policy_matches_where_gguf_py_produces_infinity() {
    // Values gguf-py/ggml would store as an infinite f16 (element or scale) are rejected here.
    let cases: [(QuantType, f32); 5] = [
        (QuantType::F16, 65520.0),
        (QuantType::Q8_0, 8.4e6),
        (QuantType::Q4_0, 1e30),
        (QuantType::Q4_1, -7e4),
        (QuantType::Q5_0, 2e6),
    ];
    let mut py_cases = Vec::new();
    for (ty, v) in cases {
        let mut x = vec![0.25f32; 256];
        x[37] = v;
        let mut out = vec![1u8, 2, 3];
        let err = quantize(ty, &x, &mut out).expect_err("overflow must be rejected");
        assert_eq!(out, [1, 2, 3], "{ty}: output must be untouched on error");
        match (ty, err) {
            (QuantType::F16, meddr_quants::QuantError::OutOfRange { index: 37, .. }) => {}
            (_, meddr_quants::QuantError::ScaleOverflow { block: 1, .. }) => {}
            (ty, e) => panic!("{ty}: unexpected error {e}"),
        }
        // gguf-py on the same input: an infinite value after dequantization proves the overflow.
        let mut placeholder = Vec::new();
        quantize(ty, &vec![0.0; 256], &mut placeholder).unwrap();
        py_cases.push(Case {
            ty,
            input: Some(x),
            ours: placeholder,
            n_elems: 256,
        });
    }
    let dir_results = run_python("ovf", &py_cases);
    for (c, (gq, _)) in py_cases.iter().zip(dir_results) {
        let gq = gq.expect("gguf-py quantizes these types");
        let mut back = vec![0.0f32; 256];
        dequantize(c.ty, &gq, &mut back).unwrap();
        assert!(
            back.iter().any(|v| !v.is_finite()),
            "{}: gguf-py did not overflow, policy check is moot",
            c.ty
        );
    }
}
