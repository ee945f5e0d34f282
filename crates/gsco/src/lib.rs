//! GSCo — generalist–specialist collaboration (He et al., "GSCo: Towards Generalizable AI in Medicine via
//! Generalist-Specialist Collaboration"; upstream `sunanhe/MedDr` `inference_specialist.py`,
//! `src/utils/specialist.py`, `inference_gsco.py`) on the edge: specialists' diagnoses (MoED) and the labels
//! of the most similar reference cases (RAD) written into MedDr's prompt.
//!
//! This crate computes everything up to the prompt and scores answers; MedDr itself runs in the caller
//! (`meddr gsco run` / `eval`), which hands answers back through a closure, so the data flows one way.

pub mod dataset;
pub mod error;
pub mod eval;
pub mod index;
pub mod metrics;
pub mod prompt;
pub mod shard;

use burn_tensor::Device;
use meddr_image::RgbImage;
use meddr_specialist::{Prediction, Specialist};

pub use error::{GscoError, Result};
pub use index::{Index, IndexDtype, IndexMeta, IndexWriter, Neighbor};
pub use prompt::Template;

impl Collaboration {
    /// The JSON shape of `meddr gsco run --json` and of the browser's GSCo panel (one shape for both):
    /// `{"moed": [{"specialist", "architecture", "predicted", "probabilities", "logits"}],
    ///   "rad": [{"index", "label", "distance"}], "moed_string", "rad_string", "prompt"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "moed": self.moed.iter().map(|m| serde_json::json!({
                "specialist": m.specialist,
                "architecture": m.architecture,
                "predicted": m.predicted,
                "probabilities": m.prediction.probabilities,
                "logits": m.prediction.logits,
            })).collect::<Vec<_>>(),
            "rad": self.rad.iter().map(|r| serde_json::json!({"index": r.index, "label": r.label, "distance": r.distance})).collect::<Vec<_>>(),
            "moed_string": self.moed_string,
            "rad_string": self.rad_string,
            "prompt": self.prompt,
        })
    }
}

/// One specialist's diagnosis of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct MoedEntry {
    pub specialist: String,
    pub architecture: String,
    pub prediction: Prediction,
    /// Predicted label names.
    pub predicted: Vec<String>,
    /// This specialist's MoED entry (its label string).
    pub text: String,
}

/// One retrieved case.
#[derive(Clone, Debug, PartialEq)]
pub struct RadEntry {
    pub index: usize,
    pub label: String,
    pub distance: f32,
}

/// What GSCo adds to MedDr's prompt for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Collaboration {
    pub moed: Vec<MoedEntry>,
    pub rad: Vec<RadEntry>,
    /// `",".join(moed)` and `",".join(rad)` as upstream.
    pub moed_string: String,
    pub rad_string: String,
    /// The task text exactly as upstream composes it (before `chat()` strips it).
    pub prompt: String,
}

/// The specialists, the index and the specialist that does the retrieval (the one that built the index).
pub struct Gsco<'a> {
    pub specialists: &'a [Specialist],
    pub index: &'a Index,
    pub retriever: usize,
    pub template: &'a Template,
    pub top_n: usize,
}

impl<'a> Gsco<'a> {
    /// Finds the specialist the index was built by (weights hash); errors name the index's specialist.
    pub fn new(
        specialists: &'a [Specialist],
        index: &'a Index,
        template: &'a Template,
        top_n: usize,
    ) -> Result<Gsco<'a>> {
        if specialists.is_empty() {
            return Err(GscoError::Invalid(
                "at least one --specialist is needed".into(),
            ));
        }
        let retriever = specialists
            .iter()
            .position(|s| s.weights_sha256 == index.meta.specialist_sha256);
        let retriever = match retriever {
            Some(r) => r,
            None => {
                // Report against the first specialist (the message names the index's own specialist).
                index.check_specialist(&specialists[0])?;
                0
            }
        };
        index.check_specialist(&specialists[retriever])?;
        if top_n == 0 || top_n > index.meta.count {
            return Err(GscoError::Invalid(format!(
                "--top-n {top_n}: must be between 1 and the {} cases of the index",
                index.meta.count
            )));
        }
        Ok(Gsco {
            specialists,
            index,
            retriever,
            template,
            top_n,
        })
    }

    /// MoED, RAD and the composed prompt for a batch of images (each specialist runs once on the batch).
    /// Blocks until the results are read back (native only; the browser uses [`Gsco::collaborate_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn collaborate(&self, images: &[RgbImage]) -> Result<Vec<Collaboration>> {
        pollster::block_on(self.collaborate_async(images))
    }

    /// [`Gsco::collaborate`] with asynchronous readback (WebGPU's `mapAsync`).
    pub async fn collaborate_async(&self, images: &[RgbImage]) -> Result<Vec<Collaboration>> {
        let n = images.len();
        let mut moed: Vec<Vec<MoedEntry>> = vec![Vec::new(); n];
        let mut rad: Vec<Vec<RadEntry>> = vec![Vec::new(); n];
        for (si, s) in self.specialists.iter().enumerate() {
            let mut x = Vec::with_capacity(n * s.input_len());
            for img in images {
                x.extend(s.preprocess(img)?);
            }
            let mode = (si == self.retriever).then_some(self.index.meta.feature_mode);
            let out = s.run_async(&x, n, mode).await?;
            let names = &s.config.label_names;
            for (i, p) in out.predictions.into_iter().enumerate() {
                let text = prompt::prediction_string(&p.predicted, s.config.task, names);
                moed[i].push(MoedEntry {
                    specialist: s.name(),
                    architecture: s.config.architecture_name.clone(),
                    predicted: p
                        .predicted_names(names)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    prediction: p,
                    text,
                });
            }
            if let Some(features) = out.features {
                let hits = self
                    .index
                    .search_async(&features, self.top_n, s.device())
                    .await?;
                for (i, list) in hits.into_iter().enumerate() {
                    rad[i] = list
                        .iter()
                        .map(|nb| RadEntry {
                            index: nb.index,
                            label: self.index.label_string(nb.index),
                            distance: nb.distance,
                        })
                        .collect();
                }
            }
        }
        Ok(moed
            .into_iter()
            .zip(rad)
            .map(|(moed, rad)| {
                let moed_string =
                    prompt::join(&moed.iter().map(|m| m.text.clone()).collect::<Vec<_>>());
                let rad_string =
                    prompt::join(&rad.iter().map(|r| r.label.clone()).collect::<Vec<_>>());
                let prompt = self.template.compose(&rad_string, &moed_string);
                Collaboration {
                    moed,
                    rad,
                    moed_string,
                    rad_string,
                    prompt,
                }
            })
            .collect())
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Builds an index from a stream of labelled images: features computed `batch` images at a time, written as
/// they come. `progress(done, total)` after each batch.
#[cfg(not(target_arch = "wasm32"))]
pub fn build_index(
    specialist: &Specialist,
    mode: meddr_specialist::FeatureMode,
    count: usize,
    labels: &dataset::Labels,
    source: &str,
    out: &std::path::Path,
    dtype: IndexDtype,
    overwrite: bool,
    for_each_batch: &mut dyn FnMut(&mut dyn FnMut(usize, &[RgbImage]) -> Result<()>) -> Result<()>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    labels.check(out, specialist.config.task, specialist.config.num_classes)?;
    let meta = IndexMeta::for_specialist(specialist, mode, count, source, dtype);
    let mut w = IndexWriter::create(out, &meta, labels, overwrite)?;
    let mut done = 0;
    for_each_batch(&mut |_start, images| {
        let mut x = Vec::with_capacity(images.len() * specialist.input_len());
        for img in images {
            x.extend(specialist.preprocess(img)?);
        }
        let o = specialist.run(&x, images.len(), Some(mode))?;
        w.push(o.features.as_deref().unwrap_or_default())?;
        done += images.len();
        progress(done, count);
        Ok(())
    })?;
    w.finish()
}

/// Returns the burn device a list of specialists shares (they must all be on one).
pub fn shared_device(specialists: &[Specialist]) -> Option<&Device> {
    specialists.first().map(Specialist::device)
}
