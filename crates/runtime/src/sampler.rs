//! Token selection with Hugging Face `generate` semantics.
//!
//! Order as HF applies its processors and warpers: repetition penalty → temperature → top-k → top-p, then a
//! draw from the softmax. With `temperature == 0` the choice is the argmax after the repetition penalty, which
//! is what HF's greedy search does (processors apply, warpers do not).

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::{Result, RuntimeError};

/// Sampling settings; the defaults are upstream's demo (greedy).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 1.0 = off (HF `repetition_penalty`).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The choice is the first maximum of the raw logits (greedy, no repetition penalty): what a device's
    /// own argmax gives, so the device may pick the token and feed it to the next step by itself.
    pub fn is_device_argmax(&self) -> bool {
        self.is_greedy() && self.repetition_penalty == 1.0
    }

    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(RuntimeError::InvalidOption {
                field: "temperature",
                value: t.to_string(),
                reason: "must be finite and >= 0 (0 = greedy)",
            });
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(RuntimeError::InvalidOption {
                field: "top_p",
                value: p.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(RuntimeError::InvalidOption {
                field: "repetition_penalty",
                value: r.to_string(),
                reason: "must be finite and > 0 (1 = off)",
            });
        }
        Ok(())
    }
}

/// HF `RepetitionPenaltyLogitsProcessor`: for every distinct token in `history`, a positive logit is divided by
/// `penalty` and a negative one multiplied by it. Ids outside `logits` are ignored.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &id in history {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let l = logits[i];
            logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
}

/// HF `TemperatureLogitsWarper` (`t > 0`).
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        logits.iter_mut().for_each(|l| *l /= temperature);
    }
}

/// HF `TopKLogitsWarper`: every logit strictly below the k-th largest becomes −∞ (ties with it survive).
pub fn apply_top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.iter().copied().filter(|v| !v.is_nan()).collect();
    if k > sorted.len() {
        return;
    }
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    logits
        .iter_mut()
        .filter(|l| **l < kth)
        .for_each(|l| *l = f32::NEG_INFINITY);
}

/// HF `TopPLogitsWarper`: sort ascending, remove the tokens whose cumulative probability (from the least likely
/// up) is `<= 1 − top_p`, always keeping the most likely one.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    if top_p >= 1.0 || logits.is_empty() {
        return;
    }
    let probs = softmax_f64(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable ascending sort; ties keep index order.
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let threshold = 1.0 - top_p as f64;
    let mut cum = 0.0f64;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= threshold && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f64 (−∞ → 0). All −∞ gives all zeros.
pub fn softmax_f64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return vec![0.0; logits.len()];
    }
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Log-softmax in f64, rounded to f32 (what `TokenOut::logprob` reports).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

/// First index of the maximum (torch's `argmax` tie rule); NaNs are never chosen.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some(b) if values[b] >= v => {}
            _ => best = Some(i),
        }
    }
    best
}

/// The `k` most likely `(id, value)` pairs, largest first (ties: lower id first).
pub fn top_k_pairs(values: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<usize> = (0..values.len()).filter(|&i| !values[i].is_nan()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx.into_iter().map(|i| (i as u32, values[i])).collect()
}

/// Stateful sampler: parameters plus a seeded ChaCha8 stream, so a seed reproduces a run on every platform.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The logits after every enabled processor and warper, exactly what [`Sampler::sample`] draws from.
    pub fn processed(&self, logits: &[f32], history: &[u32]) -> Vec<f32> {
        let p = &self.params;
        let mut l = logits.to_vec();
        apply_repetition_penalty(&mut l, history, p.repetition_penalty);
        if p.is_greedy() {
            return l;
        }
        apply_temperature(&mut l, p.temperature);
        apply_top_k(&mut l, p.top_k);
        apply_top_p(&mut l, p.top_p);
        l
    }

    /// Picks the next token from raw `logits`; `history` is prompt plus generated ids (for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        let l = self.processed(logits, history);
        let bad = || RuntimeError::BadLogits {
            len: logits.len(),
            reason: "no token has a finite logit",
        };
        if self.params.is_greedy() {
            return argmax(&l).map(|i| i as u32).ok_or_else(bad);
        }
        let probs = softmax_f64(&l);
        // 53 random bits → uniform in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut cum = 0.0;
        let mut last_nonzero = None;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cum += p;
                last_nonzero = Some(i);
                if u < cum {
                    return Ok(i as u32);
                }
            }
        }
        // Rounding left the total a hair below u: the last token with mass is the right answer.
        last_nonzero.map(|i| i as u32).ok_or_else(bad)
    }
}
