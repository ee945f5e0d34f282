//! GPU failures (issue 9), on lavapipe with forced limits: each is a clear error or a working fallback, never
//! a panic, a hang or a silently wrong answer.
//! - limits below what the fast path would use: weights split into more buffers, same greedy tokens; limits
//!   below what a row needs: a `TooLarge` error naming the tensor and the limit;
//! - the device lost mid-generation (`Device::destroy`): the next step fails with `DeviceLost`, within seconds;
//! - an adapter without shader-f16 (`force_f32`): the f32 path, same greedy tokens as upstream.

use std::time::Duration;

mod common;

use common::{dev_gguf, greedy, new_ctx as ctx, text_sample};
use meddr_engine::{
    ContextOptions, EngineError, GpuContext, GpuModel, LoadOptions, MemoryPlan, ModelError,
    PlanDevice, Readback, StepInput,
};
use meddr_gguf::GgufFile;
use meddr_quantize::FileType;

#[test]
fn forced_small_binding_limits_split_the_weights_or_refuse_clearly() {
    let (prompt, want) = text_sample();
    let path = dev_gguf(FileType::F32);
    let file = GgufFile::open_model(&path, None).unwrap();
    let adapter = ctx(ContextOptions::default()).info.limits.clone();
    let limited = |bytes: u64| {
        let mut l = adapter.clone();
        l.max_storage_buffer_binding_size = bytes;
        l.max_buffer_size = bytes;
        ContextOptions {
            limits: Some(l),
            ..Default::default()
        }
    };
    // 256 KiB: the embedding and the LM head (1.5 MB each) no longer fit one binding, so they are split into
    // parts; same tokens. (Text only, in 64-token prefill chunks: the image input alone is 2.4 MB.)
    let c = ctx(limited(256 << 10));
    assert_eq!(c.max_binding_bytes(), 256 << 10);
    let text_only = LoadOptions {
        context_length: Some(256),
        prefill_chunk: 64,
        load_vision: false,
        ..Default::default()
    };
    let mut m = GpuModel::load(c.clone(), &file, &text_only).unwrap();
    assert_eq!(greedy(&mut m, &prompt, want.len()).unwrap(), want);
    // The plan from the header alone knows the split parts' padding too.
    let device = PlanDevice {
        f16: c.info.f16,
        max_binding_bytes: c.max_binding_bytes(),
    };
    assert_eq!(
        MemoryPlan::for_header(&file.header, &text_only, device).unwrap(),
        m.memory_plan()
    );
    // With the vision tower, the 2.4 MB image input cannot exist: refused at load, naming the buffer.
    let e = GpuModel::load(c, &file, &LoadOptions::default())
        .err()
        .expect("2.4 MB image input in 256 KiB");
    assert!(
        e.to_string().contains("v.pixels") && e.to_string().contains("262144"),
        "{e}"
    );
    assert_eq!(greedy(&mut m, &prompt, want.len()).unwrap(), want);
    // 1 KiB: not one row of the embedding fits; a typed error that names what and how much.
    let e = GpuModel::load(ctx(limited(1024)), &file, &LoadOptions::default())
        .err()
        .expect("1 KiB bindings");
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ModelError::Engine(
                EngineError::TooLarge { limit: 1024, .. }
                    | EngineError::BufferTooLarge { limit: 1024, .. }
            )
        ),
        "{msg}"
    );
    assert!(msg.contains("1024"), "{msg}");
    // Above what the adapter has: refused when the device is requested.
    let mut l = adapter.clone();
    l.max_buffer_size = l.max_buffer_size.saturating_mul(2);
    let e = GpuContext::new_blocking(ContextOptions {
        limits: Some(l),
        ..Default::default()
    })
    .err()
    .expect("limits above the adapter's");
    assert!(e.to_string().contains("max_buffer_size"), "{e}");
}

#[test]
fn a_device_lost_mid_generation_is_an_error_not_a_hang() {
    let (prompt, _) = text_sample();
    let path = dev_gguf(FileType::F32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = ctx(ContextOptions::default());
        let file = GgufFile::open_model(&path, None).unwrap();
        let mut m = GpuModel::load(
            c.clone(),
            &file,
            &LoadOptions {
                context_length: Some(256),
                ..Default::default()
            },
        )
        .unwrap();
        let first = greedy(&mut m, &prompt, 3).map(|t| t.len());
        c.device.destroy();
        let after = m
            .decode_step(StepInput::Greedy, Readback::Token)
            .map(|s| s.token);
        let again = m
            .decode_step(StepInput::Greedy, Readback::TokenAndLogits)
            .map(|s| s.token);
        let _ = tx.send((
            first,
            after.map_err(|e| e.to_string()),
            again.map_err(|e| e.to_string()),
        ));
    });
    let (first, after, again) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("generation hung after the device was lost");
    assert_eq!(first.unwrap(), 3);
    for r in [after, again] {
        let e = r.expect_err("a step on a lost device must fail");
        assert!(e.contains("GPU device was lost"), "{e}");
    }
}

#[test]
fn an_adapter_without_shader_f16_takes_the_f32_path_with_the_same_tokens() {
    let (prompt, want) = text_sample();
    let c = ctx(ContextOptions {
        force_f32: true,
        ..Default::default()
    });
    assert!(!c.info.f16);
    for ft in [FileType::F16, FileType::F32] {
        let file = GgufFile::open(dev_gguf(ft)).unwrap();
        let mut m = GpuModel::load(
            c.clone(),
            &file,
            &LoadOptions {
                context_length: Some(256),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            greedy(&mut m, &prompt, want.len()).unwrap(),
            want,
            "{}",
            ft.name()
        );
    }
}
