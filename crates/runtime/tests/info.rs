//! `ModelInfo` from hand-built headers: the MedDr checks and the keys they name.

use meddr_gguf::{Array, GgufHeader, Value};
use meddr_runtime::{ModelInfo, PromptFormat, RuntimeError, StopPolicy};

fn header(meta: Vec<(&str, Value)>) -> GgufHeader {
    GgufHeader {
        version: 3,
        metadata: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        tensors: vec![],
        alignment: 32,
        data_offset: 0,
    }
}

fn meddr_meta() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("dev".into())),
        ("meddr.format_version", Value::U32(1)),
        ("llama.context_length", Value::U32(4096)),
        ("llama.vocab_size", Value::U32(2009)),
        ("clip.has_vision_encoder", Value::Bool(true)),
        ("clip.vision.image_size", Value::U32(448)),
        (
            "clip.vision.image_mean",
            Value::Array(Array::F32(vec![0.485, 0.456, 0.406])),
        ),
        (
            "clip.vision.image_std",
            Value::Array(Array::F32(vec![0.229, 0.224, 0.225])),
        ),
        ("meddr.vision.pad2square", Value::Bool(true)),
        (
            "meddr.vision.pad_color",
            Value::Array(Array::U32(vec![123, 116, 103])),
        ),
        (
            "meddr.vision.resize",
            Value::String("pillow_bicubic_u8".into()),
        ),
        ("meddr.vision.tiles", Value::U32(1)),
        ("meddr.image.num_tokens", Value::U32(256)),
        ("meddr.image.context_token_id", Value::U32(2002)),
        ("meddr.image.start_token_id", Value::U32(2000)),
        ("meddr.image.end_token_id", Value::U32(2001)),
        ("meddr.chat.template", Value::String("Hermes-2".into())),
        (
            "meddr.chat.system_message",
            Value::String("Answer the questions.".into()),
        ),
        ("meddr.chat.eos_token_id", Value::U32(7)),
        (
            "meddr.chat.stop_token_ids",
            Value::Array(Array::U32(vec![2, 6, 7, 8])),
        ),
    ]
}

#[test]
fn reads_meddr_keys() {
    let i = ModelInfo::from_gguf_header(&header(meddr_meta())).unwrap();
    assert_eq!(i.context_length, 4096);
    assert_eq!(i.eos_token_id, 7);
    assert_eq!(i.stop_ids(StopPolicy::UpstreamEos), vec![7]);
    assert_eq!(i.stop_ids(StopPolicy::TemplateStopList), vec![2, 6, 7, 8]);
    assert!(i.stop_ids(StopPolicy::IgnoreEos).is_empty());
    let v = i.vision.unwrap();
    assert_eq!(
        (
            v.num_image_tokens,
            v.context_token_id,
            v.start_token_id,
            v.end_token_id
        ),
        (256, 2002, 2000, 2001)
    );
    assert_eq!(v.preprocessing.pad_color, [123, 116, 103]);
    assert_eq!(v.preprocessing.image_size, 448);
}

#[test]
fn wrong_architecture_is_not_meddr_and_plain_llama_is_raw_text() {
    let mut m = meddr_meta();
    m[0].1 = Value::String("gpt2".into());
    let e = ModelInfo::from_gguf_header(&header(m)).unwrap_err();
    assert!(matches!(e, RuntimeError::NotMedDr { .. }));
    assert!(e.to_string().starts_with("not a MedDr GGUF: "), "{e}");
    assert!(e.to_string().contains("gpt2"), "{e}");

    // A plain llama.cpp file (no meddr.* keys): raw-text completion, text only, EOS (+ EOT) from the tokenizer.
    let plain = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.context_length", Value::U32(2048)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec![
                "<unk>".into(),
                "<s>".into(),
                "</s>".into(),
                "a".into(),
            ])),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eot_token_id", Value::U32(3)),
        ("clip.has_vision_encoder", Value::Bool(true)),
    ];
    let i = ModelInfo::from_gguf_header(&header(plain.clone())).unwrap();
    assert_eq!(i.prompt_format, PromptFormat::Raw);
    assert_eq!(
        (
            i.format_version,
            i.context_length,
            i.vocab_size,
            i.eos_token_id
        ),
        (0, 2048, 4, 2)
    );
    assert_eq!(i.stop_ids(StopPolicy::UpstreamEos), vec![2]);
    assert_eq!(i.stop_ids(StopPolicy::TemplateStopList), vec![2, 3]);
    assert!(i.vision.is_none() && i.system_message.is_empty() && i.chat_template.is_empty());
    // Still checked: a plain file without its EOS is refused, naming the key.
    let e = ModelInfo::from_gguf_header(&header(
        plain
            .into_iter()
            .filter(|(k, _)| *k != "tokenizer.ggml.eos_token_id")
            .collect(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.eos_token_id"), "{e}");

    let e = ModelInfo::from_gguf_header(&header(vec![]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("not a MedDr GGUF: ") && e.contains("general.architecture"),
        "{e}"
    );
}

#[test]
fn missing_and_bad_keys_are_named() {
    for key in [
        "meddr.chat.eos_token_id",
        "llama.context_length",
        "meddr.image.context_token_id",
    ] {
        let m: Vec<_> = meddr_meta()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        let e = ModelInfo::from_gguf_header(&header(m)).unwrap_err();
        assert!(
            matches!(&e, RuntimeError::MissingKey { key: k } if k == key),
            "{e:?}"
        );
    }
    let mut m = meddr_meta();
    for (k, v) in m.iter_mut() {
        if *k == "meddr.vision.pad_color" {
            *v = Value::Array(Array::U32(vec![1, 2, 300]));
        }
    }
    let e = ModelInfo::from_gguf_header(&header(m))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("meddr.vision.pad_color") && e.contains("300"),
        "{e}"
    );
}
