//! Crash safety (issue 9) of `meddr gsco index` and `meddr gsco eval`, killed with SIGKILL at 20 random points
//! each. Index: the target path holds the old index or the complete new one, never a part; leftovers are
//! named `.NAME.tmp-PID` and the next run removes them. Eval: the results file only ever holds complete
//! records equal to an uninterrupted run's, plus at most one torn last line, and a rerun resumes to the same
//! records. (The quantizer's test is `quantize/tests/crash_safety.rs`.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{model, pcam, pcam_index, strs, tmp};

fn meddr_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meddr"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Kill points: `n` reproducible fractions in [0, 1.1) (SplitMix64).
fn kill_fractions(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % 1000) as f64 / 1000.0 * 1.1
        })
        .collect()
}

fn run_and_kill(args: &[&str], after: std::time::Duration) {
    let mut child = meddr_cmd(args).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL; the run may already have ended
    child.wait().unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn gsco_index_killed_at_20_points_keeps_the_old_index_or_the_complete_new_one() {
    let dir = tmp().join("crash-index");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (spec, npz) = (pcam(), pcam().join("data.npz"));
    let out = dir.join("pcam.gscoidx");
    let args = |split: &'static str, dtype: &'static str| -> Vec<String> {
        [
            "gsco",
            "index",
            "--specialist",
            spec.to_str().unwrap(),
            "--medmnist",
            npz.to_str().unwrap(),
            "--split",
            split,
            "--dtype",
            dtype,
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--force",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (new_args, old_args) = (args("test", "f32"), args("test", "f16"));
    let t = Instant::now();
    assert!(meddr_cmd(&strs(&new_args)).status().unwrap().success());
    let full = t.elapsed();
    let new_bytes = std::fs::read(&out).unwrap();
    assert!(meddr_cmd(&strs(&old_args)).status().unwrap().success());
    let old_bytes = std::fs::read(&out).unwrap();
    assert_ne!(old_bytes, new_bytes);
    let (mut kept, mut replaced) = (0, 0);
    for (i, f) in kill_fractions(31, 20).into_iter().enumerate() {
        run_and_kill(&strs(&new_args), full.mul_f64(f));
        let now = std::fs::read(&out).unwrap();
        if now == old_bytes {
            kept += 1;
        } else {
            assert!(
                now == new_bytes,
                "kill {i}: the index is neither the old one nor the complete new one"
            );
            replaced += 1;
            std::fs::write(&out, &old_bytes).unwrap();
        }
        for n in entries(&dir) {
            assert!(
                n == "pcam.gscoidx" || n.starts_with(".pcam.gscoidx.tmp-"),
                "kill {i}: unexpected leftover {n}"
            );
        }
    }
    eprintln!("index: 20 kills over {full:?}: {kept} kept the old index, {replaced} left the complete new one");
    assert!(kept > 0, "no kill landed during a run");
    assert!(meddr_cmd(&strs(&new_args)).status().unwrap().success());
    assert!(std::fs::read(&out).unwrap() == new_bytes);
    assert_eq!(
        entries(&dir),
        vec!["pcam.gscoidx".to_string()],
        "a rerun removes what killed runs left"
    );
}

#[test]
fn gsco_eval_killed_at_20_points_keeps_complete_records_and_resumes() {
    let dir = tmp().join("crash-eval");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (spec, npz) = (pcam(), pcam().join("data.npz"));
    let index = dir.join("pcam-test.gscoidx");
    assert_eq!(pcam_index("test", &index)["cases"], 8);
    let eval = |out: &Path| -> Vec<String> {
        [
            "gsco",
            "eval",
            "-m",
            model().to_str().unwrap(),
            "--specialist",
            spec.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
            "--template",
            "pcam200",
            "--medmnist",
            npz.to_str().unwrap(),
            "--split",
            "test",
            "--out",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "1",
            "--limit",
            "2",
            "--top-n",
            "3",
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = dir.join("reference.jsonl");
    let t = Instant::now();
    assert!(meddr_cmd(&strs(&eval(&reference)))
        .status()
        .unwrap()
        .success());
    let full = t.elapsed();
    let want: Vec<String> = std::fs::read_to_string(&reference)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(want.len(), 3, "settings line + 2 records");

    let out = dir.join("results.jsonl");
    let mut torn = 0;
    for (i, f) in kill_fractions(47, 20).into_iter().enumerate() {
        let _ = std::fs::remove_file(&out);
        run_and_kill(&strs(&eval(&out)), full.mul_f64(f));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (k, l) in lines.iter().enumerate() {
            match l.strip_suffix('\n') {
                Some(complete) => assert_eq!(
                    complete, want[k],
                    "kill {i}: line {k} differs from an uninterrupted run's"
                ),
                None => {
                    assert_eq!(
                        k,
                        lines.len() - 1,
                        "kill {i}: only the last line can be torn"
                    );
                    assert!(
                        want[k].starts_with(l),
                        "kill {i}: torn line {k} is not a prefix of the record"
                    );
                    torn += 1;
                }
            }
        }
        if i % 5 == 4 {
            // Resuming from wherever the kill left the file gives the uninterrupted run's records.
            assert!(
                meddr_cmd(&strs(&eval(&out))).status().unwrap().success(),
                "kill {i}: resume failed"
            );
            let got: Vec<String> = std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            assert_eq!(got, want, "kill {i}: resumed records");
        }
    }
    eprintln!("eval: 20 kills over {full:?}, {torn} left a torn last line");
}
