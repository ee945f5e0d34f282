//! Chat templates of real llama.cpp GGUFs (`tokenizer.chat_template`) rendered by `render_chat_template`
//! (minijinja) equal what transformers' Jinja2 setup renders (`tests/py/render_chat_template.py`), for every
//! template in the SmolLM2 file and in llama.cpp's vocabulary files (fetched by tests/setup.sh), over
//! conversations with and without a system message, several turns, and text that templates like to trip on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use meddr_gguf::GgufHeader;
use meddr_runtime::{render_chat_template, ChatMessage};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// Files with a chat template: the SmolLM2 model and llama.cpp's vocabulary files.
fn template_files() -> Vec<PathBuf> {
    let mut files = vec![root().join(".cache/SmolLM2-135M-Instruct.Q4_1.gguf")];
    if let Ok(dir) = std::fs::read_dir(root().join(".cache/llama-vocab")) {
        let mut v: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        v.sort();
        files.extend(v);
    }
    files
}

fn token(h: &GgufHeader, key: &str) -> String {
    let Ok(id) = h.get_u32(key) else {
        return String::new();
    };
    h.get_str_array("tokenizer.ggml.tokens")
        .ok()
        .and_then(|t| t.get(id as usize).map(|s| s.to_string()))
        .unwrap_or_default()
}

fn conversations() -> Vec<Vec<ChatMessage>> {
    let m = ChatMessage::new;
    vec![
        vec![m("user", "What is the capital of France?")],
        vec![
            m("system", "You are a radiologist."),
            m("user", "Describe the film."),
        ],
        vec![
            m("user", "Hi"),
            m("assistant", "Hello! How can I help?"),
            m("user", "  Is there an effusion?\n"),
        ],
        vec![
            m("system", "Be brief."),
            m("user", "a"),
            m("assistant", "b"),
            m("user", "c <b>&'\"{{ x }}"),
        ],
        vec![m("assistant", "I speak first."), m("user", "Fine.")],
        vec![m("user", "Unicode: é 中文 🙂")],
    ]
}

#[test]
fn real_chat_templates_render_as_transformers_renders_them() {
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    let mut names = Vec::new();
    for path in template_files() {
        assert!(
            path.is_file(),
            "{} is missing: run tests/setup.sh",
            path.display()
        );
        let bytes = std::fs::read(&path).unwrap();
        let h = GgufHeader::from_bytes(&bytes).unwrap();
        let Ok(template) = h.get_str("tokenizer.chat_template") else {
            continue;
        };
        let (bos, eos) = (
            token(&h, "tokenizer.ggml.bos_token_id"),
            token(&h, "tokenizer.ggml.eos_token_id"),
        );
        for conv in conversations() {
            let msgs: Vec<Value> = conv
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect();
            cases.push(
                json!({"template": template, "messages": msgs, "bos_token": bos, "eos_token": eos}),
            );
            ours.push(render_chat_template(template, &conv, &bos, &eos));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        names.iter().any(|n| n.starts_with("SmolLM2")),
        "the SmolLM2 template is among the cases"
    );
    let mut child = Command::new(python())
        .arg(root().join("tests/py/render_chat_template.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let reference: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut rendered = 0;
    for ((name, got), want) in names.iter().zip(&ours).zip(&reference) {
        match (got, want.get("text").and_then(Value::as_str)) {
            (Ok((text, _)), Some(w)) => {
                assert_eq!(text, w, "{name}: minijinja and Jinja2 differ");
                rendered += 1;
            }
            (Err(_), None) => {}
            (got, _) => panic!("{name}: ours {got:?}, Jinja2 {want}"),
        }
    }
    println!(
        "{rendered} of {} renders equal to Jinja2's; the others fail in both",
        names.len()
    );
    assert!(rendered >= names.len() / 2, "most conversations render");
}
