//! MoED/RAD strings and the collaborative prompt, composed byte for byte as upstream `inference_gsco.py`
//! does: the task template's `'\n'` → `' '` then `'    '` → `' '`, then `###RAD###` → RAD and `###MOED###`
//! → MoED (Python `str.replace`, every occurrence, in that order).

use std::path::Path;

use meddr_specialist::Task;

use crate::error::{GscoError, Result};

pub const RAD_PLACEHOLDER: &str = "###RAD###";
pub const MOED_PLACEHOLDER: &str = "###MOED###";

/// Upstream's `pcam200_instruction_prompt` before its two `.replace` calls (the triple-quoted string of
/// `inference_gsco.py`, which starts and ends with a newline).
pub const PCAM200_TEMPLATE: &str = "
You are a helpful medical assistant.
Your task is disease diagnosis.
You are given a pathology image.
The possible diagnoses are: 'normal', 'tumor'.
The diagnoses of the most similar cases are ###RAD###.
The diagnoses of the specialist models are ###MOED###.
The response should only contain one option.
";

/// Largest template file accepted.
pub const MAX_TEMPLATE_BYTES: u64 = 64 << 10;

/// A task template with upstream's whitespace folding applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// `pcam200` or the file it came from.
    pub name: String,
    pub text: String,
}

impl Template {
    /// Applies `.replace('\n', ' ').replace('    ', ' ')` and checks both placeholders are present.
    pub fn new(name: &str, raw: &str) -> Result<Template> {
        let text = raw.replace('\n', " ").replace("    ", " ");
        for ph in [RAD_PLACEHOLDER, MOED_PLACEHOLDER] {
            if !text.contains(ph) {
                return Err(GscoError::Template {
                    path: name.into(),
                    message: format!("has no {ph} placeholder (a GSCo template needs both {RAD_PLACEHOLDER} and {MOED_PLACEHOLDER})"),
                });
            }
        }
        Ok(Template {
            name: name.to_string(),
            text,
        })
    }

    /// `pcam200` (built in) or a UTF-8 template file.
    pub fn from_arg(arg: &str) -> Result<Template> {
        match arg {
            "pcam200" => Template::new("pcam200", PCAM200_TEMPLATE),
            path => {
                let p = Path::new(path);
                let io = |cause| GscoError::Io {
                    path: p.to_path_buf(),
                    cause,
                };
                if !p.is_file() {
                    return Err(GscoError::Template {
                        path: p.to_path_buf(),
                        message: "is not the built-in `pcam200` and no such file".into(),
                    });
                }
                let len = std::fs::metadata(p).map_err(io)?.len();
                if len > MAX_TEMPLATE_BYTES {
                    return Err(GscoError::Template {
                        path: p.to_path_buf(),
                        message: format!(
                            "{len} bytes is above the {MAX_TEMPLATE_BYTES}-byte limit"
                        ),
                    });
                }
                let bytes = std::fs::read(p).map_err(io)?;
                let raw = String::from_utf8(bytes).map_err(|e| GscoError::Template {
                    path: p.to_path_buf(),
                    message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                })?;
                Template::new(path, &raw)
            }
        }
    }

    /// The task text with RAD and MoED filled in (before `chat()` strips it).
    pub fn compose(&self, rad: &str, moed: &str) -> String {
        self.text
            .replace(RAD_PLACEHOLDER, rad)
            .replace(MOED_PLACEHOLDER, moed)
    }
}

/// One case's or prediction's label text: multi-class, the class name; multi-label (the fixtures'
/// convention, upstream has no multi-label prompt), positive names in label order joined by `/`, or `none`.
pub fn label_string(row: &[u32], task: Task, names: &[String]) -> String {
    match task {
        Task::MultiClass => row
            .first()
            .and_then(|&c| names.get(c as usize))
            .cloned()
            .unwrap_or_default(),
        Task::MultiLabel => {
            let pos: Vec<&str> = row
                .iter()
                .zip(names)
                .filter(|(&f, _)| f == 1)
                .map(|(_, n)| n.as_str())
                .collect();
            if pos.is_empty() {
                "none".to_string()
            } else {
                pos.join("/")
            }
        }
    }
}

/// A prediction's label text from its predicted class indices.
pub fn prediction_string(predicted: &[usize], task: Task, names: &[String]) -> String {
    match task {
        Task::MultiClass => predicted
            .first()
            .and_then(|&c| names.get(c))
            .cloned()
            .unwrap_or_default(),
        Task::MultiLabel => {
            if predicted.is_empty() {
                "none".to_string()
            } else {
                predicted
                    .iter()
                    .filter_map(|&i| names.get(i).map(String::as_str))
                    .collect::<Vec<_>>()
                    .join("/")
            }
        }
    }
}

/// Upstream's `",".join(...)`: no spaces.
pub fn join(items: &[String]) -> String {
    items.join(",")
}
