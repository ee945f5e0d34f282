//! Whole-model tests on lavapipe (or any adapter): the dev fixture end to end from f32/f16 GGUFs against the
//! upstream PyTorch numbers, q8_0/q4_k_m closeness (KL, top-1) by teacher forcing, SmolLM2-135M (real weights,
//! a plain llama.cpp GGUF with tied embeddings) against llama.cpp's greedy run, and bad inputs.
//!
//! GGUFs of the dev checkpoint are written by `meddr-quantize` inside the test (once per type per process).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::{ctx, dev_gguf, new_ctx, root, samples, shared, tmp_dir};
use meddr_engine::{
    ContextOptions, GpuContext, GpuModel, LoadOptions, MatvecShape, MemoryPlan, ModelError, PlanDevice, Readback, StepInput, VisionEncoder,
};
use meddr_gguf::{GgufFile, GgufWriter, TensorSpec, Value};
use meddr_quantize::FileType;
use ndarray::{Array1, Array2};
use ndarray_npy::NpzReader;

fn arrays() -> NpzReader<std::fs::File> {
    NpzReader::new(std::fs::File::open(shared().join("fixtures/expected/dev/arrays.npz")).unwrap())
        .unwrap()
}

/// The exact model input of an image sample (`transforms/<stem>_pad2square.npz`, pad2square = true).
fn pixel_values(image: &str) -> Vec<f32> {
    let stem = image.rsplit_once('.').unwrap().0;
    let p = shared().join(format!("fixtures/transforms/{stem}_pad2square.npz"));
    let mut z = NpzReader::new(std::fs::File::open(&p).unwrap()).unwrap();
    let a: ndarray::Array3<f32> = z.by_name("pixel_values.npy").unwrap();
    a.iter().copied().collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(p || q) of the distributions behind two logit rows.
fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let lp = log_softmax(p_logits);
    let lq = log_softmax(q_logits);
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

fn load(path: &Path, opts: LoadOptions) -> GpuModel {
    let f = GgufFile::open_model(path, None).unwrap();
    GpuModel::load(ctx(), &f, &opts).unwrap()
}

struct E2e {
    logits: f32,
    features: f32,
}

/// Every fixture sample: vision features, last logits, and 24 greedy tokens fed back on the GPU.
fn end_to_end(ft: FileType, opts: LoadOptions) -> E2e {
    end_to_end_on(ctx(), ft, opts, usize::MAX)
}

/// [`end_to_end`] on context `c`, over the first `n` samples.
fn end_to_end_on(c: Arc<GpuContext>, ft: FileType, opts: LoadOptions, n: usize) -> E2e {
    let path = dev_gguf(ft);
    let f = GgufFile::open_model(&path, None).unwrap();
    let mut m = GpuModel::load(c, &f, &opts).unwrap();
    let plan = m.memory_plan();
    eprintln!("{}: {plan}", ft.name());
    // Packed weights are uploaded as they are: GPU bytes = file bytes up to 4-byte padding per buffer.
    for (file, gpu, what) in [
        (plan.llm_file, plan.llm_gpu, "LLM"),
        (plan.vit_file, plan.vit_gpu, "ViT"),
        (plan.projector_file, plan.projector_gpu, "projector"),
    ] {
        assert!(
            file > 0 && gpu >= file && gpu - file < 4 * 200,
            "{what}: file {file}, gpu {gpu}"
        );
    }
    let mut npz = arrays();
    let mut worst = E2e {
        logits: 0.0,
        features: 0.0,
    };
    for s in samples().into_iter().take(n) {
        let t = Instant::now();
        let feats = match &s.image {
            Some(img) => {
                let f = m.encode_image(&pixel_values(img)).unwrap();
                let got = m.read_image_features(&f).unwrap();
                let want: Array2<f32> = npz
                    .by_name(&format!("f32.{}.vision_features.npy", s.id))
                    .unwrap();
                let d = max_abs_diff(&got, want.as_slice().unwrap());
                eprintln!("{} {}: vision features max |Δ| = {d:.3e}", ft.name(), s.id);
                worst.features = worst.features.max(d);
                Some(f)
            }
            None => None,
        };
        let step = m
            .prefill(&s.input_ids, feats.as_ref(), 24, Readback::TokenAndLogits)
            .unwrap();
        let want: Array1<f32> = npz
            .by_name(&format!("f32.{}.last_logits.npy", s.id))
            .unwrap();
        let d = max_abs_diff(step.logits.as_ref().unwrap(), want.as_slice().unwrap());
        eprintln!("{} {}: last logits max |Δ| = {d:.3e}", ft.name(), s.id);
        worst.logits = worst.logits.max(d);
        let mut tokens = vec![step.token];
        for _ in 1..24 {
            tokens.push(
                m.decode_step(StepInput::Greedy, Readback::Token)
                    .unwrap()
                    .token,
            );
        }
        assert_eq!(tokens, s.greedy, "{} {}: greedy tokens", ft.name(), s.id);
        assert_eq!(m.position() as usize, s.input_ids.len() + 23);
        eprintln!("{} {}: {:.2} s", ft.name(), s.id, t.elapsed().as_secs_f64());
    }
    worst
}

/// f32 weights, f32 KV cache: only summation order differs from upstream's f32 CPU run. The fixture's own
/// f64 re-evaluation moves the logits by ≤ 8.4e-5 and the features by ≤ 2.3e-6, so bounds of 1e-3 / 1e-4
/// leave room for GPU reordering while every known preprocessing or layout mistake (≥ 0.13) fails.
/// `prefill_chunk` 100 makes the 256 image tokens straddle three chunks.
#[test]
fn dev_f32_matches_upstream() {
    let w = end_to_end(
        FileType::F32,
        LoadOptions {
            context_length: Some(512),
            prefill_chunk: 100,
            kv_f32: true,
            ..Default::default()
        },
    );
    eprintln!(
        "f32: worst logits |Δ| {:.3e}, features |Δ| {:.3e}",
        w.logits, w.features
    );
    assert!(w.logits < 1e-3, "logits {}", w.logits);
    assert!(w.features < 1e-4, "features {}", w.features);
}

/// A prefill asks its check before the prompt and after each chunk but the last, and when the check says
/// stop it reports how many prompt tokens ran; the next prefill (nothing kept) still gives upstream's
/// logits and greedy tokens. 50-token chunks put the image's 256 tokens across six of them.
#[test]
fn an_interrupted_prefill_stops_between_chunks_and_the_next_one_is_exact() {
    let s = samples()
        .into_iter()
        .find(|s| s.image.is_some())
        .expect("an image sample");
    let mut m = load(
        &dev_gguf(FileType::F32),
        LoadOptions {
            context_length: Some(512),
            prefill_chunk: 50,
            kv_f32: true,
            ..Default::default()
        },
    );
    let f = m
        .encode_image(&pixel_values(s.image.as_deref().unwrap()))
        .unwrap();
    let (ids, n) = (&s.input_ids, s.input_ids.len() as u32);
    assert!(n > 150, "the sample needs several chunks: {n} tokens");
    let checks = std::cell::Cell::new(0u32);
    let stop_at = |k: u32| {
        let checks = &checks;
        move || {
            checks.set(checks.get() + 1);
            checks.get() >= k
        }
    };
    for (k, done) in [(1, 0), (2, 50), (4, 150)] {
        checks.set(0);
        match m.prefill_interruptible(0, ids, Some(&f), 24, Readback::Token, &stop_at(k)) {
            Err(ModelError::Interrupted { done: d, total }) => {
                assert_eq!((d, total), (done, n), "stopped at check {k}")
            }
            other => panic!("check {k} said stop: {:?}", other.map(|s| s.token)),
        }
    }
    // Never stopping: one check before the prompt and one after each chunk but the last.
    checks.set(0);
    let step = m
        .prefill_interruptible(0, ids, Some(&f), 24, Readback::TokenAndLogits, &stop_at(u32::MAX))
        .unwrap();
    assert_eq!(checks.get(), n.div_ceil(50));
    let want: Array1<f32> = arrays()
        .by_name(&format!("f32.{}.last_logits.npy", s.id))
        .unwrap();
    let d = max_abs_diff(step.logits.as_ref().unwrap(), want.as_slice().unwrap());
    assert!(d < 1e-3, "logits after interrupted prefills: max |Δ| = {d}");
    let mut tokens = vec![step.token];
    for _ in 1..24 {
        tokens.push(m.decode_step(StepInput::Greedy, Readback::Token).unwrap().token);
    }
    assert_eq!(tokens, s.greedy, "greedy tokens after interrupted prefills");
    let e = ModelError::Interrupted { done: 50, total: n }.to_string();
    assert!(e.contains(&format!("after 50 of its {n} tokens")), "{e}");
}

/// The work split real GPUs take (subgroup matvec with 16-byte Q4_K loads, the tiled matmul for prefill and
/// the ViT, split-key decode attention), forced on lavapipe: upstream's features, logits and greedy tokens
/// with f32 weights as on the CPU-driver split, and with Q4_K_M weights the same greedy tokens and logits
/// within float noise of the CPU-driver split. The first image sample and the text-only one: on a CPU
/// driver the GPU split's ViT takes ~20 s per image.
#[test]
fn the_gpu_work_split_matches_upstream_end_to_end() {
    let gpu = new_ctx(ContextOptions {
        matvec_shape: Some(MatvecShape::SUBGROUP),
        ..Default::default()
    });
    let w = end_to_end_on(
        gpu.clone(),
        FileType::F32,
        LoadOptions {
            context_length: Some(512),
            kv_f32: true,
            ..Default::default()
        },
        1,
    );
    assert!(w.logits < 1e-3, "logits {}", w.logits);
    assert!(w.features < 1e-4, "features {}", w.features);
    let f = GgufFile::open_model(&dev_gguf(FileType::Q4KM), None).unwrap();
    let opts = LoadOptions {
        context_length: Some(512),
        kv_f32: true,
        ..Default::default()
    };
    let mut on_gpu_split = GpuModel::load(gpu, &f, &opts).unwrap();
    let mut on_cpu_split = GpuModel::load(ctx(), &f, &opts).unwrap();
    let all = samples();
    let image = all.iter().find(|s| s.image.is_some()).expect("an image sample");
    let text = all.iter().find(|s| s.image.is_none()).expect("a text-only sample");
    for s in [image, text] {
        let run = |m: &mut GpuModel| {
            let feats = s
                .image
                .as_ref()
                .map(|img| m.encode_image(&pixel_values(img)).unwrap());
            let step = m
                .prefill(&s.input_ids, feats.as_ref(), 8, Readback::TokenAndLogits)
                .unwrap();
            let mut tokens = vec![step.token];
            for _ in 1..8 {
                tokens.push(m.decode_step(StepInput::Greedy, Readback::Token).unwrap().token);
            }
            (step.logits.unwrap(), tokens)
        };
        let (la, ta) = run(&mut on_gpu_split);
        let (lb, tb) = run(&mut on_cpu_split);
        assert_eq!(ta, tb, "{}: q4_k_m greedy tokens, GPU split vs CPU-driver split", s.id);
        let d = max_abs_diff(&la, &lb);
        assert!(d < 1e-3, "{}: q4_k_m last logits differ by {d}", s.id);
        eprintln!("q4_k_m {}: GPU vs CPU-driver split, logits max |Δ| = {d:.3e}", s.id);
    }
}

/// f16 weights (merged LoRA rounded to f16, ViT matrices and embeddings in f16) with the device's default
/// KV cache (f16 on lavapipe). Measured: see the report; the bounds are ~4× the measurement.
#[test]
fn dev_f16_matches_upstream() {
    let w = end_to_end(
        FileType::F16,
        LoadOptions {
            context_length: Some(512),
            ..Default::default()
        },
    );
    eprintln!(
        "f16: worst logits |Δ| {:.3e}, features |Δ| {:.3e}",
        w.logits, w.features
    );
    assert!(w.logits < 0.1, "logits {}", w.logits);
    assert!(w.features < 5e-3, "features {}", w.features);
}

/// Teacher forcing on the fixture's greedy tokens: per-step KL(f32 upstream ‖ quantized engine) and top-1
/// agreement over the 4 × 24 steps.
fn teacher_forced(ft: FileType) -> (f64, f64, f64) {
    let mut m = load(
        &dev_gguf(ft),
        LoadOptions {
            context_length: Some(512),
            ..Default::default()
        },
    );
    let mut npz = arrays();
    let (mut sum, mut max, mut n, mut agree) = (0.0f64, 0.0f64, 0usize, 0usize);
    for s in samples() {
        let feats = s
            .image
            .as_ref()
            .map(|img| m.encode_image(&pixel_values(img)).unwrap());
        let want: Array2<f32> = npz
            .by_name(&format!("f32.{}.step_logits.npy", s.id))
            .unwrap();
        let mut step = m
            .prefill(&s.input_ids, feats.as_ref(), 24, Readback::TokenAndLogits)
            .unwrap();
        for i in 0..24 {
            let got = step.logits.as_ref().unwrap();
            let reference = want.row(i).to_vec();
            let k = kl(&reference, got);
            sum += k;
            max = max.max(k);
            n += 1;
            assert_eq!(
                step.token as usize,
                argmax(got),
                "GPU argmax vs host argmax"
            );
            if argmax(got) == argmax(&reference) {
                agree += 1;
            }
            if i + 1 < 24 {
                step = m
                    .decode_step(StepInput::Token(s.greedy[i]), Readback::TokenAndLogits)
                    .unwrap();
            }
        }
    }
    let r = (sum / n as f64, max, agree as f64 / n as f64);
    eprintln!(
        "{}: KL mean {:.3e}, max {:.3e}, top-1 agreement {:.4} ({agree}/{n})",
        ft.name(),
        r.0,
        r.1,
        r.2
    );
    r
}

// Bounds are ~3× the measured values (lavapipe, f16 KV cache). The dev model is random and tiny (H = 192,
// logits std ≈ 17), so weight noise matters far more than in a trained model: bf16 rounding alone moves its
// logits by up to 1.29 and flips a greedy step (expected.json → bf16). Measured: q8_0 KL mean 1.46e-2, max
// 0.138, top-1 93/96; q4_k_m KL mean 1.09, max 12.2, top-1 75/96.
#[test]
fn dev_q8_0_close_to_f32() {
    let (mean, max, agree) = teacher_forced(FileType::Q8_0);
    assert!(mean < 0.05 && max < 0.5, "KL mean {mean}, max {max}");
    assert!(agree >= 0.93, "top-1 agreement {agree}");
}

#[test]
fn dev_q4_k_m_close_to_f32() {
    let (mean, max, agree) = teacher_forced(FileType::Q4KM);
    assert!(mean < 3.0 && max < 35.0, "KL mean {mean}, max {max}");
    assert!(agree >= 0.7, "top-1 agreement {agree}");
}

/// SmolLM2-135M-Instruct Q4_1 (llama.cpp file, tied embeddings) against llama.cpp's greedy run. The packed
/// weights are the same bits; llama.cpp's CPU path quantizes activations to 8 bits for its dot products and
/// sums in another order, so its logits carry ~1e-2 noise: 0.05 is the bound (top-2 margin is 1.7).
#[test]
fn smollm2_greedy_matches_llama_cpp() {
    let path = root().join(".cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run tests/setup.sh",
        path.display()
    );
    let t = Instant::now();
    let mut m = load(
        &path,
        LoadOptions {
            context_length: Some(64),
            ..Default::default()
        },
    );
    assert!(m.config.tied_embeddings);
    let plan = m.memory_plan();
    eprintln!("SmolLM2 load {:.2} s: {plan}", t.elapsed().as_secs_f64());
    assert_eq!(
        plan.vit_gpu + plan.projector_gpu + plan.vision_activations,
        0
    );
    assert!(plan.llm_gpu >= plan.llm_file && plan.llm_gpu - plan.llm_file < 4 * 300);
    assert!(matches!(
        m.encode_image(&[0.0; 12]),
        Err(ModelError::NoVision(_))
    ));

    let prompt = [
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    let t = Instant::now();
    let step = m
        .prefill(&prompt, None, 8, Readback::TokenAndLogits)
        .unwrap();
    let logits = step.logits.unwrap();
    for (id, want) in [(504usize, 27.859f32), (60, 26.130), (38634, 26.102)] {
        eprintln!(
            "SmolLM2 step-1 logit {id}: {:.4} (llama.cpp {want})",
            logits[id]
        );
        assert!(
            (logits[id] - want).abs() < 0.05,
            "logit {id}: {} vs {want}",
            logits[id]
        );
    }
    let mut ids = vec![step.token];
    for _ in 1..8 {
        ids.push(
            m.decode_step(StepInput::Greedy, Readback::Token)
                .unwrap()
                .token,
        );
    }
    eprintln!(
        "SmolLM2 prefill + 7 steps: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(ids, [504, 3575, 282, 4649, 314, 7042, 30, 2]);

    // Pipelined greedy decoding (2 steps in flight) gives the same ids, with positions in order.
    let first = m.prefill(&prompt, None, 8, Readback::Token).unwrap();
    let mut piped = vec![first.token];
    m.queue_greedy_step().unwrap();
    while piped.len() < 8 {
        if piped.len() + m.queued_steps() < 8 {
            m.queue_greedy_step().unwrap();
        }
        assert_eq!(m.queued_steps(), 2.min(8 - piped.len()));
        let s = m.read_queued().unwrap();
        assert_eq!(s.position as usize, prompt.len() + piped.len());
        piped.push(s.token);
    }
    assert_eq!(piped, ids);
    // Every decode step records the same bindings: the cache holds one step's worth and stops growing.
    let cached = m.cached_bind_groups();
    assert!(
        cached > 30 * 10,
        "{cached} bind groups cached for 30 layers"
    );
    m.decode_step(StepInput::Greedy, Readback::Token).unwrap();
    assert_eq!(m.cached_bind_groups(), cached);
    assert!(m.queue_greedy_step().is_ok() && m.queue_greedy_step().is_ok());
    let third = m.queue_greedy_step().unwrap_err();
    assert!(third.to_string().contains("in flight"), "{third}");

    // Stopping with steps in flight rewinds to the last token read; the host's token continues exactly.
    m.prefill(&prompt, None, 8, Readback::Token).unwrap();
    m.queue_greedy_step().unwrap();
    m.queue_greedy_step().unwrap();
    assert_eq!(m.read_queued().unwrap().token, ids[1]);
    m.drop_queued();
    assert_eq!(m.queued_steps(), 0);
    assert!(
        m.queue_greedy_step().is_err(),
        "the GPU argmax belongs to a dropped step"
    );
    assert!(m.read_queued().is_err());
    let s = m
        .decode_step(StepInput::Token(ids[1]), Readback::Token)
        .unwrap();
    assert_eq!((s.token, s.position as usize), (ids[2], prompt.len() + 2));
    // That step left its own argmax on the device: queueing resumes from it.
    m.queue_greedy_step().unwrap();
    assert_eq!(m.read_queued().unwrap().token, ids[3]);
}

/// Copies `src` into a new GGUF, letting `edit` change the metadata and drop tensors.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<String>)) {
    let f = GgufFile::open_model(src, None).unwrap();
    let mut meta = f.header.metadata.clone();
    let mut names: Vec<String> = f.header.tensors.iter().map(|t| t.name.clone()).collect();
    edit(&mut meta, &mut names);
    let specs = names
        .iter()
        .map(|n| {
            let t = f.tensor(n).unwrap();
            TensorSpec::new(n.clone(), t.dims.clone(), t.ty)
        })
        .collect();
    let mut w = GgufWriter::create(dst, meta, specs).unwrap();
    for n in &names {
        w.write_tensor(n, f.tensor_bytes(n).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

fn set(meta: &mut [(String, Value)], key: &str, v: Value) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

/// `MemoryPlan::for_header` (what `meddr info` prints, from the header alone) equals what a load allocates,
/// byte for byte, for every file type and option that changes an allocation.
#[test]
fn the_memory_plan_from_the_header_equals_what_a_load_allocates() {
    let c = ctx();
    let device = PlanDevice {
        f16: c.info.f16,
        max_binding_bytes: c.max_binding_bytes(),
    };
    let options = [
        LoadOptions::default(),
        LoadOptions {
            context_length: Some(300),
            prefill_chunk: 37,
            ..Default::default()
        },
        LoadOptions {
            load_vision: false,
            ..Default::default()
        },
        LoadOptions {
            kv_f32: true,
            context_length: Some(64),
            ..Default::default()
        },
    ];
    for ft in [FileType::F32, FileType::F16, FileType::Q4KM] {
        let file = GgufFile::open_model(dev_gguf(ft), None).unwrap();
        for opts in &options {
            let loaded = GpuModel::load(c.clone(), &file, opts)
                .unwrap()
                .memory_plan();
            let planned = MemoryPlan::for_header(&file.header, opts, device).unwrap();
            assert_eq!(planned, loaded, "{} {opts:?}", ft.name());
            assert!(loaded.llm_gpu > 0 && loaded.kv_cache > 0 && loaded.llm_activations > 0);
            assert_eq!(loaded.vit_gpu > 0, opts.load_vision, "{opts:?}");
        }
    }
}

/// Staged use for GPUs that cannot hold both parts: the vision encoder alone encodes the image, is dropped,
/// then the language model alone (`load_vision: false`) prefills with those features. Same features and the
/// same 24 greedy tokens as upstream; each part holds exactly its share of the full model's plan.
#[test]
fn the_vision_encoder_alone_then_the_language_model_alone_answer_as_upstream() {
    let path = dev_gguf(FileType::F32);
    let file = GgufFile::open_model(&path, None).unwrap();
    let full = GpuModel::load(ctx(), &file, &LoadOptions::default())
        .unwrap()
        .memory_plan();
    let s = samples()
        .into_iter()
        .find(|s| s.image.is_some())
        .expect("an image sample");
    let (features, want_features) = {
        let enc = VisionEncoder::load(ctx(), &file).unwrap();
        let p = enc.memory_plan();
        assert_eq!(
            (p.vit_gpu, p.projector_gpu, p.vision_activations),
            (full.vit_gpu, full.projector_gpu, full.vision_activations)
        );
        assert_eq!(p.peak_vision_only(), full.peak_vision_only());
        let f = enc
            .encode(&pixel_values(s.image.as_deref().unwrap()))
            .unwrap();
        let got = enc.read_features(&f).unwrap();
        let want: Array2<f32> = arrays()
            .by_name(&format!("f32.{}.vision_features.npy", s.id))
            .unwrap();
        (f, max_abs_diff(&got, want.as_slice().unwrap()))
    }; // the encoder is dropped here; the features stay
    assert!(want_features < 1e-4, "features max |Δ| {want_features}");
    let text_only = LoadOptions {
        load_vision: false,
        ..Default::default()
    };
    let mut m = GpuModel::load(ctx(), &file, &text_only).unwrap();
    assert_eq!(
        m.memory_plan().peak_language_only(),
        full.peak_language_only()
    );
    assert_eq!(m.memory_plan().vit_gpu, 0);
    let step = m
        .prefill(&s.input_ids, Some(&features), 24, Readback::Token)
        .unwrap();
    let mut tokens = vec![step.token];
    while tokens.len() < 24 {
        tokens.push(
            m.decode_step(StepInput::Greedy, Readback::Token)
                .unwrap()
                .token,
        );
    }
    assert_eq!(tokens, s.greedy);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let src = dev_gguf(FileType::F32);
    let dir = tmp_dir();
    let try_load = |p: &Path| {
        GpuModel::load(
            ctx(),
            &GgufFile::open_model(p, None).unwrap(),
            &LoadOptions::default(),
        )
    };

    let p = dir.join("arch.gguf");
    rewrite(&src, &p, |m, _| {
        set(m, "general.architecture", Value::from("qwen2"))
    });
    match try_load(&p) {
        Err(e @ ModelError::Config(meddr_engine::ConfigError::Architecture { .. })) => {
            assert!(e.to_string().contains("qwen2"), "{e}")
        }
        other => panic!("wrong architecture: {:?}", other.err()),
    }

    let p = dir.join("missing.gguf");
    rewrite(&src, &p, |_, names| {
        names.retain(|n| n != "blk.1.ffn_up.weight")
    });
    match try_load(&p) {
        Err(e @ ModelError::MissingTensor { .. }) => {
            assert!(e.to_string().contains("blk.1.ffn_up.weight"), "{e}")
        }
        other => panic!("missing tensor: {:?}", other.err()),
    }

    let p = dir.join("shape.gguf");
    rewrite(&src, &p, |m, _| {
        set(m, "llama.feed_forward_length", Value::U32(256))
    });
    match try_load(&p) {
        Err(e @ ModelError::Shape { .. }) => {
            assert!(e.to_string().contains("blk.0.ffn_gate.weight"), "{e}")
        }
        other => panic!("shape mismatch: {:?}", other.err()),
    }

    let p = dir.join("truncated.gguf");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = GgufFile::open_model(&p, None).expect_err("a truncated file must not open");
    eprintln!("truncated: {e}");

    // Context overflow: refused before any work, and again when decoding runs past the cache.
    let f = GgufFile::open_model(&src, None).unwrap();
    let mut m = GpuModel::load(
        ctx(),
        &f,
        &LoadOptions {
            context_length: Some(40),
            load_vision: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.capacity(), 40);
    let text = samples().into_iter().find(|s| s.image.is_none()).unwrap();
    assert_eq!(text.input_ids.len(), 38);
    match m.prefill(&text.input_ids, None, 24, Readback::Token) {
        Err(e @ ModelError::ContextOverflow { .. }) => eprintln!("overflow: {e}"),
        other => panic!("overflow: {other:?}"),
    }
    assert_eq!(m.position(), 0, "nothing ran");
    assert!(matches!(
        m.decode_step(StepInput::Greedy, Readback::Token),
        Err(ModelError::Input { .. })
    ));
    let s = m
        .prefill(&text.input_ids, None, 2, Readback::Token)
        .unwrap();
    assert_eq!(s.token, text.greedy[0]);
    m.decode_step(StepInput::Greedy, Readback::Token).unwrap();
    m.decode_step(StepInput::Greedy, Readback::Token).unwrap();
    assert!(matches!(
        m.decode_step(StepInput::Greedy, Readback::Token),
        Err(ModelError::ContextOverflow { .. })
    ));
    assert!(matches!(
        m.prefill(&[5, 2009], None, 1, Readback::Token),
        Err(ModelError::Input { field: "ids", .. })
    ));
    assert!(matches!(
        m.encode_image(&[0.0; 10]),
        Err(ModelError::NoVision(_))
    ));
    assert!(matches!(
        GpuModel::load(
            ctx(),
            &f,
            &LoadOptions {
                prefill_chunk: 0,
                ..Default::default()
            }
        ),
        Err(ModelError::Input {
            field: "prefill_chunk",
            ..
        })
    ));
}
