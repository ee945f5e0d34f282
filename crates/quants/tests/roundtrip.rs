//! Round-trip error bounds and API contract checks.

mod common;

use common::*;
use meddr_quants::{
    dequantize, max_abs_error_bound, quantize, quantize_into, quantized_size, QuantError, QuantType,
};

#[test]
fn round_trip_error_within_documented_bound() {
    let data = test_data(0xb0_0d, 14 * 40);
    for ty in QuantType::ALL {
        let mut q = Vec::new();
        quantize(ty, &data, &mut q).unwrap();
        assert_eq!(q.len(), quantized_size(ty, data.len()).unwrap());
        let mut back = vec![0.0f32; data.len()];
        dequantize(ty, &q, &mut back).unwrap();
        let bs = ty.block_size();
        let mut worst_ratio = 0.0f32;
        for (b, (x, y)) in data.chunks(bs).zip(back.chunks(bs)).enumerate() {
            let bound = max_abs_error_bound(ty, x);
            let err = x
                .iter()
                .zip(y)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= bound,
                "{ty}: block {b} (kind {}) error {err:e} exceeds bound {bound:e}",
                b * bs / 256 % KINDS as usize
            );
            if bound > 0.0 {
                worst_ratio = worst_ratio.max(err / bound);
            }
        }
        eprintln!("{ty}: worst error/bound = {worst_ratio:.3}");
        // The bound must not be vacuous: on this data it is approached within a factor of 20.
        if ty != QuantType::F32 {
            assert!(
                worst_ratio > 0.05,
                "{ty}: bound is too loose to be useful ({worst_ratio})"
            );
        }
    }
}

#[test]
fn q8_0_error_is_at_most_half_a_step() {
    let data = test_data(7, 14 * 8);
    let mut q = Vec::new();
    quantize(QuantType::Q8_0, &data, &mut q).unwrap();
    let mut back = vec![0.0f32; data.len()];
    dequantize(QuantType::Q8_0, &q, &mut back).unwrap();
    for (b, (x, y)) in data.chunks(32).zip(back.chunks(32)).enumerate() {
        let d = half::f16::from_le_bytes([q[b * 34], q[b * 34 + 1]]).to_f32();
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, r) in x.iter().zip(y) {
            // Half a step of the stored scale, plus the scale's own f16 rounding over ≤127 levels.
            let lim = d / 2.0 + 127.0 * (amax / 127.0 - d).abs() + amax * 1e-6;
            assert!((a - r).abs() <= lim, "block {b}: {a} -> {r}, d = {d}");
        }
    }
}

#[test]
fn zero_blocks_round_trip_to_zero_and_constants_are_close() {
    for ty in QuantType::ALL {
        let z = vec![0.0f32; 512];
        let mut q = Vec::new();
        quantize(ty, &z, &mut q).unwrap();
        let mut back = vec![1.0f32; 512];
        dequantize(ty, &q, &mut back).unwrap();
        assert!(
            back.iter().all(|v| *v == 0.0),
            "{ty}: zeros do not round-trip"
        );
    }
}

#[test]
fn rejects_bad_input_with_typed_errors() {
    let mut x = vec![0.5f32; 512];
    x[300] = f32::NAN;
    for ty in QuantType::ALL {
        let mut out = Vec::new();
        match quantize(ty, &x, &mut out) {
            Err(QuantError::NonFinite { index: 300, value }) => assert!(value.is_nan()),
            other => panic!("{ty}: expected NonFinite at 300, got {other:?}"),
        }
        assert!(out.is_empty());
    }
    x[300] = f32::NEG_INFINITY;
    assert!(matches!(
        quantize(QuantType::Q4_K, &x, &mut Vec::new()),
        Err(QuantError::NonFinite { index: 300, .. })
    ));

    // Length not a multiple of the block size.
    let err = quantize(QuantType::Q4_K, &[0.0; 300], &mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        QuantError::NotBlockMultiple {
            ty: QuantType::Q4_K,
            len: 300,
            block_size: 256
        }
    );
    assert!(
        err.to_string().contains("300"),
        "message names the value: {err}"
    );

    // BF16 overflow (rounds up to infinity) and F16 overflow.
    assert!(matches!(
        quantize(QuantType::BF16, &[3.4e38], &mut Vec::new()),
        Err(QuantError::OutOfRange {
            ty: QuantType::BF16,
            index: 0,
            ..
        })
    ));
    assert!(quantize(QuantType::BF16, &[3.38e38], &mut Vec::new()).is_ok());
    assert!(matches!(
        quantize(QuantType::F16, &[1.0, -1e5], &mut Vec::new()),
        Err(QuantError::OutOfRange {
            ty: QuantType::F16,
            index: 1,
            ..
        })
    ));
    assert!(quantize(QuantType::F16, &[65504.0, 65519.0], &mut Vec::new()).is_ok());

    // k-quant magnitude cap and scale overflow.
    let mut big = vec![1.0f32; 256];
    big[17] = 2e10;
    assert!(matches!(
        quantize(QuantType::Q6_K, &big, &mut Vec::new()),
        Err(QuantError::OutOfRange {
            ty: QuantType::Q6_K,
            index: 17,
            ..
        })
    ));
    big[17] = 1e9;
    for ty in [QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K] {
        assert!(
            matches!(
                quantize(ty, &big, &mut Vec::new()),
                Err(QuantError::ScaleOverflow { block: 0, .. })
            ),
            "{ty}"
        );
    }

    // Dequantize size checks.
    let mut dst = vec![0.0f32; 256];
    assert!(matches!(
        dequantize(QuantType::Q4_K, &[0u8; 143], &mut dst),
        Err(QuantError::SizeMismatch {
            expected: 144,
            len: 143,
            ..
        })
    ));
    assert!(matches!(
        dequantize(QuantType::Q8_0, &[0u8; 34], &mut dst[..31]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        quantize_into(QuantType::Q8_0, &[0.0; 32], &mut [0u8; 33]),
        Err(QuantError::SizeMismatch { .. })
    ));
    assert!(matches!(
        quantized_size(QuantType::F32, usize::MAX),
        Err(QuantError::SizeOverflow { .. })
    ));
}

#[test]
fn appends_to_existing_output() {
    let x = test_data(3, 2);
    let mut a = Vec::new();
    quantize(QuantType::Q5_K, &x, &mut a).unwrap();
    let mut b = vec![9u8; 5];
    quantize(QuantType::Q5_K, &x, &mut b).unwrap();
    assert_eq!(&b[..5], &[9; 5]);
    assert_eq!(&b[5..], &a[..]);
    let mut c = vec![0u8; a.len()];
    quantize_into(QuantType::Q5_K, &x, &mut c).unwrap();
    assert_eq!(c, a);
}

#[test]
fn type_table_matches_ggml() {
    let expect = [
        (QuantType::F32, 0, 1, 4, "f32"),
        (QuantType::F16, 1, 1, 2, "f16"),
        (QuantType::Q4_0, 2, 32, 18, "q4_0"),
        (QuantType::Q4_1, 3, 32, 20, "q4_1"),
        (QuantType::Q5_0, 6, 32, 22, "q5_0"),
        (QuantType::Q8_0, 8, 32, 34, "q8_0"),
        (QuantType::Q4_K, 12, 256, 144, "q4_K"),
        (QuantType::Q5_K, 13, 256, 176, "q5_K"),
        (QuantType::Q6_K, 14, 256, 210, "q6_K"),
        (QuantType::BF16, 30, 1, 2, "bf16"),
    ];
    for (ty, id, bs, ts, name) in expect {
        assert_eq!(
            (ty.ggml_id(), ty.block_size(), ty.type_size(), ty.name()),
            (id, bs, ts, name)
        );
        assert_eq!(QuantType::from_ggml_id(id), Some(ty));
    }
    for id in [4, 5, 7, 9, 10, 11, 15, 16, 29, 31, 39, u32::MAX] {
        assert_eq!(QuantType::from_ggml_id(id), None, "id {id}");
    }
}

#[test]
fn functions_are_send_and_sync_safe() {
    // Quantize disjoint rows from several threads into one buffer; result equals the serial one.
    let x = test_data(11, 8);
    let ty = QuantType::Q4_K;
    let mut serial = Vec::new();
    quantize(ty, &x, &mut serial).unwrap();
    let row_bytes = quantized_size(ty, 512).unwrap();
    let mut par = vec![0u8; serial.len()];
    std::thread::scope(|s| {
        for (src, dst) in x.chunks(512).zip(par.chunks_mut(row_bytes)) {
            s.spawn(move || quantize_into(ty, src, dst).unwrap());
        }
    });
    assert_eq!(par, serial);
}
