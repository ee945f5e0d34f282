//! What the GSCo panel holds (specialists, one index) and does (MoED + RAD + prompt for one image), on files
//! the user picked, held in memory: the browser has no paths and no mmap.

use std::path::PathBuf;

use burn_tensor::Device;
use meddr_gsco::{Gsco, GscoError, Index, Template};
use meddr_specialist::{ConfigOverrides, Specialist, SpecialistError};
use serde_json::{json, Value};

/// The most specialists one panel holds: each is a full network in GPU memory.
pub const MAX_SPECIALISTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error(transparent)]
    Specialist(#[from] SpecialistError),
    #[error(transparent)]
    Gsco(#[from] GscoError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, PanelError>;

/// Specialists and the reference index of one page, on one burn device.
pub struct Panel {
    device: Device,
    specialists: Vec<Specialist>,
    index: Option<Index>,
}

impl Panel {
    pub fn new(device: Device) -> Panel {
        Panel {
            device,
            specialists: Vec::new(),
            index: None,
        }
    }

    /// Loads a specialist from its timm `config.json` and `model.safetensors` bytes. `name` (the folder's
    /// name) is how MoED entries and messages call it. A specialist with the same weights replaces the old one.
    /// Errors: everything [`Specialist::from_bytes`] checks, and more than [`MAX_SPECIALISTS`].
    pub fn add_specialist(
        &mut self,
        name: &str,
        config: &[u8],
        weights: &[u8],
        overrides: &ConfigOverrides,
    ) -> Result<Value> {
        let name = if name.trim().is_empty() {
            "specialist"
        } else {
            name.trim()
        };
        let dir = PathBuf::from(name);
        let s = Specialist::from_bytes(
            config,
            &dir.join("config.json"),
            weights,
            &dir.join("model.safetensors"),
            overrides,
            &self.device,
        )?;
        self.specialists
            .retain(|o| o.weights_sha256 != s.weights_sha256);
        if self.specialists.len() >= MAX_SPECIALISTS {
            return Err(PanelError::Invalid(format!(
                "{name}: a panel holds at most {MAX_SPECIALISTS} specialists; remove one first"
            )));
        }
        let summary = specialist_json(&s);
        self.specialists.push(s);
        Ok(summary)
    }

    /// Removes every specialist called `name`; returns how many were removed.
    pub fn remove_specialist(&mut self, name: &str) -> usize {
        let before = self.specialists.len();
        self.specialists.retain(|s| s.name() != name);
        before - self.specialists.len()
    }

    /// Reads and checks an index file (see `docs/gsco.md`); `name` is the file's name, for messages. When the
    /// specialist that built it is loaded, the pairing is checked now; otherwise at [`Panel::collaborate`].
    pub fn set_index(&mut self, name: &str, bytes: Vec<u8>) -> Result<Value> {
        let index = Index::from_bytes(bytes, name)?;
        if let Some(s) = self
            .specialists
            .iter()
            .find(|s| s.weights_sha256 == index.meta.specialist_sha256)
        {
            index.check_specialist(s)?;
        }
        let m = &index.meta;
        let summary = json!({
            "name": name,
            "cases": m.count,
            "specialist": m.specialist_name,
            "architecture": m.specialist_architecture,
            "featureMode": m.feature_mode.as_str(),
            "featureDim": m.feature_dim,
            "dtype": m.dtype.as_str(),
            "labels": m.label_names,
            "source": m.source,
        });
        self.index = Some(index);
        Ok(summary)
    }

    /// The loaded specialists and index, as the panel shows them.
    pub fn status(&self) -> Value {
        json!({
            "specialists": self.specialists.iter().map(specialist_json).collect::<Vec<_>>(),
            "index": self.index.as_ref().map(|i| json!({"name": i.path.display().to_string(), "cases": i.meta.count, "specialist": i.meta.specialist_name})),
        })
    }

    /// MoED from every specialist, RAD from the index (its own specialist retrieves), and the task prompt from
    /// `template` (`pcam200` or a template's text, named `template_name`), for one JPEG/PNG image:
    /// [`meddr_gsco::Collaboration::to_json`]'s shape, the same as `meddr gsco run --json`.
    pub async fn collaborate(
        &self,
        image: &[u8],
        template_name: &str,
        template_text: Option<&str>,
        top_n: usize,
    ) -> Result<Value> {
        let index = self.index.as_ref().ok_or_else(|| {
            PanelError::Invalid(
                "no reference index loaded: pick an index file (meddr gsco index makes one)".into(),
            )
        })?;
        let template = match template_text {
            None if template_name == "pcam200" => Template::from_arg("pcam200")?,
            None => {
                return Err(PanelError::Invalid(format!(
                    "unknown built-in template {template_name:?}; the built-in one is pcam200"
                )))
            }
            Some(text) => Template::new(template_name, text)?,
        };
        let img = meddr_image::decode_rgb(image).map_err(SpecialistError::from)?;
        let g = Gsco::new(&self.specialists, index, &template, top_n)?;
        let mut c = g.collaborate_async(std::slice::from_ref(&img)).await?;
        let c = c
            .pop()
            .ok_or_else(|| PanelError::Invalid("no result for the image".into()))?;
        Ok(c.to_json())
    }
}

fn specialist_json(s: &Specialist) -> Value {
    json!({
        "name": s.name(),
        "architecture": s.config.architecture_name,
        "labels": s.config.label_names,
        "task": s.config.task.as_str(),
        "imgSize": s.config.img_size,
        "sha256": s.weights_sha256,
    })
}
