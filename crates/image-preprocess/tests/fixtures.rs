//! Every entry of shared/fixtures/transforms/index.json, checked bit for bit.
mod common;

use meddr_image::{decode_rgb, preprocess, PreprocessConfig};
use ndarray::Array3;
use ndarray_npy::NpzReader;
use serde_json::Value;

#[test]
fn transforms_match_fixtures_bit_for_bit() {
    let dir = common::shared_dir().join("fixtures");
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.join("transforms/index.json")).expect("read index.json"),
    )
    .unwrap();
    let entries = index["entries"].as_array().expect("entries");
    assert!(
        entries.len() >= 6,
        "expected at least 6 entries, got {}",
        entries.len()
    );
    for e in entries {
        let name = e["image"].as_str().unwrap();
        let bytes = std::fs::read(dir.join("images").join(name)).unwrap();
        assert_eq!(
            common::sha256_hex(&bytes),
            e["image_sha256"].as_str().unwrap(),
            "{name}: input file changed"
        );

        // Decoded RGB (= np.array(Image.open(p).convert('RGB'))).
        let rgb = decode_rgb(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        let wh = e["orig_size_wh"].as_array().unwrap();
        assert_eq!(
            (rgb.width as u64, rgb.height as u64),
            (wh[0].as_u64().unwrap(), wh[1].as_u64().unwrap())
        );
        let d = &e["decoded_rgb"];
        assert_eq!(
            common::sha256_hex(&rgb.data),
            d["sha256"].as_str().unwrap(),
            "{name}: decoded RGB sha256"
        );
        for p in d["probes_yx_rgb"].as_array().unwrap() {
            let p = p.as_array().unwrap();
            let (y, x) = (p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap() as u32);
            let want: Vec<u8> = p[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            assert_eq!(
                rgb.pixel(x, y).unwrap().to_vec(),
                want,
                "{name}: probe ({y},{x})"
            );
        }
        let n = (rgb.width * rgb.height) as f64;
        for (c, m) in d["channel_mean"].as_array().unwrap().iter().enumerate() {
            let mean = rgb
                .data
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| v as f64)
                .sum::<f64>()
                / n;
            assert!(
                (mean - m.as_f64().unwrap()).abs() < 1e-9,
                "{name}: channel {c} mean {mean} vs {m}"
            );
        }

        // Full transform.
        let cfg = PreprocessConfig {
            pad2square: e["pad2square"].as_bool().unwrap(),
            ..Default::default()
        };
        let out = preprocess(&bytes, &cfg).unwrap();
        let mut npz = NpzReader::new(
            std::fs::File::open(dir.join("transforms").join(e["file"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let want_u8: Array3<u8> = npz.by_name("resized_u8.npy").unwrap();
        let want_pv: Array3<f32> = npz.by_name("pixel_values.npy").unwrap();
        assert_eq!(want_u8.shape(), &[448, 448, 3]);
        assert_eq!((out.resized.width, out.resized.height), (448, 448));
        let want_u8 = want_u8.as_standard_layout();
        let mism = out
            .resized
            .data
            .iter()
            .zip(want_u8.iter())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            mism, 0,
            "{name} (pad2square={}): {mism} resized_u8 bytes differ",
            cfg.pad2square
        );
        assert_eq!(want_pv.shape(), &[3, 448, 448]);
        let want_pv = want_pv.as_standard_layout();
        assert_eq!(out.pixel_values.len(), want_pv.len());
        let mism = out
            .pixel_values
            .iter()
            .zip(want_pv.iter())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(mism, 0, "{name}: {mism} pixel_values differ in bits");
        // The recorded summary agrees too.
        // Recorded as f32 values printed as f64 decimals: parse as f64, cast to f32.
        let first5: Vec<f32> = e["first5_c0_row0"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got5 = out.pixel_values[..5].to_vec();
        assert_eq!(got5, first5, "{name}: first5_c0_row0");
    }
}
