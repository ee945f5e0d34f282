//! The specialist's configuration: timm's Hugging Face `config.json` (what
//! `timm.models._hub.save_config_for_hf` writes) plus GSCo's `img_size` and `task`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arch::Architecture;
use crate::error::{Result, SpecialistError};

/// Largest `config.json` accepted (timm's are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// How predictions are read from the logits (upstream `inference_specialist.py`: `nn.Softmax(dim=1)` or
/// `nn.Sigmoid()` by the MedMNIST task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Softmax over the classes, then argmax: one label per image.
    MultiClass,
    /// Sigmoid per label, positive when > 0.5: any number of labels per image.
    MultiLabel,
}

impl Task {
    /// Accepts GSCo's names and MedMNIST's `INFO[flag]["task"]` strings.
    pub fn parse(s: &str) -> Option<Task> {
        match s.trim() {
            "multi-class" | "binary-class" | "multiclass" | "ordinal-regression" => {
                Some(Task::MultiClass)
            }
            "multi-label" | "multi-label, binary-class" | "multilabel" => Some(Task::MultiLabel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Task::MultiClass => "multi-class",
            Task::MultiLabel => "multi-label",
        }
    }
}

/// Values a user gives on the command line for a plain timm config without GSCo's fields (or to override
/// them).
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    pub img_size: Option<u32>,
    pub task: Option<Task>,
    pub label_names: Option<Vec<String>>,
}

/// A parsed and checked specialist configuration.
#[derive(Clone, Debug)]
pub struct SpecialistConfig {
    /// timm's name as written in the file (e.g. `resnet18`, `vit_tiny_patch16_224.augreg_in21k`).
    pub architecture_name: String,
    pub architecture: Architecture,
    /// The classifier's width (the top-level `num_classes`, not `pretrained_cfg.num_classes`, which is the
    /// ImageNet head's 1000).
    pub num_classes: usize,
    /// One name per class, in classifier order (`label_names`, or `"0"`, `"1"`, … when the file has none).
    pub label_names: Vec<String>,
    /// `pretrained_cfg.mean` / `std`: upstream normalises with the timm model's `default_cfg`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The network's input side (`pretrained_cfg.input_size`, 224 for every GSCo specialist).
    pub input_size: u32,
    /// The dataset's image side (MedMNIST 28/64/128/224); zero-padded to `input_size` after normalisation.
    pub img_size: u32,
    pub task: Task,
}

fn field_err(path: &Path, field: &str, message: impl Into<String>) -> SpecialistError {
    SpecialistError::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        message: message.into(),
    }
}

fn triple(path: &Path, v: &Value, field: &str) -> Result<[f32; 3]> {
    let arr = v
        .as_array()
        .ok_or_else(|| field_err(path, field, format!("expected 3 numbers, got {v}")))?;
    if arr.len() != 3 {
        return Err(field_err(
            path,
            field,
            format!("expected 3 numbers (RGB), got {} values", arr.len()),
        ));
    }
    let mut out = [0f32; 3];
    for (o, x) in out.iter_mut().zip(arr) {
        let f = x
            .as_f64()
            .ok_or_else(|| field_err(path, field, format!("{x} is not a number")))?;
        // torchvision's Normalize takes the Python floats and torch converts them to float32.
        *o = f as f32;
        if !o.is_finite() {
            return Err(field_err(path, field, format!("{f} is not finite")));
        }
    }
    Ok(out)
}

impl SpecialistConfig {
    /// Reads `config.json` from a file. See [`SpecialistConfig::from_json`].
    pub fn from_file(path: &Path, overrides: &ConfigOverrides) -> Result<SpecialistConfig> {
        let bytes = crate::read_capped(path, MAX_CONFIG_BYTES, "a config.json")?;
        Self::from_json(&bytes, path, overrides)
    }

    /// Parses timm's `config.json` (`path` is only used in messages). Required: `architecture`,
    /// `num_classes`, `pretrained_cfg.mean` and `.std`. Optional: `label_names` (its length must equal
    /// `num_classes`), `pretrained_cfg.input_size` (default `[3, 224, 224]`), `num_features` and
    /// `global_pool` (checked against the architecture), GSCo's `img_size` (default: the input size) and
    /// `task` (default multi-class). `overrides` win over the file.
    pub fn from_json(
        bytes: &[u8],
        path: &Path,
        overrides: &ConfigOverrides,
    ) -> Result<SpecialistConfig> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| SpecialistError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| field_err(path, "(top level)", "expected a JSON object"))?;
        let architecture_name = obj
            .get("architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| field_err(path, "architecture", "missing or not a string"))?
            .to_string();
        let architecture = Architecture::from_timm_name(&architecture_name).ok_or_else(|| {
            SpecialistError::UnknownArchitecture {
                path: path.to_path_buf(),
                name: architecture_name.clone(),
                supported: Architecture::SUPPORTED.join(", "),
            }
        })?;
        let num_classes = obj
            .get("num_classes")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0 && n <= 1 << 20)
            .ok_or_else(|| {
                field_err(
                    path,
                    "num_classes",
                    format!(
                        "expected a positive integer, got {}",
                        obj.get("num_classes")
                            .map_or("nothing".into(), |x| x.to_string())
                    ),
                )
            })? as usize;
        if let Some(nf) = obj.get("num_features") {
            let want = architecture.num_features();
            if nf.as_u64() != Some(want as u64) {
                return Err(field_err(
                    path,
                    "num_features",
                    format!("{nf} does not match {architecture_name} ({want})"),
                ));
            }
        }
        if let Some(gp) = obj.get("global_pool") {
            let want = architecture.global_pool();
            if gp.as_str() != Some(want) {
                return Err(field_err(
                    path,
                    "global_pool",
                    format!("{gp} is not supported for {architecture_name} (only {want:?})"),
                ));
            }
        }
        // Flags fill what a plain timm config lacks; they never silently replace what the file says.
        let conflict = |field: &str, file: &Value, flag: String| -> SpecialistError {
            field_err(path, field, format!("the file says {file}, the command line says {flag}; remove the flag (it is for configs without `{field}`)"))
        };
        if let (Some(l), Some(v @ Value::Array(_))) =
            (&overrides.label_names, obj.get("label_names"))
        {
            if v.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
            }) != Some(l.iter().map(String::as_str).collect())
            {
                return Err(conflict("label_names", v, format!("{l:?}")));
            }
        }
        if let (Some(i), Some(v)) = (
            overrides.img_size,
            obj.get("img_size").filter(|v| !v.is_null()),
        ) {
            if v.as_u64() != Some(i as u64) {
                return Err(conflict("img_size", v, i.to_string()));
            }
        }
        if let (Some(t), Some(v)) = (overrides.task, obj.get("task").filter(|v| !v.is_null())) {
            if v.as_str().and_then(Task::parse) != Some(t) {
                return Err(conflict("task", v, t.as_str().to_string()));
            }
        }
        let label_names = match (&overrides.label_names, obj.get("label_names")) {
            (Some(l), _) => l.iter().map(|x| x.trim().to_string()).collect(),
            (None, None | Some(Value::Null)) => (0..num_classes).map(|i| i.to_string()).collect(),
            (None, Some(Value::Array(a))) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        field_err(path, "label_names", format!("{x} is not a string"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            (None, Some(x)) => {
                return Err(field_err(
                    path,
                    "label_names",
                    format!("expected a list of strings, got {x}"),
                ))
            }
        };
        if label_names.len() != num_classes {
            return Err(field_err(
                path,
                "label_names",
                format!(
                    "{} names for num_classes = {num_classes}",
                    label_names.len()
                ),
            ));
        }
        if let Some((i, dup)) = label_names
            .iter()
            .enumerate()
            .find(|(i, l)| label_names[..*i].contains(l))
        {
            return Err(field_err(
                path,
                "label_names",
                format!("label {dup:?} appears twice (again at position {i})"),
            ));
        }
        if let Some(bad) = label_names.iter().find(|l| l.is_empty() || l.contains(',')) {
            // RAD/MoED strings are comma-joined: a name with a comma (or none) could not be read back.
            return Err(field_err(
                path,
                "label_names",
                format!("label {bad:?} is empty or contains a comma"),
            ));
        }
        let pcfg = obj
            .get("pretrained_cfg")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                field_err(
                    path,
                    "pretrained_cfg",
                    "missing (timm writes it; it holds the normalisation mean/std)",
                )
            })?;
        let mean = triple(
            path,
            pcfg.get("mean")
                .ok_or_else(|| field_err(path, "pretrained_cfg.mean", "missing"))?,
            "pretrained_cfg.mean",
        )?;
        let std = triple(
            path,
            pcfg.get("std")
                .ok_or_else(|| field_err(path, "pretrained_cfg.std", "missing"))?,
            "pretrained_cfg.std",
        )?;
        if let Some(s) = std.iter().find(|&&s| s <= 0.0) {
            return Err(field_err(
                path,
                "pretrained_cfg.std",
                format!("{s} is not positive"),
            ));
        }
        let input_size = match pcfg.get("input_size") {
            None => 224,
            Some(x) => {
                let dims: Option<Vec<u64>> = x
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect());
                match dims.as_deref() {
                    Some([3, h, w]) if h == w && *h >= 32 && *h <= 1024 => *h as u32,
                    _ => {
                        return Err(field_err(
                            path,
                            "pretrained_cfg.input_size",
                            format!("expected [3, S, S] with 32 ≤ S ≤ 1024, got {x}"),
                        ))
                    }
                }
            }
        };
        architecture
            .check_input_size(input_size)
            .map_err(|m| field_err(path, "pretrained_cfg.input_size", m))?;
        let img_size = match (overrides.img_size, obj.get("img_size")) {
            (Some(s), _) => s,
            (None, None | Some(Value::Null)) => input_size,
            (None, Some(x)) => x
                .as_u64()
                .filter(|&s| s > 0 && s <= u32::MAX as u64)
                .ok_or_else(|| {
                    field_err(
                        path,
                        "img_size",
                        format!("expected a positive integer, got {x}"),
                    )
                })? as u32,
        };
        if img_size == 0 || img_size > input_size {
            return Err(field_err(
                path,
                "img_size",
                format!("{img_size} must be between 1 and the input size {input_size} (images are zero-padded up to it)"),
            ));
        }
        let task = match (overrides.task, obj.get("task")) {
            (Some(t), _) => t,
            (None, None | Some(Value::Null)) => Task::MultiClass,
            (None, Some(x)) => x.as_str().and_then(Task::parse).ok_or_else(|| {
                field_err(
                    path,
                    "task",
                    format!("{x} is not \"multi-class\" or \"multi-label\""),
                )
            })?,
        };
        Ok(SpecialistConfig {
            architecture_name,
            architecture,
            num_classes,
            label_names,
            mean,
            std,
            input_size,
            img_size,
            task,
        })
    }

    /// Zero padding `(left, top, right, bottom)` from `img_size` to `input_size`: upstream's
    /// `Pad((l, t, r, b))` with `l = t = total // 2` and `r = b = total − l`.
    pub fn padding(&self) -> (u32, u32, u32, u32) {
        let total = self.input_size - self.img_size;
        let l = total / 2;
        (l, l, total - l, total - l)
    }
}

/// Where a specialist's files are.
#[derive(Clone, Debug)]
pub struct SpecialistPaths {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl SpecialistPaths {
    /// `DIR/config.json` and `DIR/model.safetensors` (timm's Hugging Face layout).
    pub fn in_dir(dir: &Path) -> SpecialistPaths {
        SpecialistPaths {
            dir: dir.to_path_buf(),
            config: dir.join("config.json"),
            weights: dir.join("model.safetensors"),
        }
    }
}
