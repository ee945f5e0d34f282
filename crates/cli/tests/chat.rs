//! Conversations (issue 10.1): upstream's history format, the KV cache kept between turns without changing a
//! single token, the context running out as a clear error, and the `meddr chat` REPL end to end.

mod common;

use std::ops::ControlFlow;

use common::{chat_repl, fixtures, model, tmp};
use meddr_cli::{CpuBackend, GpuBackend, GpuOptions, VisionLoad};
use meddr_gguf::GgufFile;
use meddr_reference::GgufStore;
use meddr_runtime::{
    build_prompt, generate, tokenizer_from_gguf_header, Backend, Conversation, GenerationOptions,
    ModelInfo, RuntimeError, StopPolicy, UserText,
};
use serde_json::Value as Json;

fn pixels(info: &ModelInfo) -> Vec<f32> {
    let p = &info.vision.as_ref().unwrap().preprocessing;
    let cfg = p.config();
    let bytes = std::fs::read(fixtures().join("images/test2.jpg")).unwrap();
    meddr_image::preprocess(&bytes, &cfg).unwrap().pixel_values
}

fn greedy(n: usize) -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: n,
        stop: StopPolicy::IgnoreEos,
        ..Default::default()
    }
}

fn ids(r: &meddr_runtime::GenerationResult) -> Vec<u32> {
    r.tokens.iter().map(|t| t.id).collect()
}

#[test]
fn the_history_is_upstreams_format() {
    let file = GgufFile::open_model(model(), None).unwrap();
    let info = ModelInfo::from_gguf_header(&file.header).unwrap();
    let mut conv = Conversation::new(UserText::Upstream);
    // The first turn is exactly the single-question prompt.
    let tok = tokenizer_from_gguf_header(&file.header).unwrap();
    assert_eq!(
        conv.prompt_text(&tok, &info, "  Is this abnormal? ")
            .unwrap()
            .0,
        build_prompt(&info.system_message, "Is this abnormal?", false, 0)
    );
    conv.set_image(vec![0.0; 4]);
    let (text, user) = conv.prompt_text(&tok, &info, "Q1").unwrap();
    assert_eq!(text, build_prompt(&info.system_message, "Q1", true, 256));
    assert_eq!(&text[user[0].clone()], "Q1");
}

/// Two turns about an image through `Conversation` (cache kept), then the second turn's full prompt run
/// from scratch with `generate`: the same tokens. On the GPU engine and on the CPU reference, which agree.
#[test]
fn keeping_the_cache_between_turns_changes_no_token() {
    let file = GgufFile::open_model(model(), None).unwrap();
    let info = ModelInfo::from_gguf_header(&file.header).unwrap();
    let tok = tokenizer_from_gguf_header(&file.header).unwrap();
    let pv = pixels(&info);
    let mut per_device = Vec::new();
    for device in ["gpu", "cpu"] {
        let load = || -> Box<dyn Backend> {
            if device == "gpu" {
                Box::new(gpu_backend())
            } else {
                Box::new(
                    CpuBackend::load(&GgufStore::from_file(
                        GgufFile::open_model(model(), None).unwrap(),
                    ))
                    .unwrap(),
                )
            }
        };
        let mut b = load();
        let mut conv = Conversation::new(UserText::Upstream);
        conv.set_image(b.encode_image(&pv).unwrap());
        let r1 = conv
            .ask(
                b.as_mut(),
                &tok,
                &info,
                "Describe the image.",
                &greedy(8),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert_eq!(r1.reused_tokens, 0);
        let r2 = conv
            .ask(
                b.as_mut(),
                &tok,
                &info,
                "Anything else?",
                &greedy(8),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert!(
            r2.reused_tokens >= r1.prompt.ids.len(),
            "{device}: the first prompt (image included) is reused: {} of {}",
            r2.reused_tokens,
            r2.prompt.ids.len()
        );
        assert_eq!(conv.turns().len(), 2);
        assert_eq!(
            conv.turns()[0].answer,
            meddr_runtime::python_strip(&r1.result.text)
        );
        // The same prompt from scratch, on a fresh backend.
        let mut fresh = load();
        let feats = fresh.encode_image(&pv).unwrap();
        let full = generate(
            fresh.as_mut(),
            &tok,
            &info,
            &r2.prompt.ids,
            Some(&feats),
            &greedy(8),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(
            ids(&r2.result),
            ids(&full),
            "{device}: turn 2 with the cache kept vs from scratch"
        );
        per_device.push((ids(&r1.result), ids(&r2.result)));
    }
    assert_eq!(per_device[0], per_device[1], "GPU engine and CPU reference");
}

#[test]
fn a_full_context_is_a_clear_error_saying_how_much_is_left() {
    let file = GgufFile::open_model(model(), None).unwrap();
    let info = ModelInfo::from_gguf_header(&file.header).unwrap();
    let tok = tokenizer_from_gguf_header(&file.header).unwrap();
    let mut b = GpuBackend::load(
        &file,
        &GpuOptions {
            force_f32: false,
            context_length: Some(300),
            vision: VisionLoad::Resident,
            prefill_chunk: None,
        },
    )
    .unwrap();
    let mut conv = Conversation::new(UserText::Upstream);
    conv.set_image(b.encode_image(&pixels(&info)).unwrap());
    conv.ask(
        &mut b,
        &tok,
        &info,
        "Describe the image.",
        &greedy(8),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let e = conv
        .ask(
            &mut b,
            &tok,
            &info,
            "And more, in detail?",
            &greedy(8),
            |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(
        matches!(e, RuntimeError::ConversationFull { context: 300, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("left") && msg.contains("300"), "{msg}");
    // Nothing was recorded; a new conversation works on the same backend.
    assert_eq!(conv.turns().len(), 1);
    conv.reset();
    conv.ask(&mut b, &tok, &info, "Hello?", &greedy(4), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
}

/// A new image has the same token ids as the old one: the cached keys and values of the old image must not
/// be reused for it (the server compares pixels and calls `set_image` only for a different image).
#[test]
fn a_new_image_is_never_answered_from_the_old_images_cache() {
    let file = GgufFile::open_model(model(), None).unwrap();
    let info = ModelInfo::from_gguf_header(&file.header).unwrap();
    let tok = tokenizer_from_gguf_header(&file.header).unwrap();
    let read = |name: &str| {
        let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
        meddr_image::preprocess(
            &bytes,
            &info.vision.as_ref().unwrap().preprocessing.config(),
        )
        .unwrap()
        .pixel_values
    };
    let mut b = CpuBackend::load(&GgufStore::from_file(
        GgufFile::open_model(model(), None).unwrap(),
    ))
    .unwrap();
    let mut conv = Conversation::new(UserText::Upstream);
    conv.set_image(b.encode_image(&read("test2.jpg")).unwrap());
    conv.ask(
        &mut b,
        &tok,
        &info,
        "Describe the image.",
        &greedy(6),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let second = b.encode_image(&read("test4.jpg")).unwrap();
    conv.set_image(second.clone());
    let r = conv
        .ask(
            &mut b,
            &tok,
            &info,
            "Describe the image.",
            &greedy(6),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(
        r.reused_tokens, 0,
        "nothing of the old image's prompt is kept"
    );
    let fresh = generate(
        &mut b,
        &tok,
        &info,
        &r.prompt.ids,
        Some(&second),
        &greedy(6),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(
        ids(&r.result),
        ids(&fresh),
        "the second image's answer is its own"
    );
}

#[test]
fn the_chat_repl_streams_answers_takes_commands_and_saves_the_transcript() {
    let dir = tmp().join("chat-repl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("talk.json");
    let img = fixtures().join("images/test2.jpg");
    let script = format!(
        "/image {}\nDescribe the image.\nAnything else?\n/bogus\n/image /no/such.png\n/save {}\n/reset\nHello?\n/quit\nnever asked\n",
        img.display(),
        saved.display()
    );
    let (stdout, stderr) = chat_repl(&["--max-new-tokens", "4"], &script);
    // Three answers, one line each; the errors are reported and the session goes on.
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stderr.contains("unknown command /bogus") && stderr.contains("such.png"),
        "{stderr}"
    );
    assert!(stderr.contains("Research aid"), "{stderr}");
    let j: Json = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let turns = j["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{j}");
    assert_eq!(turns[1]["question"], "Anything else?");
    assert!(
        j["image"].as_str().unwrap().ends_with("test2.jpg") && j["disclaimer"].as_str().is_some(),
        "{j}"
    );
    // Only the transcript in the folder: the save went through a temporary file.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

/// The GPU backend with step queueing turned off: each greedy token is read before the next step is
/// recorded, as before queueing.
struct Unqueued(GpuBackend);

impl Backend for Unqueued {
    fn encode_image(&mut self, pv: &[f32]) -> Result<Vec<f32>, meddr_runtime::BackendError> {
        self.0.encode_image(pv)
    }
    fn prefill(
        &mut self,
        ids: &[u32],
        f: Option<&[f32]>,
    ) -> Result<Vec<f32>, meddr_runtime::BackendError> {
        self.0.prefill(ids, f)
    }
    fn prefill_from(
        &mut self,
        keep: usize,
        ids: &[u32],
        f: Option<&[f32]>,
    ) -> Result<Vec<f32>, meddr_runtime::BackendError> {
        self.0.prefill_from(keep, ids, f)
    }
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, meddr_runtime::BackendError> {
        self.0.decode(token)
    }
    fn context_length(&self) -> usize {
        self.0.context_length()
    }
    fn decode_sampled(
        &mut self,
        token: u32,
        s: &meddr_runtime::SamplingParams,
        step: usize,
    ) -> Option<Result<u32, meddr_runtime::BackendError>> {
        self.0.decode_sampled(token, s, step)
    }
}

/// The GPU engine on the dev model, the vision tower resident, a 512-position cache.
fn gpu_backend() -> GpuBackend {
    GpuBackend::load(
        &GgufFile::open_model(model(), None).unwrap(),
        &GpuOptions {
            force_f32: false,
            context_length: Some(512),
            vision: VisionLoad::Resident,
            prefill_chunk: None,
        },
    )
    .unwrap()
}

/// Greedy decoding keeps two steps queued on the device ahead of the token being streamed: the same tokens
/// as reading each one before the next step, also when a turn is cut short with steps in flight (they are
/// dropped, so the next turn's kept cache is exact), and a caller feeding a token other than the device's
/// choice gets that token's continuation.
#[test]
fn queued_greedy_steps_change_no_token_and_are_dropped_when_a_turn_stops() {
    let file = GgufFile::open_model(model(), None).unwrap();
    let info = ModelInfo::from_gguf_header(&file.header).unwrap();
    let tok = tokenizer_from_gguf_header(&file.header).unwrap();
    let pv = pixels(&info);
    let greedy_opts = GenerationOptions::default();
    assert_eq!(
        gpu_backend().max_queued_greedy(&greedy_opts.sampling),
        meddr_engine::MAX_QUEUED_STEPS
    );
    let turns = |b: &mut dyn Backend| {
        let mut conv = Conversation::new(UserText::Upstream);
        conv.set_image(b.encode_image(&pv).unwrap());
        let mut n = 0;
        // Cut after 3 of 12 tokens: two steps are in flight then.
        let r1 = conv
            .ask(b, &tok, &info, "Describe the image.", &greedy(12), |_| {
                n += 1;
                if n == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        let r2 = conv
            .ask(b, &tok, &info, "Anything else?", &greedy(12), |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        (ids(&r1.result), ids(&r2.result), r2.reused_tokens)
    };
    let queued = turns(&mut gpu_backend());
    let unqueued = turns(&mut Unqueued(gpu_backend()));
    assert_eq!(queued.0.len(), 3);
    assert_eq!(queued.1.len(), 12);
    assert_eq!(queued, unqueued, "queued vs unqueued: turn 1, turn 2, reused positions");

    // A fed token other than the device's choice: the queue is discarded and that token run.
    let prompt = tok.encode("Hello").unwrap();
    let mut q = gpu_backend();
    let mut u = Unqueued(gpu_backend());
    let lq = q.prefill(&prompt, None).unwrap();
    let lu = u.prefill(&prompt, None).unwrap();
    assert_eq!(lq, lu);
    q.queue_greedy().unwrap();
    q.queue_greedy().unwrap();
    let other = 7;
    let a = q.read_queued(other).unwrap();
    let b = u.decode_sampled(other, &greedy_opts.sampling, 1).unwrap().unwrap();
    assert_eq!(a, b, "the continuation of a token the device did not choose");
    q.queue_greedy().unwrap();
    let a2 = q.read_queued(a).unwrap();
    let b2 = u.decode_sampled(b, &greedy_opts.sampling, 2).unwrap().unwrap();
    assert_eq!(a2, b2, "queueing resumes after the fallback");
}
