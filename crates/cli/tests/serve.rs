//! `meddr serve` (issue 10.2) checked from outside by `tests/py/openai_server.py`: the real `openai` Python
//! client against `meddr run`'s answers, raw HTTP for the edge cases, 100 concurrent requests, a client that
//! vanishes mid-stream, and a queued stream's keep-alives. Each test has its own server on a free port, on
//! the dev model and the CPU reference; each ends by checking that the server is alive and never panicked.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, meddr, model, tmp};
use serde_json::{json, Value as Json};

const KEY: &str = "test-key";
const QUEUE: &str = "4";
const QUESTION: &str = "What is in the image?";
const MAX_TOKENS: usize = 8;

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        Server::start_with(name, &["--device", "cpu"])
    }

    fn start_with(name: &str, device: &[&str]) -> Server {
        let log = tmp().join(format!("serve-{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_meddr"))
            .args(["serve", "-m"])
            .arg(model())
            .args(device)
            .args([
                "--port",
                "0",
                "--api-key",
                KEY,
                "--max-body-mb",
                "1",
                "--queue",
                QUEUE,
            ])
            .args(["--keep-alive-secs", "0.2"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meddr serve");
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("model ready") {
                let addr = text
                    .split("listening on ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .expect("address line");
                return Server {
                    child,
                    url: addr.to_owned(),
                    log,
                };
            }
            if t0.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one section of the Python checks against this server.
    fn check(&mut self, section: &str, extra: &[&str]) {
        let py = std::env::var("MEDDR_PYTHON").unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.venv/bin/python")
                .display()
                .to_string()
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/openai_server.py");
        let out = Command::new(py)
            .arg(script)
            .arg(section)
            .args([
                "--base-url",
                &self.url,
                "--api-key",
                KEY,
                "--queue",
                QUEUE,
                "--log",
            ])
            .arg(&self.log)
            .args(extra)
            .output()
            .expect("run python");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            out.status.success(),
            "{section} failed:\n{}\n{}\nserver log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited:\n{log}"
        );
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_json(args: &[&str]) -> Json {
    let m = model().display().to_string();
    let n = MAX_TOKENS.to_string();
    let mut all = vec![
        "run",
        "-m",
        &m,
        "--device",
        "cpu",
        "-p",
        QUESTION,
        "--max-new-tokens",
        &n,
        "--json",
    ];
    all.extend_from_slice(args);
    let out = meddr(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `meddr run` answers: the server must give the same.
fn expectations() -> PathBuf {
    let image = fixtures().join("images/test2.jpg").display().to_string();
    let info = {
        let file = meddr_gguf::GgufFile::open_model(model(), None).unwrap();
        meddr_runtime::ModelInfo::from_gguf_header(&file.header).unwrap()
    };
    let exp = json!({
        "question": QUESTION,
        "max_tokens": MAX_TOKENS,
        "text": run_json(&[]),
        "image": run_json(&["--image", &image]),
        "logprobs": run_json(&["--logprobs", "3"]),
        "stop_ids": [info.eos_token_id],
    });
    let p = tmp().join("serve-expect.json");
    std::fs::write(&p, exp.to_string()).unwrap();
    p
}

#[test]
fn the_openai_client_gets_meddr_runs_answers() {
    let expect = expectations();
    let mut s = Server::start("client");
    let image = fixtures().join("images/test2.jpg");
    s.check(
        "client",
        &[
            "--expect",
            expect.to_str().unwrap(),
            "--model",
            model().to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
        ],
    );
}

#[test]
fn bad_requests_get_one_clear_openai_error_each() {
    let mut s = Server::start("raw");
    let image = fixtures().join("images/test2.jpg");
    s.check("raw", &["--image", image.to_str().unwrap()]);
}

#[test]
fn a_hundred_concurrent_requests_are_answered_or_refused_never_lost_or_mixed_up() {
    let mut s = Server::start("load");
    s.check("load", &[]);
}

#[test]
fn a_client_that_vanishes_mid_stream_stops_its_generation() {
    let mut s = Server::start("disconnect");
    s.check("disconnect", &[]);
}

/// On the GPU engine (lavapipe here), 32-token chunks: a client that hangs up during a prompt of over 2,000
/// tokens stops it between chunks; the log says after how many.
#[test]
fn a_client_that_hangs_up_during_the_prompt_stops_the_prefill() {
    let mut s = Server::start_with(
        "prefill-disconnect",
        &["--device", "gpu", "--ubatch-size", "32"],
    );
    s.check("prefill_disconnect", &[]);
}

#[test]
fn a_queued_stream_gets_keep_alives_then_its_answer() {
    let mut s = Server::start("queue");
    s.check("queue", &[]);
}

/// Slowloris-style clients: `--header-timeout-secs 1` closes a connection trickling its headers and an idle
/// one, and does not cut a stream whose headers came at once.
#[test]
fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let mut s = Server::start_with("slow", &["--device", "cpu", "--header-timeout-secs", "1"]);
    s.check("slow", &[]);
}

#[test]
fn the_server_refuses_bad_flags_and_a_bad_model_before_listening() {
    let m = model().display().to_string();
    for (args, says) in [
        (vec!["serve", "-m", &m, "--queue", "0"], "--queue 0"),
        (
            vec!["serve", "-m", &m, "--max-body-mb", "0"],
            "--max-body-mb 0",
        ),
        (
            vec!["serve", "-m", &m, "--cors-origin", "not an origin"],
            "--cors-origin",
        ),
        (
            vec!["serve", "-m", &m, "--header-timeout-secs", "0"],
            "--header-timeout-secs 0 is outside",
        ),
        (
            vec!["serve", "-m", &m, "--ubatch-size", "0"],
            "--ubatch-size 0 is outside 1..=4096",
        ),
        (
            vec!["serve", "-m", &m, "--ubatch-size", "4097"],
            "--ubatch-size 4097 is outside 1..=4096",
        ),
        (
            vec!["serve", "-m", "/nonexistent.gguf"],
            "/nonexistent.gguf",
        ),
    ] {
        let out = meddr(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    // A port already taken is a clear error, not a panic.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meddr"))
        .args(["serve", "-m", &m, "--device", "cpu", "--port", &port])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success() && err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// `--context-length` shortens the GPU engine's KV cache: the server plans with the loaded backend's length
/// (model card, default `max_tokens`), not the file's, so a request without `max_tokens` fills it exactly.
#[test]
fn the_server_plans_with_the_loaded_backends_context() {
    let mut s = Server::start_with("context", &["--device", "gpu", "--context-length", "64"]);
    s.check("context", &[]);
}
