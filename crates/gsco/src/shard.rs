//! Evaluation at cluster scale: `meddr gsco eval --shard K/N` evaluates one of N deterministic parts of a
//! test set into its own results file, and [`merge`] joins the N shard files into the file one unsharded
//! run writes, byte for byte.
//!
//! **Who owns which image.** A shard owns whole evaluation batches: batch `b` (images `b·B … b·B+B−1`,
//! `B` the eval batch, 8) belongs to shard `(b mod N) + 1`. Whole batches, because the specialists run on
//! an aligned batch at once and a batch's contents change the rounding of their batched kernels: a shard
//! that owns whole batches writes exactly the records an unsharded run writes (on the same device), and no
//! shard runs the specialists on another shard's images. Round robin, so that every shard gets a share of
//! a `--limit`ed or sorted set. Shards are numbered 1…N, as Slurm numbers the tasks of `--array=1-N`.
//!
//! **The shard file.** A shard's results file is an ordinary `gsco eval` results file (resumable the same
//! way) whose settings record holds one more key, `"shard"`: `{"k", "n", "images", "batch", "task"}` —
//! the shard, the number of images the run covers (`--limit`), the batch size that dealt them, and the
//! task (multi-class or multi-label) the metrics are computed for. Everything else in the settings is the
//! run's identity: [`merge`] refuses files whose identities differ, naming the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use meddr_specialist::Task;
use serde_json::{json, Map, Value};

use crate::error::{data_err, GscoError, Result};

/// The key of the shard record in a shard file's settings.
pub const SHARD_KEY: &str = "shard";

/// Shard `k` of `n` (1 ≤ k ≤ n). Parsed from `K/N`; shown as `K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N` with whole numbers `1 ≤ K ≤ N`. Messages do not repeat the value (the caller names it).
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| "not of the form K/N (shard K of N, e.g. 2/4)".to_string())?;
        let num = |x: &str, what: &str| {
            x.parse::<usize>()
                .map_err(|_| format!("{what} {x:?} is not a whole number (K/N, e.g. 2/4)"))
        };
        let (k, n) = (num(k, "K")?, num(n, "N")?);
        Shard::new(k, n)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Shard {
    /// Shard `k` of `n`; refuses `n = 0` and `k` outside `1..=n`.
    pub fn new(k: usize, n: usize) -> std::result::Result<Shard, String> {
        if n == 0 {
            return Err("N, the number of shards, must be at least 1".into());
        }
        if k == 0 || k > n {
            return Err(format!(
                "there is no shard {k} of {n}: shards are numbered 1 to {n} (Slurm: --array=1-{n}; \
                 a 0-based array passes $((SLURM_ARRAY_TASK_ID + 1)))"
            ));
        }
        Ok(Shard { k, n })
    }

    /// Whether image `image` is this shard's when images are dealt in batches of `batch`.
    pub fn owns(self, image: usize, batch: usize) -> bool {
        (image / batch.max(1)) % self.n == self.k - 1
    }

    /// This shard's images among `0..images`, in order.
    pub fn images(self, images: usize, batch: usize) -> impl Iterator<Item = usize> {
        (0..images).filter(move |&i| self.owns(i, batch))
    }

    /// The settings record of this shard's results file: the run's settings `base` plus the shard record.
    pub fn settings(self, base: &Value, images: usize, batch: usize, task: Task) -> Value {
        let mut s = base.as_object().cloned().unwrap_or_default();
        s.insert(
            SHARD_KEY.into(),
            json!({"k": self.k, "n": self.n, "images": images, "batch": batch, "task": task.as_str()}),
        );
        Value::Object(s)
    }
}

/// The first field (in key order) whose value differs between two settings objects, with its value in
/// `a` and in `b` (`null` where absent).
pub fn first_difference(a: &Value, b: &Value) -> Option<(String, Value, Value)> {
    let empty = Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().find_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        (x != y).then(|| {
            (
                k.clone(),
                x.cloned().unwrap_or(Value::Null),
                y.cloned().unwrap_or(Value::Null),
            )
        })
    })
}

/// One shard file, read and checked on its own.
struct ShardFile {
    path: PathBuf,
    /// The settings without the shard record: the run's identity.
    base: Map<String, Value>,
    shard: Shard,
    images: usize,
    batch: usize,
    task: Task,
    /// `question_id` → the record's line as written (without its newline) and parsed.
    records: BTreeMap<usize, (String, Value)>,
}

fn read_shard(path: &Path) -> Result<ShardFile> {
    let bytes = std::fs::read(path).map_err(|cause| GscoError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let not_results = || {
        data_err(
            path,
            "is not a GSCo results file (its first line is not `gsco eval`'s settings record)",
        )
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| not_results())?;
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    let header: Value = serde_json::from_str(first.strip_suffix('\n').unwrap_or(first))
        .map_err(|_| not_results())?;
    let mut base = header
        .get("settings")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(not_results)?;
    let info = base.remove(SHARD_KEY).ok_or_else(|| {
        data_err(
            path,
            "was written without --shard (an unsharded results file needs no merge); give the files of \
             `gsco eval --shard K/N`, K = 1…N",
        )
    })?;
    let bad = |what: &str| {
        data_err(
            path,
            format!("has an invalid shard record ({what}): {info}"),
        )
    };
    let num = |k: &str| {
        info.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(&format!("no whole number {k}")))
    };
    let shard = Shard::new(num("k")?, num("n")?).map_err(|e| bad(&e))?;
    let (images, batch) = (num("images")?, num("batch")?);
    if batch == 0 {
        return Err(bad("batch 0"));
    }
    let task = info
        .get("task")
        .and_then(Value::as_str)
        .and_then(Task::parse)
        .ok_or_else(|| bad("no task"))?;
    let mut records = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let lineno = n + 2;
        // A torn last line (a run killed mid-write): its image counts as missing below.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let v: Value = serde_json::from_str(line)
            .map_err(|e| data_err(path, format!("line {lineno} is not JSON: {e}")))?;
        let id = v
            .get("question_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| data_err(path, format!("line {lineno} has no question_id")))?
            as usize;
        if id >= images || !shard.owns(id, batch) {
            return Err(data_err(
                path,
                format!(
                    "line {lineno}: image {id} is not one of shard {shard}'s images (batches of {batch} \
                     dealt round robin over {} shards, images below {images})",
                    shard.n
                ),
            ));
        }
        // A record written twice counts once, as when `gsco eval` resumes the file.
        records.entry(id).or_insert_with(|| (line.to_string(), v));
    }
    Ok(ShardFile {
        path: path.to_path_buf(),
        base,
        shard,
        images,
        batch,
        task,
        records,
    })
}

/// The N shard files of one run joined: what an unsharded run over the same images writes.
pub struct Merged {
    /// The merged file: the unsharded run's settings line, then every record in image order, each line
    /// exactly as its shard wrote it.
    pub bytes: Vec<u8>,
    /// The run's settings (without the shard record).
    pub settings: Value,
    /// The records in image order.
    pub records: Vec<Value>,
    pub task: Task,
    /// The label names the metrics are computed over (the index's, which equal the specialists').
    pub label_names: Vec<String>,
    /// `--top-n` of the run.
    pub top_n: usize,
    /// N.
    pub shards: usize,
}

/// Reads and checks the shard files of one run (any order): one settings identity, one N, each shard
/// 1…N exactly once, each shard complete. Every error names the file and the value at fault.
pub fn merge(paths: &[PathBuf]) -> Result<Merged> {
    if paths.is_empty() {
        return Err(GscoError::Invalid("no shard files given".into()));
    }
    let files = paths
        .iter()
        .map(|p| read_shard(p))
        .collect::<Result<Vec<_>>>()?;
    let first = &files[0];
    let first_base = Value::Object(first.base.clone());
    for f in &files[1..] {
        let fp = first.path.display();
        if let Some((key, here, there)) =
            first_difference(&Value::Object(f.base.clone()), &first_base)
        {
            return Err(data_err(
                &f.path,
                format!(
                    "is from another run than {fp} ({key}: {here} here, {there} in {fp}); merge the \
                     shards of one `gsco eval` command"
                ),
            ));
        }
        let differs = |what: &str, here: String, there: String| {
            data_err(
                &f.path,
                format!("is from another run than {fp} ({what}: {here} here, {there} in {fp})"),
            )
        };
        if f.shard.n != first.shard.n {
            return Err(differs(
                "number of shards",
                f.shard.to_string(),
                first.shard.to_string(),
            ));
        }
        if f.images != first.images {
            return Err(differs(
                "images (--limit)",
                f.images.to_string(),
                first.images.to_string(),
            ));
        }
        if f.batch != first.batch {
            return Err(differs(
                "batch",
                f.batch.to_string(),
                first.batch.to_string(),
            ));
        }
        if f.task != first.task {
            return Err(differs(
                "task",
                f.task.as_str().into(),
                first.task.as_str().into(),
            ));
        }
    }
    let n = first.shard.n;
    let mut by_k: BTreeMap<usize, &Path> = BTreeMap::new();
    for f in &files {
        if let Some(other) = by_k.insert(f.shard.k, &f.path) {
            return Err(data_err(
                &f.path,
                if other == f.path {
                    format!("is given twice (shard {})", f.shard)
                } else {
                    format!(
                        "is shard {}, and so is {}: give each shard's file once",
                        f.shard,
                        other.display()
                    )
                },
            ));
        }
    }
    let missing: Vec<String> = (1..=n)
        .filter(|k| !by_k.contains_key(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(GscoError::Invalid(format!(
            "shard{} {} missing: {} of the {n} shard files given ({}); give all {n}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            files.len(),
            files
                .iter()
                .map(|f| format!("{} is {}", f.path.display(), f.shard))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for f in &files {
        let want: Vec<usize> = f.shard.images(f.images, f.batch).collect();
        let absent: Vec<usize> = want
            .iter()
            .copied()
            .filter(|i| !f.records.contains_key(i))
            .collect();
        if !absent.is_empty() {
            let shown: Vec<String> = absent.iter().take(8).map(usize::to_string).collect();
            return Err(data_err(
                &f.path,
                format!(
                    "shard {} is unfinished: {} of its {} images have no record (image{} {}{}); rerun its \
                     `gsco eval --shard {}` command (it resumes), then merge again",
                    f.shard,
                    absent.len(),
                    want.len(),
                    if absent.len() == 1 { "" } else { "s" },
                    shown.join(", "),
                    if absent.len() > shown.len() { ", …" } else { "" },
                    f.shard
                ),
            ));
        }
    }
    let label_names: Vec<String> = first_base
        .get("index_labels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .ok_or_else(|| data_err(&first.path, "settings have no index_labels"))?;
    let top_n = first_base
        .get("top_n")
        .and_then(Value::as_u64)
        .ok_or_else(|| data_err(&first.path, "settings have no top_n"))? as usize;
    // The header exactly as `gsco eval` writes it for an unsharded run (`ResultsFile::open`).
    let mut bytes = format!("{}\n", json!({ "settings": first_base })).into_bytes();
    let mut all: Vec<(usize, &(String, Value))> = files
        .iter()
        .flat_map(|f| f.records.iter().map(|(&i, r)| (i, r)))
        .collect();
    all.sort_by_key(|(i, _)| *i);
    let mut records = Vec::with_capacity(all.len());
    for (_, (line, v)) in all {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        records.push(v.clone());
    }
    Ok(Merged {
        bytes,
        settings: first_base,
        records,
        task: first.task,
        label_names,
        top_n,
        shards: n,
    })
}

/// Writes `bytes` to `path` whole or not at all: into `.<name>.tmp-<pid>` beside it, synced, then renamed
/// over it. An existing `path` is replaced only with `overwrite`.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| data_err(path, "has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(data_err(
            path,
            format!("folder {} does not exist", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(data_err(path, "is a folder; give the output file's path"));
    }
    if !overwrite && path.exists() {
        return Err(data_err(path, "exists (use --force to replace it)"));
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Best effort: make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|cause| {
        let _ = std::fs::remove_file(&tmp);
        GscoError::Io {
            path: path.to_path_buf(),
            cause,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { k: 2, n: 4 }));
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for bad in [
            "5/4", "0/4", "0/0", "a/b", "2", "2/", "/4", "-1/4", " 1/4", "1/4/2",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad} accepted");
        }
        assert!("5/4".parse::<Shard>().unwrap_err().contains("1 to 4"));
        assert!("0/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("a/b".parse::<Shard>().unwrap_err().contains("\"a\""));
    }

    #[test]
    fn batches_are_dealt_round_robin_and_cover_every_image_once() {
        for n in 1..6 {
            for images in [0, 1, 7, 8, 9, 30, 33, 64] {
                let mut seen = vec![0; images];
                for k in 1..=n {
                    let s = Shard { k, n };
                    for i in s.images(images, 8) {
                        seen[i] += 1;
                        assert_eq!((i / 8) % n + 1, k);
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n} images {images}");
            }
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("meddr-shard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake run: the unsharded file and the N shard files of `images` images in batches of 2.
    fn fake_run(d: &Path, n: usize, images: usize, base: &Value) -> (Vec<u8>, Vec<PathBuf>) {
        let rec = |i: usize| {
            format!(
                "{}\n",
                json!({"question_id": i, "label": [i % 2], "knn_vote": [0], "answer_match": null,
                       "specialists": [{"specialist": "s", "probabilities": [0.25, 0.75]}]})
            )
        };
        let mut whole = format!("{}\n", json!({ "settings": base }));
        (0..images).for_each(|i| whole.push_str(&rec(i)));
        let paths = (1..=n)
            .map(|k| {
                let s = Shard { k, n };
                let mut t = format!(
                    "{}\n",
                    json!({ "settings": s.settings(base, images, 2, Task::MultiClass) })
                );
                s.images(images, 2).for_each(|i| t.push_str(&rec(i)));
                let p = d.join(format!("shard-{k}.jsonl"));
                std::fs::write(&p, t).unwrap();
                p
            })
            .collect();
        (whole.into_bytes(), paths)
    }

    #[test]
    fn merge_gives_the_unsharded_bytes_and_names_bad_files() {
        let d = dir("merge");
        let base =
            json!({"model": "m", "top_n": 3, "index_labels": ["a", "b"], "max_new_tokens": 4});
        let (whole, mut paths) = fake_run(&d, 3, 11, &base);
        paths.reverse();
        let m = merge(&paths).unwrap();
        assert_eq!(
            String::from_utf8(m.bytes).unwrap(),
            String::from_utf8(whole).unwrap()
        );
        assert_eq!((m.records.len(), m.shards, m.top_n), (11, 3, 3));
        let err = |p: &[PathBuf]| merge(p).err().expect("must fail").to_string();
        // A missing shard.
        let e = err(&paths[..2]);
        assert!(e.contains("shard 1/3 missing"), "{e}");
        // A shard twice.
        let e = err(&[paths[0].clone(), paths[1].clone(), paths[1].clone()]);
        assert!(
            e.contains("shard-2.jsonl") && e.contains("given twice"),
            "{e}"
        );
        // Another run's shard.
        let other = d.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let mut base2 = base.clone();
        base2["max_new_tokens"] = json!(5);
        let (_, p2) = fake_run(&other, 3, 11, &base2);
        let e = err(&[paths[0].clone(), paths[1].clone(), p2[0].clone()]);
        assert!(
            e.contains("other/shard-1.jsonl") && e.contains("max_new_tokens: 5 here, 4 in"),
            "{e}"
        );
        // Another N.
        let (_, p4) = fake_run(&other, 4, 11, &base);
        let e = err(&[paths[0].clone(), p4[1].clone()]);
        assert!(
            e.contains("other/shard-2.jsonl") && e.contains("2/4 here, 3/3 in"),
            "{e}"
        );
        // An unfinished shard (a torn last record).
        let t = std::fs::read_to_string(&paths[0]).unwrap();
        std::fs::write(&paths[0], &t[..t.len() - 5]).unwrap();
        let e = err(&paths);
        assert!(
            e.contains("shard-3.jsonl") && e.contains("unfinished") && e.contains("image 10"),
            "{e}"
        );
        // An unsharded file.
        std::fs::write(&paths[0], format!("{}\n", json!({"settings": base}))).unwrap();
        let e = err(&paths);
        assert!(
            e.contains("shard-3.jsonl") && e.contains("without --shard"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_write_replaces_only_with_overwrite() {
        let d = dir("atomic");
        let p = d.join("out.jsonl");
        write_atomic(&p, b"one\n", false).unwrap();
        assert!(write_atomic(&p, b"two\n", false)
            .unwrap_err()
            .to_string()
            .contains("--force"));
        write_atomic(&p, b"two\n", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.jsonl")]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
