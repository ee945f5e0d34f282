//! MedMNIST's evaluation metrics (`medmnist.evaluator.getACC` / `getAUC`, which upstream's specialist code
//! calls), the kNN majority vote over retrieved cases (upstream `knn_majority_vote`), and matching MedDr's
//! free-text answer to one of the options.

use meddr_specialist::Task;

/// ROC AUC of scores against binary truth: the Mann–Whitney statistic, ties counted ½ — the same number as
/// `sklearn.metrics.roc_auc_score` (trapezoidal area under the ROC curve). `None` when only one class
/// occurs (sklearn raises).
pub fn roc_auc(truth: &[bool], scores: &[f32]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum_pos, mut i) = (0f64, 0usize);
    let pos = truth.iter().filter(|&&t| t).count();
    let neg = truth.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Average ranks over ties (1-based).
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if truth[k] {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Specialist metrics on a labelled set.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierMetrics {
    /// MedMNIST ACC: multi-class `accuracy(y, argmax p)`; multi-label the mean over labels of
    /// `accuracy(y[:, l], p[:, l] > 0.5)`.
    pub acc: f64,
    /// Unweighted mean of the defined per-class AUCs; `None` if none is defined.
    pub auc: Option<f64>,
    /// One-vs-rest (multi-class) or per-label AUC; `None` where the class is all-positive or all-negative.
    pub per_class_auc: Vec<Option<f64>>,
}

/// `probabilities`: `[N, C]` row-major; `labels`: `[N, columns]` (1 column of class indices, or C flags).
pub fn classifier_metrics(
    task: Task,
    num_classes: usize,
    labels: &[u32],
    probabilities: &[f32],
) -> ClassifierMetrics {
    let c = num_classes;
    let n = probabilities.len() / c.max(1);
    let col = |k: usize| -> Vec<f32> { (0..n).map(|i| probabilities[i * c + k]).collect() };
    let (acc, truth_of): (f64, Box<dyn Fn(usize) -> Vec<bool>>) = match task {
        Task::MultiClass => {
            let mut correct = 0;
            for i in 0..n {
                let row = &probabilities[i * c..(i + 1) * c];
                let mut best = 0;
                for k in 0..c {
                    if row[k] > row[best] {
                        best = k;
                    }
                }
                if best as u32 == labels[i] {
                    correct += 1;
                }
            }
            let labels = labels.to_vec();
            (
                correct as f64 / n as f64,
                Box::new(move |k| labels.iter().map(|&y| y as usize == k).collect()),
            )
        }
        Task::MultiLabel => {
            let mut sum = 0.0;
            for k in 0..c {
                let ok = (0..n)
                    .filter(|&i| (probabilities[i * c + k] > 0.5) == (labels[i * c + k] == 1))
                    .count();
                sum += ok as f64 / n as f64;
            }
            let labels = labels.to_vec();
            (
                sum / c as f64,
                Box::new(move |k| (0..n).map(|i| labels[i * c + k] == 1).collect()),
            )
        }
    };
    let per_class_auc: Vec<Option<f64>> = (0..c).map(|k| roc_auc(&truth_of(k), &col(k))).collect();
    let defined: Vec<f64> = per_class_auc.iter().flatten().copied().collect();
    let auc = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    ClassifierMetrics {
        acc,
        auc,
        per_class_auc,
    }
}

/// Majority vote of the neighbours' labels (upstream `knn_majority_vote`): multi-class, the most frequent
/// class, ties to the smallest class (`scipy.stats.mode`); multi-label, each label where more than half the
/// neighbours have it. Returns a label row (`[class]` or C flags).
pub fn knn_vote(task: Task, num_classes: usize, neighbour_rows: &[&[u32]]) -> Vec<u32> {
    match task {
        Task::MultiClass => {
            let mut counts = vec![0usize; num_classes];
            for r in neighbour_rows {
                if let Some(&c) = r.first() {
                    if (c as usize) < num_classes {
                        counts[c as usize] += 1;
                    }
                }
            }
            let mut best = 0;
            for k in 0..num_classes {
                if counts[k] > counts[best] {
                    best = k;
                }
            }
            vec![best as u32]
        }
        Task::MultiLabel => (0..num_classes)
            .map(|k| {
                let pos = neighbour_rows
                    .iter()
                    .filter(|r| r.get(k) == Some(&1))
                    .count();
                u32::from(pos as f64 / neighbour_rows.len().max(1) as f64 > 0.5)
            })
            .collect(),
    }
}

/// The options MedDr's answer names: case-insensitive whole-word matches of the label names, longer names
/// first so `melanocytic nevi` is not also counted as `nevi`. Multi-class: `Some([class])` when exactly one
/// option is named, else `None` (no option, or several: not a valid single answer). Multi-label: the named
/// options as flags, or `None` when none is named (an answer of `none` gives all-zero flags).
pub fn match_answer(answer: &str, task: Task, names: &[String]) -> Option<Vec<u32>> {
    let mut text: Vec<char> = answer.to_lowercase().chars().collect();
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(names[i].chars().count()));
    let mut found = vec![0u32; names.len()];
    for i in order {
        let needle: Vec<char> = names[i].to_lowercase().chars().collect();
        if needle.is_empty() || needle.len() > text.len() {
            continue;
        }
        let mut p = 0;
        while p + needle.len() <= text.len() {
            let boundary_before = p == 0 || !text[p - 1].is_alphanumeric();
            let end = p + needle.len();
            let boundary_after = end == text.len() || !text[end].is_alphanumeric();
            if boundary_before && boundary_after && text[p..end] == needle[..] {
                found[i] = 1;
                for ch in &mut text[p..end] {
                    *ch = '\u{0}';
                }
                p = end;
            } else {
                p += 1;
            }
        }
    }
    let count = found.iter().filter(|&&f| f == 1).count();
    match task {
        Task::MultiClass => {
            (count == 1).then(|| vec![found.iter().position(|&f| f == 1).unwrap_or(0) as u32])
        }
        Task::MultiLabel => {
            if count > 0 {
                Some(found)
            } else if answer
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == "none")
            {
                Some(found)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(roc_auc(&[false, true], &[0.1, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&[true, false], &[0.1, 0.9]), Some(0.0));
        assert_eq!(roc_auc(&[true, false], &[0.5, 0.5]), Some(0.5));
        assert_eq!(roc_auc(&[true, true], &[0.5, 0.4]), None);
    }

    #[test]
    fn answers_match_one_option() {
        let names = vec!["normal".to_string(), "tumor".to_string()];
        assert_eq!(
            match_answer("Tumor.", Task::MultiClass, &names),
            Some(vec![1])
        );
        assert_eq!(
            match_answer("normal tissue", Task::MultiClass, &names),
            Some(vec![0])
        );
        assert_eq!(match_answer("tumorous", Task::MultiClass, &names), None);
        assert_eq!(
            match_answer("normal or tumor", Task::MultiClass, &names),
            None
        );
        let derm = vec!["nevi".to_string(), "melanocytic nevi".to_string()];
        assert_eq!(
            match_answer("Melanocytic nevi", Task::MultiClass, &derm),
            Some(vec![1])
        );
    }

    #[test]
    fn knn_vote_ties_go_to_the_smallest_class() {
        let rows: Vec<&[u32]> = vec![&[1], &[0], &[1], &[0]];
        assert_eq!(knn_vote(Task::MultiClass, 2, &rows), vec![0]);
        let ml: Vec<&[u32]> = vec![&[1, 0], &[1, 1], &[0, 1]];
        assert_eq!(knn_vote(Task::MultiLabel, 2, &ml), vec![1, 1]);
    }
}
