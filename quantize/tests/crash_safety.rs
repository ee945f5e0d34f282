//! Crash safety (issue 9): `meddr-quantize` killed with SIGKILL at 20 random points of a run. The target path
//! never holds a partial file, an existing output is never damaged (it stays the old file or becomes the
//! complete new one), the only leftovers are named as temporary files (`.NAME.tmp-PID`), and a rerun succeeds
//! and removes them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// SplitMix64: reproducible kill points.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn quantize(ckpt: &Path, out: &Path, ty: &str) -> Command {
    let mut c = Command::new(quantize_bin());
    c.arg(ckpt)
        .arg("-o")
        .arg(out)
        .args(["--type", ty, "--force", "-q"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

#[test]
fn sigkill_at_20_points_never_leaves_a_partial_or_damaged_output() {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-crash-quantize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ckpt = root.join("ckpt");
    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    // Large enough that a run lasts a while (~70 MB of bf16), small enough for CI.
    let st = Command::new(synth_bin())
        .arg("-o")
        .arg(&ckpt)
        .args([
            "--llm-hidden",
            "1024",
            "--llm-layers",
            "2",
            "--llm-ffn",
            "2816",
            "--llm-heads",
            "8",
        ])
        .args(["--llm-kv-heads", "2", "--shard-mb", "32"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    // What a complete run writes (the bytes do not depend on the output's name), and how long it takes.
    let reference = root.join("reference.gguf");
    let t = Instant::now();
    assert!(quantize(&ckpt, &reference, "q4_k_m")
        .status()
        .unwrap()
        .success());
    let full = t.elapsed();
    // Two files since the mmproj split (llama.cpp's layout): each must be old or complete, never partial.
    let reference_proj = meddr_gguf::mmproj_path_for(&reference);
    let new_bytes = std::fs::read(&reference).unwrap();
    let new_proj = std::fs::read(&reference_proj).unwrap();
    std::fs::remove_file(&reference).unwrap();
    std::fs::remove_file(&reference_proj).unwrap();

    // An existing output to protect.
    let out = out_dir.join("model.gguf");
    let out_proj = meddr_gguf::mmproj_path_for(&out);
    assert!(quantize(&ckpt, &out, "q8_0").status().unwrap().success());
    let old_bytes = std::fs::read(&out).unwrap();
    let old_proj = std::fs::read(&out_proj).unwrap();
    assert_ne!(old_bytes, new_bytes);
    assert_ne!(old_proj, new_proj, "the runs' ids differ");
    let ours = ["model.gguf", "model.mmproj.gguf"];
    let mut torn = 0;

    let mut rng = 0x5EED_u64;
    let (mut kept_old, mut became_new) = (0, 0);
    for i in 0..20 {
        let at = full.mul_f64((next(&mut rng) % 1000) as f64 / 1000.0 * 1.1);
        let mut child = quantize(&ckpt, &out, "q4_k_m").spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL; the run may already have ended
        child.wait().unwrap();
        let now = std::fs::read(&out).unwrap();
        let now_proj = std::fs::read(&out_proj).unwrap();
        assert!(
            now_proj == old_proj || now_proj == new_proj,
            "kill {i} at {at:?}: the mmproj is neither the old file nor the complete new one ({} bytes)",
            now_proj.len()
        );
        if now == old_bytes {
            kept_old += 1;
        } else {
            assert!(now == new_bytes, "kill {i} at {at:?}: the output is neither the old file nor the complete new one ({} bytes)", now.len());
            became_new += 1;
        }
        // Killed between the two renames: a new mmproj beside the old language model. Opening the pair
        // must refuse it (the runs' ids differ), never run one run's vision tower with another's model.
        if (now == old_bytes) != (now_proj == old_proj) {
            torn += 1;
            let e = meddr_gguf::GgufFile::open_model(&out, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("meddr.split.id"), "kill {i}: {e}");
        }
        std::fs::write(&out, &old_bytes).unwrap();
        std::fs::write(&out_proj, &old_proj).unwrap();
        for n in others(&out_dir, &ours) {
            let pid_part = n
                .strip_prefix(".model.gguf.tmp-")
                .or_else(|| n.strip_prefix(".model.mmproj.gguf.tmp-"))
                .unwrap_or_else(|| panic!("kill {i}: unexpected leftover {n}"));
            assert!(
                pid_part.bytes().all(|b| b.is_ascii_digit() || b == b'-'),
                "kill {i}: leftover {n}"
            );
        }
    }
    eprintln!("20 kills over {full:?}: {kept_old} kept the old output, {became_new} left the complete new one, {torn} between the two renames (refused when opened)");
    assert!(
        kept_old > 0,
        "no kill landed during the run (a run took {full:?})"
    );

    // A leftover from a killed run is there now or was made so: make sure there is one.
    let mut child = quantize(&ckpt, &out, "q4_k_m").spawn().unwrap();
    let deadline = Instant::now() + full * 2;
    while others(&out_dir, &ours).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(
        !others(&out_dir, &ours).is_empty(),
        "no temporary file seen"
    );

    // The rerun succeeds, writes the complete files and removes what killed runs left.
    assert!(quantize(&ckpt, &out, "q4_k_m").status().unwrap().success());
    assert!(std::fs::read(&out).unwrap() == new_bytes);
    assert!(std::fs::read(&out_proj).unwrap() == new_proj);
    assert_eq!(
        others(&out_dir, &ours),
        Vec::<String>::new(),
        "leftovers after a rerun"
    );
    let _ = std::fs::remove_dir_all(&root);
}
