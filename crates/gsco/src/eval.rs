//! Batch evaluation over a labelled test set, resumable: one JSON line per image appended (and flushed) as
//! soon as it is produced, like upstream's results file (`question`, `question_id`, `answer`,
//! `annotation`) plus RAD, MoED, the specialists' probabilities and the retrieved cases. A rerun reads the
//! file, checks it was made with the same settings, skips finished images and goes on; a torn last line
//! (a run killed mid-write) is cut off first. A run split over machines (`--shard K/N`) writes one such
//! file per shard; [`crate::shard`] deals the images and merges the files.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use meddr_specialist::Task;
use serde_json::{json, Value};

use crate::error::{data_err, GscoError, Result};
use crate::metrics::{classifier_metrics, knn_vote, match_answer, ClassifierMetrics};
use crate::Collaboration;

/// An append-only results file.
pub struct ResultsFile {
    pub path: PathBuf,
    file: File,
    /// Finished `question_id`s.
    pub done: std::collections::BTreeSet<usize>,
    pub records: Vec<Value>,
}

impl ResultsFile {
    /// Opens (or creates) the file. `settings` is written as the first line of a new file and must equal
    /// the first line of an existing one.
    pub fn open(path: &Path, settings: &Value) -> Result<ResultsFile> {
        let io = |cause| GscoError::Io {
            path: path.to_path_buf(),
            cause,
        };
        // Opened (never truncated) and locked first: two runs on one file would each do every image. The
        // lock is the OS's advisory one (flock/LockFileEx), released when this handle closes or the run dies.
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(data_err(path, "is being written by another `meddr gsco eval`; wait for it to finish (it resumes from the same file) or choose another --out"));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut records = Vec::new();
        let mut done = std::collections::BTreeSet::new();
        if existed {
            let bytes = std::fs::read(path).map_err(io)?;
            // Only our own results file is ever modified: its first line must be our settings record.
            let first_end = bytes.iter().position(|&b| b == b'\n');
            if !bytes.is_empty() {
                let first = first_end.map(|e| &bytes[..e]).unwrap_or(&bytes[..]);
                let first: Value = serde_json::from_slice(first).map_err(|_| data_err(path, "exists and is not a GSCo results file (its first line is not this tool's settings record); choose another --out"))?;
                let old = first.get("settings").cloned().ok_or_else(|| data_err(path, "exists and is not a GSCo results file (no settings record on line 1); choose another --out"))?;
                if &old != settings {
                    // Keys of either side: a field only the file has (e.g. another run's `--shard`) is named too.
                    let diff = crate::shard::first_difference(&old, settings)
                        .map(|(k, file, run)| format!("{k}: file has {file}, this run {run}"));
                    return Err(data_err(
                        path,
                        format!(
                            "was written with other settings ({}); use another --out or delete it",
                            diff.unwrap_or_else(|| "settings differ".into())
                        ),
                    ));
                }
            }
            // Drop a torn final line (a run killed mid-write).
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            if keep < bytes.len() {
                let f = OpenOptions::new().write(true).open(path).map_err(io)?;
                f.set_len(keep as u64).map_err(io)?;
            }
            for (n, line) in BufReader::new(&bytes[..keep]).lines().enumerate().skip(1) {
                let line = line.map_err(io)?;
                let v: Value = serde_json::from_str(&line)
                    .map_err(|e| data_err(path, format!("line {} is not JSON: {e}", n + 1)))?;
                let id = v
                    .get("question_id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| data_err(path, format!("line {} has no question_id", n + 1)))?;
                // A record written twice (two runs on one file) counts once.
                if done.insert(id as usize) {
                    records.push(v);
                }
            }
        }
        let new = file.metadata().map_err(io)?.len() == 0;
        if new {
            writeln!(file, "{}", json!({ "settings": settings })).map_err(io)?;
            file.flush().map_err(io)?;
        }
        Ok(ResultsFile {
            path: path.to_path_buf(),
            file,
            done,
            records,
        })
    }

    /// Appends one record (flushed and synced, so an interrupted run loses at most the image in flight).
    pub fn append(&mut self, record: Value) -> Result<()> {
        let io = |cause| GscoError::Io {
            path: self.path.clone(),
            cause,
        };
        let id = record
            .get("question_id")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        writeln!(self.file, "{record}").map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.done.insert(id);
        self.records.push(record);
        Ok(())
    }
}

/// One image's record.
pub fn record(
    question_id: usize,
    annotation: &str,
    truth: &[u32],
    c: &Collaboration,
    answer: &str,
    rad_rows: &[Vec<u32>],
    knn: &[u32],
    answer_match: Option<&[u32]>,
) -> Value {
    json!({
        "question_id": question_id,
        "question": c.prompt,
        "answer": answer,
        "annotation": annotation,
        "label": truth,
        "rad": c.rad.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
        "moed": c.moed.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
        "rad_indices": c.rad.iter().map(|r| r.index).collect::<Vec<_>>(),
        "rad_distances": c.rad.iter().map(|r| r.distance).collect::<Vec<_>>(),
        "rad_labels": rad_rows,
        "specialists": c.moed.iter().map(|m| json!({
            "specialist": m.specialist,
            "predicted": m.predicted,
            "probabilities": m.prediction.probabilities,
        })).collect::<Vec<_>>(),
        "knn_vote": knn,
        "answer_match": answer_match,
    })
}

/// Summary metrics over the records of a results file.
#[derive(Clone, Debug)]
pub struct Summary {
    pub images: usize,
    /// Per specialist: name and its ACC/AUC.
    pub specialists: Vec<(String, ClassifierMetrics)>,
    /// Accuracy of the majority vote of the retrieved cases (MedMNIST ACC definition).
    pub knn_acc: f64,
    /// MedDr's accuracy: its answer matched to an option; an answer that names no single option is wrong.
    pub meddr_acc: f64,
    pub meddr_unmatched: usize,
}

fn acc_rows(task: Task, c: usize, truth: &[Vec<u32>], pred: &[Option<Vec<u32>>]) -> f64 {
    let n = truth.len().max(1) as f64;
    match task {
        Task::MultiClass => {
            truth
                .iter()
                .zip(pred)
                .filter(|(t, p)| p.as_deref() == Some(t.as_slice()))
                .count() as f64
                / n
        }
        Task::MultiLabel => {
            let mut sum = 0.0;
            for k in 0..c {
                let ok = truth
                    .iter()
                    .zip(pred)
                    .filter(|(t, p)| p.as_ref().map(|p| p[k] == t[k]).unwrap_or(false))
                    .count();
                sum += ok as f64 / n;
            }
            sum / c.max(1) as f64
        }
    }
}

/// Computes the summary from records (`label_names`/`task` of the evaluated set).
pub fn summarize(records: &[Value], task: Task, label_names: &[String]) -> Result<Summary> {
    let c = label_names.len();
    let bad = |m: &str| GscoError::Invalid(format!("results record: {m}"));
    let u32s = |v: &Value, k: &str| -> Result<Vec<u32>> {
        v.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(&format!("no {k}")))?
            .iter()
            .map(|x| x.as_u64().map(|x| x as u32).ok_or_else(|| bad(k)))
            .collect()
    };
    let mut truth = Vec::new();
    let mut knn = Vec::new();
    let mut meddr = Vec::new();
    let mut per_spec: Vec<(String, Vec<f32>)> = Vec::new();
    for r in records {
        truth.push(u32s(r, "label")?);
        knn.push(Some(u32s(r, "knn_vote")?));
        meddr.push(match r.get("answer_match") {
            Some(Value::Array(_)) => Some(u32s(r, "answer_match")?),
            _ => None,
        });
        let specs = r
            .get("specialists")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no specialists"))?;
        for (i, s) in specs.iter().enumerate() {
            let name = s
                .get("specialist")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let probs: Vec<f32> = s
                .get("probabilities")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no probabilities"))?
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect();
            if per_spec.len() <= i {
                per_spec.push((name, Vec::new()));
            }
            per_spec[i].1.extend(probs);
        }
    }
    let flat: Vec<u32> = truth.iter().flatten().copied().collect();
    let specialists = per_spec
        .into_iter()
        .map(|(name, probs)| {
            let k = probs.len() / records.len().max(1);
            (name, classifier_metrics(task, k, &flat, &probs))
        })
        .collect();
    Ok(Summary {
        images: records.len(),
        specialists,
        knn_acc: acc_rows(task, c, &truth, &knn),
        meddr_acc: acc_rows(task, c, &truth, &meddr),
        meddr_unmatched: meddr.iter().filter(|m| m.is_none()).count(),
    })
}

/// Scores one answer and the kNN vote of its retrieved cases.
pub fn score(
    task: Task,
    label_names: &[String],
    answer: &str,
    rad_rows: &[Vec<u32>],
) -> (Vec<u32>, Option<Vec<u32>>) {
    let rows: Vec<&[u32]> = rad_rows.iter().map(Vec::as_slice).collect();
    (
        knn_vote(task, label_names.len(), &rows),
        match_answer(answer, task, label_names),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_on_the_same_file_is_refused_while_the_first_holds_it() {
        let dir = std::env::temp_dir().join(format!("meddr-gsco-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let _ = std::fs::remove_file(&path);
        let settings = json!({"model": "m", "split": "test"});
        let mut first = ResultsFile::open(&path, &settings).unwrap();
        first.append(json!({"question_id": 0})).unwrap();
        let err = ResultsFile::open(&path, &settings)
            .err()
            .expect("second open must fail while the first is open")
            .to_string();
        assert!(
            err.contains("results.jsonl") && err.contains("another"),
            "{err}"
        );
        drop(first);
        // Released with the first run: the next one resumes with the finished image.
        let again = ResultsFile::open(&path, &settings).unwrap();
        assert_eq!(again.done.iter().copied().collect::<Vec<_>>(), vec![0]);
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
