//! Evaluation at cluster scale (issue 11.4): `meddr gsco eval --shard K/N` and `meddr gsco merge`, on the
//! GSCo PCam fixture and the dev MedDr (CPU device: its records are reproducible bit for bit). The run
//! under test is the first 25 images of the fixture's train split: 4 batches of 8, the last one of a single
//! image, so 3 shards deal round robin with a wrap (shard 1 gets batches 0 and 3) and 4 shards get one batch
//! each. Merged shard files must equal the single-machine run's file byte for byte, and the merged summary
//! its summary.
//!
//! `slurm_array_job…` runs `tests/slurm/run.sh`: a real one-node Slurm cluster started by the script
//! (Debian's slurm-wlm + munge, apt-installed when missing), a 4-task array job, merge, compare. Where it
//! cannot run (not root, no apt) it is skipped, except in CI (`CI=true`), where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::{fails_with, model, ok_json, pcam, pcam_index, strs, tmp};
use serde_json::Value as Json;

/// Images of the run under test.
const LIMIT: usize = 25;

/// A small reference index (the fixture's 8 test images; `--top-n 3`), built once.
fn index() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = tmp().join("shard-test.gscoidx");
        let j = pcam_index("test", &out);
        assert_eq!(j["cases"], 8);
        out
    })
}

/// `gsco eval` arguments of a run, without `--out` and `--shard`.
fn eval_args(limit: usize, max_new_tokens: usize) -> Vec<String> {
    let (spec, npz) = (pcam(), pcam().join("data.npz"));
    [
        "gsco",
        "eval",
        "-m",
        model().to_str().unwrap(),
        "--specialist",
        spec.to_str().unwrap(),
        "--index",
        index().to_str().unwrap(),
        "--template",
        "pcam200",
        "--top-n",
        "3",
        "--medmnist",
        npz.to_str().unwrap(),
        "--split",
        "train",
        "--limit",
        &limit.to_string(),
        "--max-new-tokens",
        &max_new_tokens.to_string(),
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The single-machine run: its results file and its `--json` summary.
fn reference() -> &'static (PathBuf, Json) {
    static R: OnceLock<(PathBuf, Json)> = OnceLock::new();
    R.get_or_init(|| {
        let out = tmp().join("single-machine.jsonl");
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let a = with(
            eval_args(LIMIT, 2),
            &["--out", out.to_str().unwrap(), "--json"],
        );
        let j = ok_json(&strs(&a));
        eprintln!(
            "single-machine run of {LIMIT} images: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(j["images"], LIMIT);
        (out, j)
    })
}

/// Runs shards 1…n of the run under test at once (one process each); returns their files in order.
fn run_shards(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    let jobs: Vec<(PathBuf, std::process::Child)> = (1..=n)
        .map(|k| {
            let out = dir.join(format!("shard-{k}.jsonl"));
            let _ = std::fs::remove_file(&out);
            let a = with(
                eval_args(LIMIT, 2),
                &[
                    "--shard",
                    &format!("{k}/{n}"),
                    "--out",
                    out.to_str().unwrap(),
                    "--json",
                ],
            );
            let child = Command::new(env!("CARGO_BIN_EXE_meddr"))
                .args(&a)
                .env_remove("XDG_RUNTIME_DIR")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (out, child)
        })
        .collect();
    let files = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (out, child))| {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "shard {}/{n} failed: {}",
                i + 1,
                String::from_utf8_lossy(&o.stderr)
            );
            let j: Json = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(j["shard"], format!("{}/{n}", i + 1));
            out
        })
        .collect();
    eprintln!(
        "{n} shards of {LIMIT} images at once: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    files
}

/// The three shard files of the run under test, made once.
fn three_shards() -> &'static [PathBuf] {
    static S: OnceLock<Vec<PathBuf>> = OnceLock::new();
    S.get_or_init(|| run_shards(&tmp().join("three-shards"), 3))
}

fn lines(p: &Path) -> Vec<Json> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The summary without the results file's path (the one field that names where it was written).
fn metrics(mut j: Json) -> Json {
    j.as_object_mut().unwrap().remove("results");
    j
}

fn merge(shards: &[&Path], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["gsco".into(), "merge".into()];
    a.extend(shards.iter().map(|p| p.display().to_string()));
    a.extend(["-o".into(), out.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Nothing of a refused merge is left: no output, no temporary file.
fn assert_nothing_written(dir: &Path, out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    let tmp: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

#[test]
fn three_shards_merge_into_the_single_machine_file() {
    let shards = three_shards();
    let (reference, single) = reference();
    // Each shard file: the run's settings plus its shard record, and exactly its own images (whole batches
    // of 8, batch b to shard (b mod 3) + 1).
    let want: [Vec<u64>; 3] = [
        (0..8).chain(24..25).collect(),
        (8..16).collect(),
        (16..24).collect(),
    ];
    let single_settings = &lines(reference)[0]["settings"];
    for (k, (p, want)) in shards.iter().zip(&want).enumerate() {
        let l = lines(p);
        let mut s = l[0]["settings"].clone();
        let shard = s.as_object_mut().unwrap().remove("shard").unwrap();
        assert_eq!(
            shard,
            serde_json::json!({"k": k + 1, "n": 3, "images": LIMIT, "batch": 8, "task": "multi-class"})
        );
        assert_eq!(
            &s,
            single_settings,
            "shard {}: settings besides the shard",
            k + 1
        );
        let ids: Vec<u64> = l[1..]
            .iter()
            .map(|r| r["question_id"].as_u64().unwrap())
            .collect();
        assert_eq!(&ids, want, "shard {}/3's images", k + 1);
    }
    // Merged in any order: the single-machine file byte for byte, and its summary.
    let dir = tmp().join("merge-ok");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("merged.jsonl");
    let _ = std::fs::remove_file(&out);
    let t = Instant::now();
    let a = merge(&[&shards[2], &shards[0], &shards[1]], &out, &["--json"]);
    let merged = ok_json(&strs(&a));
    eprintln!("merge: {:.2} s", t.elapsed().as_secs_f64());
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(reference).unwrap(),
        "merged file differs from the single-machine run's"
    );
    assert_eq!(merged["results"], out.display().to_string());
    assert_eq!(metrics(merged), metrics(single.clone()));
    // It is the single-machine run's file: `gsco eval` without --shard takes it as finished.
    let before = std::fs::read(&out).unwrap();
    let a = with(
        eval_args(LIMIT, 2),
        &["--out", out.to_str().unwrap(), "--json"],
    );
    let again = ok_json(&strs(&a));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(metrics(again), metrics(single.clone()));
}

#[test]
fn bad_shard_specs_are_refused_naming_the_value_before_anything_is_written() {
    let dir = tmp().join("bad-spec");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("never.jsonl");
    for (spec, says) in [
        ("5/4", "there is no shard 5 of 4"),
        ("0/4", "numbered 1 to 4"),
        ("0/0", "at least 1"),
        ("a/b", "\"a\" is not a whole number"),
        ("3", "K/N"),
    ] {
        let a = with(
            eval_args(LIMIT, 2),
            &["--shard", spec, "--out", out.to_str().unwrap()],
        );
        fails_with(&strs(&a), &[&format!("'{spec}'"), "--shard", says]);
        assert!(
            !out.exists(),
            "--shard {spec}: {} was written",
            out.display()
        );
    }
    // A shard run never takes over another file: here the single-machine run's (same settings, no shard).
    let (reference, _) = reference();
    let victim = dir.join("single-copy.jsonl");
    std::fs::copy(reference, &victim).unwrap();
    let a = with(
        eval_args(LIMIT, 2),
        &["--shard", "1/3", "--out", victim.to_str().unwrap()],
    );
    fails_with(
        &strs(&a),
        &[
            "single-copy.jsonl",
            "other settings",
            "shard: file has null",
        ],
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        std::fs::read(reference).unwrap()
    );
}

#[test]
fn merge_refuses_other_runs_missing_and_unfinished_shards_writing_nothing() {
    let s = three_shards();
    let (reference, _) = reference();
    let dir = tmp().join("merge-bad");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("merged.jsonl");
    // A shard of another run: other --max-new-tokens and --limit (a shard with no image: nothing to run).
    let other = dir.join("other-run.jsonl");
    let a = with(
        eval_args(16, 3),
        &["--shard", "3/3", "--out", other.to_str().unwrap(), "--json"],
    );
    assert_eq!(ok_json(&strs(&a))["images"], 0);
    fails_with(
        &strs(&merge(&[&s[0], &s[1], &other], &out, &[])),
        &[
            "other-run.jsonl",
            "another run",
            "max_new_tokens: 3 here, 2 in",
            "shard-1.jsonl",
        ],
    );
    assert_nothing_written(&dir, &out);
    // A missing shard, a shard given twice.
    fails_with(
        &strs(&merge(&[&s[0], &s[2]], &out, &[])),
        &["shard 2/3 missing"],
    );
    assert_nothing_written(&dir, &out);
    fails_with(
        &strs(&merge(&[&s[0], &s[1], &s[1], &s[2]], &out, &[])),
        &["shard-2.jsonl", "given twice"],
    );
    assert_nothing_written(&dir, &out);
    // An unfinished shard (killed in its last record).
    let torn = dir.join("shard-1-torn.jsonl");
    let bytes = std::fs::read(&s[0]).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() - 10]).unwrap();
    fails_with(
        &strs(&merge(&[&torn, &s[1], &s[2]], &out, &[])),
        &[
            "shard-1-torn.jsonl",
            "shard 1/3 is unfinished",
            "image 24",
            "--shard 1/3",
        ],
    );
    assert_nothing_written(&dir, &out);
    // An unsharded results file.
    fails_with(
        &strs(&merge(&[reference, &s[1], &s[2]], &out, &[])),
        &["single-machine.jsonl", "without --shard"],
    );
    assert_nothing_written(&dir, &out);
    // The output is one of the inputs.
    fails_with(
        &strs(&merge(&[&s[0], &s[1], &s[2]], &s[1], &[])),
        &["shard-2.jsonl", "elsewhere"],
    );
    // An existing output is kept unless --force.
    std::fs::write(&out, b"keep me\n").unwrap();
    fails_with(
        &strs(&merge(&[&s[0], &s[1], &s[2]], &out, &[])),
        &["merged.jsonl", "--force"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me\n");
    ok_json(&strs(&merge(
        &[&s[0], &s[1], &s[2]],
        &out,
        &["--force", "--json"],
    )));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(reference).unwrap());
}

#[test]
fn slurm_array_job_of_4_merges_into_the_single_machine_file() {
    let (reference, _) = reference();
    let work = tmp().join("slurm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slurm/run.sh");
    let eval = eval_args(LIMIT, 2);
    let t = Instant::now();
    let o = Command::new("bash")
        .arg(&script)
        .arg(reference)
        .arg(&work)
        .arg(env!("CARGO_BIN_EXE_meddr"))
        .args(&eval[2..]) // without "gsco eval"
        .env("MEDDR_SLURM_SHARDS", "4")
        .output()
        .expect("run tests/slurm/run.sh");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "{stdout}{stderr}tests/slurm/run.sh: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if o.status.code() == Some(77) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Slurm test cannot run in CI: {stdout}"
        );
        eprintln!("skipped: {stdout}");
        return;
    }
    assert!(o.status.success(), "tests/slurm/run.sh failed");
    assert!(stdout.contains("PASS: 4 array tasks"), "{stdout}");
    assert!(std::fs::read(work.join("merged.jsonl")).unwrap() == std::fs::read(reference).unwrap());
}
