//! Sampler pieces against brute-force restatements of Hugging Face's processors.

use meddr_runtime::sampler::{
    apply_repetition_penalty, apply_temperature, apply_top_k, apply_top_p, argmax, softmax_f64,
};
use meddr_runtime::{Sampler, SamplingParams};

/// A small deterministic generator for test inputs (independent of the sampler's ChaCha stream).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative() {
    let mut l = vec![2.0, -2.0, 0.5, 3.0, 0.0];
    // Repeated ids are penalised once; out-of-range ids are ignored.
    apply_repetition_penalty(&mut l, &[0, 1, 1, 4, 99], 2.0);
    assert_eq!(l, vec![1.0, -4.0, 0.5, 3.0, 0.0]);
    let mut l = vec![1.5, -1.5];
    apply_repetition_penalty(&mut l, &[0, 1], 0.5);
    assert_eq!(l, vec![3.0, -0.75]);
}

#[test]
fn top_k_keeps_tokens_with_fewer_than_k_strictly_larger() {
    let mut rng = Lcg(7);
    for case in 0..200 {
        let n = 2 + case % 30;
        let mut v = rng.vec(n);
        // Force ties in some cases.
        if case % 3 == 0 {
            v[1] = v[0];
        }
        let k = 1 + case % n;
        let mut got = v.clone();
        apply_top_k(&mut got, k);
        for i in 0..n {
            let larger = v.iter().filter(|&&x| x > v[i]).count();
            let kept = got[i] != f32::NEG_INFINITY;
            assert_eq!(kept, larger < k, "case {case}: token {i} of {v:?}, k {k}");
            if kept {
                assert_eq!(got[i], v[i]);
            }
        }
    }
    let mut v = vec![1.0, 3.0, 3.0, 2.0];
    apply_top_k(&mut v, 2);
    assert_eq!(v, vec![f32::NEG_INFINITY, 3.0, 3.0, f32::NEG_INFINITY]);
}

#[test]
fn top_p_keeps_tokens_whose_more_likely_mass_is_below_p() {
    let mut rng = Lcg(11);
    let mut checked = 0;
    for case in 0..300 {
        let n = 2 + case % 25;
        let v = rng.vec(n);
        let p = softmax_f64(&v);
        let top_p = 0.05 + 0.9 * ((case * 37 % 100) as f32 / 100.0);
        // Skip inputs where a cumulative sum lands within rounding distance of the threshold.
        let ambiguous = (0..n).any(|i| {
            let above: f64 = (0..n).filter(|&j| v[j] > v[i]).map(|j| p[j]).sum();
            (above - top_p as f64).abs() < 1e-6 || (above + p[i] - top_p as f64).abs() < 1e-6
        });
        if ambiguous || v.iter().enumerate().any(|(i, x)| v[..i].contains(x)) {
            continue;
        }
        let mut got = v.clone();
        apply_top_p(&mut got, top_p);
        for i in 0..n {
            let above: f64 = (0..n).filter(|&j| v[j] > v[i]).map(|j| p[j]).sum();
            let kept = got[i] != f32::NEG_INFINITY;
            assert_eq!(
                kept,
                above < top_p as f64,
                "case {case}: token {i}, p {top_p}, {v:?}"
            );
        }
        checked += 1;
    }
    assert!(checked > 250, "only {checked} cases checked");
    // The most likely token always survives, even for a tiny top_p.
    let mut v = vec![0.0, 5.0, 1.0];
    apply_top_p(&mut v, 1e-6);
    assert_eq!(v, vec![f32::NEG_INFINITY, 5.0, f32::NEG_INFINITY]);
}

#[test]
fn processing_order_is_penalty_temperature_top_k_top_p() {
    let mut rng = Lcg(3);
    let logits = rng.vec(50);
    let history = [3u32, 7, 7, 20, 49];
    let params = SamplingParams {
        temperature: 0.7,
        top_k: 12,
        top_p: 0.8,
        repetition_penalty: 1.3,
        seed: 1,
    };
    let s = Sampler::new(params).unwrap();
    let mut want = logits.clone();
    apply_repetition_penalty(&mut want, &history, 1.3);
    apply_temperature(&mut want, 0.7);
    apply_top_k(&mut want, 12);
    apply_top_p(&mut want, 0.8);
    assert_eq!(s.processed(&logits, &history), want);
    // The penalty changes which token is greedy: a repeated top token loses to an unrepeated runner-up.
    let greedy = Sampler::new(SamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(greedy.processed(&[4.0, 3.0], &[0]), vec![2.0, 3.0]);
    assert_eq!(greedy.clone().sample(&[4.0, 3.0], &[0]).unwrap(), 1);
}

#[test]
fn seed_makes_runs_reproducible() {
    let mut rng = Lcg(5);
    let rows: Vec<Vec<f32>> = (0..60).map(|_| rng.vec(40)).collect();
    let draw = |seed| {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.5,
            seed,
            ..Default::default()
        })
        .unwrap();
        rows.iter()
            .map(|r| s.sample(r, &[]).unwrap())
            .collect::<Vec<u32>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn temperature_to_zero_equals_greedy() {
    let mut rng = Lcg(9);
    for seed in 0..100u64 {
        let v = rng.vec(64);
        let want = argmax(&v).unwrap() as u32;
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut greedy = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(greedy.sample(&v, &[]).unwrap(), want);
        if sorted[0] - sorted[1] > 1e-3 {
            let mut cold = Sampler::new(SamplingParams {
                temperature: 1e-5,
                seed,
                ..Default::default()
            })
            .unwrap();
            assert_eq!(cold.sample(&v, &[]).unwrap(), want, "seed {seed}");
        }
    }
}

#[test]
fn draws_follow_the_softmax() {
    let logits = [1.0f32, 0.0, -1.0, 2.0];
    let p = softmax_f64(&logits);
    let mut s = Sampler::new(SamplingParams {
        temperature: 1.0,
        seed: 9,
        ..Default::default()
    })
    .unwrap();
    let n = 40_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&logits, &[]).unwrap() as usize] += 1;
    }
    for i in 0..4 {
        let f = counts[i] as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let sd = (p[i] * (1.0 - p[i]) / n as f64).sqrt();
        assert!(
            (f - p[i]).abs() < 5.0 * sd,
            "token {i}: frequency {f}, probability {}",
            p[i]
        );
    }
}

#[test]
fn invalid_parameters_are_named() {
    for (params, field) in [
        (
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
    ] {
        let e = Sampler::new(params).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}
