//! Shared test helpers: a seeded RNG, adversarial input generation, reference-tool discovery.
#![allow(dead_code)]

use std::path::PathBuf;

/// SplitMix64: tiny, seedable, good enough to generate test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

pub const KINDS: u64 = 14;

/// Fills one 256-element super-block with data of the given kind. Every kind keeps all values finite
/// and small enough that f16 scales of every supported format stay finite.
pub fn fill_block(rng: &mut Rng, kind: u64, out: &mut [f32]) {
    let n = out.len();
    match kind {
        // Gaussian weights across scales.
        0 => {
            let s = 10f64.powf(rng.range(-4.0, 1.0));
            out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
        }
        // Uniform, symmetric.
        1 => {
            let a = 10f64.powf(rng.range(-3.0, 2.0));
            out.iter_mut().for_each(|v| *v = rng.range(-a, a) as f32);
        }
        // All zero.
        2 => out.fill(0.0),
        // Constant (either sign).
        3 => {
            let c = (rng.sign() * 10f64.powf(rng.range(-3.0, 2.0))) as f32;
            out.fill(c);
        }
        // Tiny: around 1e-30, with f32 subnormals mixed in.
        4 => {
            for (i, v) in out.iter_mut().enumerate() {
                let s = if i % 3 == 0 { 1e-40 } else { 1e-30 };
                *v = (rng.normal() * s) as f32;
            }
        }
        // Gaussian with one large outlier per 32 values.
        5 => {
            let s = 10f64.powf(rng.range(-3.0, 0.0));
            out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
            for c in 0..n / 32 {
                let i = c * 32 + rng.below(32) as usize;
                out[i] = (rng.sign() * s * rng.range(20.0, 200.0)) as f32;
            }
        }
        // Exact rounding ties: power-of-two step s, block max 127·s (Q8_0) or −8·s (Q4_0), values
        // at half-integers of s.
        6 => {
            let s = 2f64.powi(rng.range(-12.0, 2.0) as i32);
            for c in out.chunks_mut(32) {
                let q8 = rng.next_u64() & 1 == 0;
                for v in c.iter_mut() {
                    let k = if q8 {
                        rng.below(254) as f64 - 127.0
                    } else {
                        rng.below(16) as f64 - 8.0
                    };
                    *v = ((k + 0.5) * s) as f32;
                }
                c[rng.below(32) as usize] = if q8 {
                    (127.0 * s) as f32
                } else {
                    (-8.0 * s) as f32
                };
            }
        }
        // Large but representable (f16 scales stay finite for every format).
        7 => {
            let s = 10f64.powf(rng.range(2.0, 3.5));
            out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
        }
        // All positive / all negative.
        8 => {
            let sg = rng.sign();
            let lo = rng.range(0.0, 1.0);
            out.iter_mut()
                .for_each(|v| *v = (sg * rng.range(lo, lo + 1.0)) as f32);
        }
        // Sparse: mostly zeros.
        9 => {
            let s = rng.range(0.01, 1.0);
            out.iter_mut().for_each(|v| {
                *v = if rng.below(10) == 0 {
                    (rng.normal() * s) as f32
                } else {
                    0.0
                }
            });
        }
        // Small integers (exactly representable levels).
        10 => out
            .iter_mut()
            .for_each(|v| *v = rng.below(31) as f32 - 15.0),
        // Sub-blocks of wildly different magnitude within one super-block.
        11 => {
            for c in out.chunks_mut(16) {
                let s = 10f64.powf(rng.range(-6.0, 1.0));
                c.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
            }
        }
        // Mixed signs with a skew: exponential magnitudes.
        12 => out
            .iter_mut()
            .for_each(|v| *v = (rng.sign() * -rng.uniform().max(1e-12).ln() * 0.05) as f32),
        // Values near the f16 range limit of the element-wise formats (F16 must still accept them).
        _ => out
            .iter_mut()
            .for_each(|v| *v = (rng.sign() * rng.range(1.0, 65504.0)) as f32),
    }
}

/// `n_blocks` super-blocks cycling through every kind (seeded).
pub fn test_data(seed: u64, n_blocks: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0.0f32; n_blocks * 256];
    for (b, chunk) in v.chunks_mut(256).enumerate() {
        fill_block(&mut rng, b as u64 % KINDS, chunk);
    }
    v
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with gguf-py installed: `$MEDDR_PYTHON` or `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python for the gguf-py cross-check not found at {} (set MEDDR_PYTHON to a python with gguf and numpy)",
        p.display()
    );
    p
}

pub fn scratch_dir(name: &str) -> PathBuf {
    // One folder per call: tests run in parallel, and two of them asking for the same name must not share
    // (one's cleanup removed the other's files).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("meddr-quants-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

pub fn f32_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn bytes_to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// First index where two f32 slices differ bitwise.
pub fn first_bit_diff(a: &[f32], b: &[f32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}
