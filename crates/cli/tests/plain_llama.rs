//! Issue 10.3: a real llama.cpp GGUF that is not ours (SmolLM2-135M-Instruct Q4_1: byte-level BPE vocabulary,
//! pre-tokenizer `smollm`, its own ChatML Jinja template, tied output head) through every entry point a user
//! has: `meddr info`, `meddr run`, `meddr chat` and `meddr serve` (the `openai` client). The question is the
//! one every llama.cpp README asks; the real weights answer it.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::meddr;

fn smollm2() -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run tests/setup.sh",
        p.display()
    );
    p
}

const QUESTION: &str = "What is the capital of France?";

#[test]
fn info_names_the_files_chat_template() {
    let out = meddr(&["info", smollm2().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("plain llama.cpp GGUF")
            && text.contains("chat template (tokenizer.chat_template"),
        "{text}"
    );
}

#[test]
fn run_answers_with_the_files_template() {
    let m = smollm2();
    let out = meddr(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        QUESTION,
        "--max-new-tokens",
        "24",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = j["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{j}");
    // It stops by itself at the template's end of turn (<|im_end|>, the file's EOS), well before the limit.
    assert_eq!(j["stop_reason"], "eos", "{j}");
}

#[test]
fn chat_answers_and_follows_up() {
    let m = smollm2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meddr"))
        .args(["chat", "-m", m.to_str().unwrap(), "--max-new-tokens", "32"])
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{QUESTION}\nAnd what is its population?\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        answers.len() >= 2 && answers[0].contains("Paris"),
        "{stdout}"
    );
}

#[test]
fn the_server_answers_the_openai_client() {
    let m = smollm2();
    let log = common::tmp().join("serve-smollm2.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meddr"))
        .args([
            "serve",
            "-m",
            m.to_str().unwrap(),
            "--port",
            "0",
            "--api-key",
            "k",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let url = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("model ready") {
            break text
                .split("listening on ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap()
                .to_owned();
        }
        if t0.elapsed().as_secs() > 120 || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let py = std::env::var("MEDDR_PYTHON")
        .unwrap_or_else(|_| format!("{}/../../.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = format!(
        "{}/../../tests/py/openai_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(py)
        .args([
            script.as_str(),
            "plain",
            "--base-url",
            &url,
            "--api-key",
            "k",
        ])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
