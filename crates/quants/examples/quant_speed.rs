//! Single-threaded quantizer throughput, best of several repetitions (the build machine is shared, so
//! the best run is the least disturbed one).
//!
//! `cargo run --release -p meddr-quants --example quant_speed [-- <million values>]`

use meddr_quants::{quantize, QuantType};
use std::time::Instant;

/// SplitMix64 → Box-Muller: weight-like Gaussian data without a dependency.
fn gaussian_data(n: usize) -> Vec<f32> {
    let mut s = 0x5eed_u64;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let u1 = next().max(1e-300);
            let u2 = next();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32
        })
        .collect()
}

fn main() {
    let millions: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2.0);
    let n = ((millions * 1e6) as usize / 256).max(1) * 256;
    let data = gaussian_data(n);
    let mut out = Vec::new();
    println!("{n} values, single thread, best of 5");
    for ty in [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ] {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            out.clear();
            let t = Instant::now();
            quantize(ty, &data, &mut out).expect("finite, in-range data");
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(&out);
        }
        println!("{:>5}: {:8.2} M values/s", ty.name(), n as f64 / best / 1e6);
    }
}
