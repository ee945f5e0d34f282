//! The reference-case index for RAD: L2-normalised features of a labelled set, stored in one GGUF file
//! with the labels, the label names and the identity of the specialist that computed them, and exact
//! cosine top-n search as a chunked matmul on the device.
//!
//! Upstream (`inference_specialist.py build_index` + `knn_search`): `NearestNeighbors(metric='cosine')
//! .fit(normalize(train))`, then `kneighbors(normalize(query), n)`. scikit-learn's brute-force cosine
//! normalises both sides *again* (`cosine_distances`), computes `1 − a·bᵀ` in float32, clips to [0, 2] and
//! sorts ascending. The index therefore stores `normalize(normalize(x))` and queries are normalised twice.
//!
//! GGUF layout (`general.architecture = "meddr-gsco-index"`): tensor `gsco.labels` I32 `[columns, N]` (ggml
//! order: row length first), then `gsco.features` F32 or F16 `[D, N]`; keys listed in [`keys`].

use std::path::{Path, PathBuf};

use burn_tensor::{Device, Tensor, TensorData};
use meddr_gguf::{Array, GgmlType, GgufFile, GgufWriter, TensorSpec, Value, WriteOptions};
use meddr_specialist::{FeatureMode, Specialist, Task};

use crate::dataset::Labels;
use crate::error::{index_err, GscoError, Result};

/// Metadata keys of an index file.
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const ARCHITECTURE_VALUE: &str = "meddr-gsco-index";
    pub const VERSION: &str = "gsco.index.version";
    pub const SPECIALIST_NAME: &str = "gsco.specialist.name";
    pub const SPECIALIST_ARCH: &str = "gsco.specialist.architecture";
    pub const SPECIALIST_SHA256: &str = "gsco.specialist.weights_sha256";
    pub const FEATURE_MODE: &str = "gsco.feature_mode";
    pub const TASK: &str = "gsco.task";
    pub const LABEL_NAMES: &str = "gsco.label_names";
    pub const SOURCE: &str = "gsco.source";
    pub const LABELS_TENSOR: &str = "gsco.labels";
    pub const FEATURES_TENSOR: &str = "gsco.features";
}

pub const INDEX_VERSION: u32 = 1;

/// Storage type of the normalised features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexDtype {
    F32,
    /// Half the size; on the fixtures the top-10 neighbours are unchanged and distances move by ≤ 1.1e-5.
    F16,
}

impl IndexDtype {
    fn ggml(self) -> GgmlType {
        match self {
            IndexDtype::F32 => GgmlType::F32,
            IndexDtype::F16 => GgmlType::F16,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            IndexDtype::F32 => "f32",
            IndexDtype::F16 => "f16",
        }
    }
}

/// What an index holds and who made it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexMeta {
    pub specialist_name: String,
    pub specialist_architecture: String,
    pub specialist_sha256: String,
    pub feature_mode: FeatureMode,
    pub feature_dim: usize,
    pub task: Task,
    pub label_names: Vec<String>,
    pub source: String,
    pub count: usize,
    pub dtype: IndexDtype,
}

impl IndexMeta {
    /// The metadata for features of `s` in `mode` over `count` cases from `source`.
    pub fn for_specialist(
        s: &Specialist,
        mode: FeatureMode,
        count: usize,
        source: &str,
        dtype: IndexDtype,
    ) -> IndexMeta {
        IndexMeta {
            specialist_name: s.name(),
            specialist_architecture: s.config.architecture_name.clone(),
            specialist_sha256: s.weights_sha256.clone(),
            feature_mode: mode,
            feature_dim: s.feature_dim(mode),
            task: s.config.task,
            label_names: s.config.label_names.clone(),
            source: source.to_string(),
            count,
            dtype,
        }
    }
}

/// `sklearn.preprocessing.normalize` of one row in place (norm accumulated in f64, applied in f32; a zero
/// row stays zero, as sklearn leaves it).
pub fn l2_normalize(row: &mut [f32]) {
    let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
    let norm = ss.sqrt() as f32;
    if norm > 0.0 {
        for v in row.iter_mut() {
            *v /= norm;
        }
    }
}

/// Streams normalised features into an index file (written under a temporary name, renamed on
/// [`IndexWriter::finish`]; dropped unfinished, nothing is left).
pub struct IndexWriter {
    w: GgufWriter,
    dim: usize,
    count: usize,
    written: usize,
    dtype: IndexDtype,
}

impl IndexWriter {
    /// Writes the header and the labels; features follow with [`IndexWriter::push`].
    pub fn create(
        path: &Path,
        meta: &IndexMeta,
        labels: &Labels,
        overwrite: bool,
    ) -> Result<IndexWriter> {
        if meta.count == 0 {
            return Err(GscoError::Invalid(
                "cannot build an index of 0 reference cases".into(),
            ));
        }
        if labels.len() != meta.count {
            return Err(GscoError::Invalid(format!(
                "{} labels for {} cases",
                labels.len(),
                meta.count
            )));
        }
        let s = |v: &str| Value::String(v.to_string());
        let metadata = vec![
            (keys::ARCHITECTURE.to_string(), s(keys::ARCHITECTURE_VALUE)),
            (keys::VERSION.to_string(), Value::U32(INDEX_VERSION)),
            (keys::SPECIALIST_NAME.to_string(), s(&meta.specialist_name)),
            (
                keys::SPECIALIST_ARCH.to_string(),
                s(&meta.specialist_architecture),
            ),
            (
                keys::SPECIALIST_SHA256.to_string(),
                s(&meta.specialist_sha256),
            ),
            (
                keys::FEATURE_MODE.to_string(),
                s(meta.feature_mode.as_str()),
            ),
            (keys::TASK.to_string(), s(meta.task.as_str())),
            (
                keys::LABEL_NAMES.to_string(),
                Value::Array(Array::String(meta.label_names.clone())),
            ),
            (keys::SOURCE.to_string(), s(&meta.source)),
        ];
        let (n, d, c) = (
            meta.count as u64,
            meta.feature_dim as u64,
            labels.columns as u64,
        );
        let tensors = vec![
            TensorSpec::new(keys::LABELS_TENSOR, vec![c, n], GgmlType::I32),
            TensorSpec::new(keys::FEATURES_TENSOR, vec![d, n], meta.dtype.ggml()),
        ];
        let opts = WriteOptions {
            overwrite,
            ..Default::default()
        };
        let mut w = GgufWriter::create_with(path, opts, metadata, tensors)?;
        let lab: Vec<u8> = labels
            .values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect();
        w.write_tensor(keys::LABELS_TENSOR, &lab)?;
        w.begin_tensor(keys::FEATURES_TENSOR)?;
        Ok(IndexWriter {
            w,
            dim: meta.feature_dim,
            count: meta.count,
            written: 0,
            dtype: meta.dtype,
        })
    }

    /// Appends rows of raw (unnormalised) features, `k · D` values.
    pub fn push(&mut self, features: &[f32]) -> Result<()> {
        if features.len() % self.dim != 0 {
            return Err(GscoError::Invalid(format!(
                "{} feature values is not a multiple of D = {}",
                features.len(),
                self.dim
            )));
        }
        let rows = features.len() / self.dim;
        if self.written + rows > self.count {
            return Err(GscoError::Invalid(format!(
                "more than the declared {} cases",
                self.count
            )));
        }
        let mut bytes = Vec::with_capacity(features.len() * 4);
        for (k, raw) in features.chunks_exact(self.dim).enumerate() {
            if let Some(j) = raw.iter().position(|v| !v.is_finite()) {
                return Err(GscoError::Invalid(format!(
                    "case {}: feature {j} is not finite ({})",
                    self.written + k,
                    raw[j]
                )));
            }
            let mut row = raw.to_vec();
            l2_normalize(&mut row);
            l2_normalize(&mut row);
            match self.dtype {
                IndexDtype::F32 => row
                    .iter()
                    .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
                IndexDtype::F16 => row
                    .iter()
                    .for_each(|v| bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
            }
        }
        self.w.write_bytes(&bytes)?;
        self.written += rows;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if self.written != self.count {
            return Err(GscoError::Invalid(format!(
                "{} of {} cases written",
                self.written, self.count
            )));
        }
        self.w.end_tensor()?;
        self.w.finish()?;
        Ok(())
    }
}

/// One retrieved reference case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    /// Row in the reference set (upstream's train index).
    pub index: usize,
    /// Cosine distance `1 − cos` (scikit-learn's; smaller is more similar).
    pub distance: f32,
}

/// An opened index (memory-mapped).
pub struct Index {
    pub path: PathBuf,
    pub meta: IndexMeta,
    pub labels: Labels,
    file: GgufFile,
    features_offset: usize,
}

/// Bytes of index rows uploaded per matmul.
const CHUNK_BYTES: usize = 32 << 20;

impl Index {
    /// Opens and checks an index file: its kind, version, every key, tensor types, shapes and label values.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &Path) -> Result<Index> {
        let file = GgufFile::open(path)
            .map_err(|e| index_err(path, format!("not a readable index: {e}")))?;
        Index::from_gguf(file, path)
    }

    /// An index file already read into memory (the browser); `name` stands for its path in messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Index> {
        let path = Path::new(name);
        let file = GgufFile::from_vec(bytes, name)
            .map_err(|e| index_err(path, format!("not a readable index: {e}")))?;
        Index::from_gguf(file, path)
    }

    fn from_gguf(file: GgufFile, path: &Path) -> Result<Index> {
        let h = &file.header;
        let get_str = |k: &str| {
            h.get_str(k)
                .map(str::to_string)
                .map_err(|e| index_err(path, format!("key {k}: {e}")))
        };
        let arch = get_str(keys::ARCHITECTURE)?;
        if arch != keys::ARCHITECTURE_VALUE {
            return Err(index_err(
                path,
                format!(
                    "{} is {arch:?}, not {:?} (a model file, not an index?)",
                    keys::ARCHITECTURE,
                    keys::ARCHITECTURE_VALUE
                ),
            ));
        }
        let version = h
            .get_u32(keys::VERSION)
            .map_err(|e| index_err(path, format!("key {}: {e}", keys::VERSION)))?;
        if version != INDEX_VERSION {
            return Err(index_err(
                path,
                format!("version {version}; this build reads version {INDEX_VERSION}"),
            ));
        }
        let feature_mode = FeatureMode::parse(&get_str(keys::FEATURE_MODE)?)
            .ok_or_else(|| index_err(path, format!("key {}: unknown mode", keys::FEATURE_MODE)))?;
        let task = Task::parse(&get_str(keys::TASK)?)
            .ok_or_else(|| index_err(path, format!("key {}: unknown task", keys::TASK)))?;
        let label_names: Vec<String> = h
            .get_str_array(keys::LABEL_NAMES)
            .map_err(|e| index_err(path, format!("key {}: {e}", keys::LABEL_NAMES)))?
            .into_iter()
            .map(str::to_string)
            .collect();
        let lt = h
            .tensor(keys::LABELS_TENSOR)
            .ok_or_else(|| index_err(path, format!("no tensor {}", keys::LABELS_TENSOR)))?
            .clone();
        let ft = h
            .tensor(keys::FEATURES_TENSOR)
            .ok_or_else(|| index_err(path, format!("no tensor {}", keys::FEATURES_TENSOR)))?
            .clone();
        let dtype = match ft.ty {
            GgmlType::F32 => IndexDtype::F32,
            GgmlType::F16 => IndexDtype::F16,
            t => {
                return Err(index_err(
                    path,
                    format!(
                        "{} has type {}; expected F32 or F16",
                        keys::FEATURES_TENSOR,
                        t.name()
                    ),
                ))
            }
        };
        if lt.ty != GgmlType::I32 || lt.dims.len() != 2 || ft.dims.len() != 2 {
            return Err(index_err(path, format!("tensor shapes/types: labels {:?} {:?}, features {:?} {:?}; expected I32 [columns, N] and [D, N]", lt.ty, lt.dims, ft.ty, ft.dims)));
        }
        let (columns, n, d) = (
            lt.dims[0] as usize,
            lt.dims[1] as usize,
            ft.dims[0] as usize,
        );
        if n == 0 || d == 0 {
            return Err(index_err(
                path,
                format!("empty index: {n} cases of dimension {d}"),
            ));
        }
        if ft.dims[1] as usize != n {
            return Err(index_err(
                path,
                format!("{} cases of labels but {} of features", n, ft.dims[1]),
            ));
        }
        let want_cols = if task == Task::MultiClass {
            1
        } else {
            label_names.len()
        };
        if columns != want_cols || label_names.is_empty() {
            return Err(index_err(
                path,
                format!(
                    "{columns} label columns for a {} index of {} label names",
                    task.as_str(),
                    label_names.len()
                ),
            ));
        }
        let lab_bytes = file
            .try_tensor_data(&lt)
            .map_err(|e| index_err(path, e.to_string()))?;
        let values: Vec<u32> = lab_bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
            .collect();
        let labels = Labels { columns, values };
        labels
            .check(path, task, label_names.len())
            .map_err(|e| index_err(path, format!("labels: {e}")))?;
        // Bounds of the feature data (checked against the file length by the GGUF reader).
        file.try_tensor_data(&ft)
            .map_err(|e| index_err(path, e.to_string()))?;
        let features_offset = (h.data_offset + ft.offset) as usize;
        let meta = IndexMeta {
            specialist_name: get_str(keys::SPECIALIST_NAME)?,
            specialist_architecture: get_str(keys::SPECIALIST_ARCH)?,
            specialist_sha256: get_str(keys::SPECIALIST_SHA256)?,
            feature_mode,
            feature_dim: d,
            task,
            label_names,
            source: get_str(keys::SOURCE).unwrap_or_default(),
            count: n,
            dtype,
        };
        Ok(Index {
            path: path.to_path_buf(),
            meta,
            labels,
            file,
            features_offset,
        })
    }

    /// Refuses a specialist other than the one that built the index (weights hash), or whose features
    /// have another dimension.
    pub fn check_specialist(&self, s: &Specialist) -> Result<()> {
        let m = &self.meta;
        if m.specialist_sha256 != s.weights_sha256
            || m.specialist_architecture != s.config.architecture_name
        {
            return Err(GscoError::WrongSpecialist {
                path: self.path.clone(),
                index_specialist: m.specialist_name.clone(),
                index_arch: m.specialist_architecture.clone(),
                index_sha: m.specialist_sha256.chars().take(12).collect(),
                given: s.name(),
                given_arch: s.config.architecture_name.clone(),
                given_sha: s.weights_sha256.chars().take(12).collect(),
            });
        }
        if m.label_names != s.config.label_names {
            return Err(index_err(
                &self.path,
                format!(
                    "label names {:?} differ from {}'s {:?}",
                    m.label_names,
                    s.name(),
                    s.config.label_names
                ),
            ));
        }
        let d = s.feature_dim(m.feature_mode);
        if d != m.feature_dim {
            return Err(index_err(
                &self.path,
                format!(
                    "features of dimension {}, but {} gives {d} in {} mode",
                    m.feature_dim,
                    s.name(),
                    m.feature_mode.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Label string of case `i` (multi-class: its name; multi-label: positive names joined by `/`, or `none`).
    pub fn label_string(&self, i: usize) -> String {
        crate::prompt::label_string(self.labels.row(i), self.meta.task, &self.meta.label_names)
    }

    fn rows_f32(&self, r0: usize, r1: usize) -> Vec<f32> {
        let d = self.meta.feature_dim;
        let bytes = self.file.primary_bytes();
        match self.meta.dtype {
            IndexDtype::F32 => {
                let b =
                    &bytes[self.features_offset + r0 * d * 4..self.features_offset + r1 * d * 4];
                // GGUF aligns tensor data to 32 bytes, so the mapped rows are f32-aligned: one copy, no
                // per-element decoding (little-endian targets; others decode).
                match bytemuck::try_cast_slice::<u8, f32>(b) {
                    Ok(v) if cfg!(target_endian = "little") => v.to_vec(),
                    _ => b
                        .chunks_exact(4)
                        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                        .collect(),
                }
            }
            IndexDtype::F16 => {
                let b =
                    &bytes[self.features_offset + r0 * d * 2..self.features_offset + r1 * d * 2];
                match bytemuck::try_cast_slice::<u8, half::f16>(b) {
                    Ok(h) if cfg!(target_endian = "little") => {
                        use half::slice::HalfFloatSliceExt;
                        let mut out = vec![0f32; h.len()];
                        h.convert_to_f32_slice(&mut out);
                        out
                    }
                    _ => b
                        .chunks_exact(2)
                        .map(|x| half::f16::from_le_bytes([x[0], x[1]]).to_f32())
                        .collect(),
                }
            }
        }
    }

    /// Exact cosine top-`top_n` for each query (`queries`: `Q · D` raw features), nearest first, ties to
    /// the lower index. Index rows are uploaded in chunks and multiplied with the queries on `device`.
    /// Blocks until the results are read back (native only; the browser uses [`Index::search_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn search(
        &self,
        queries: &[f32],
        top_n: usize,
        device: &Device,
    ) -> Result<Vec<Vec<Neighbor>>> {
        pollster::block_on(self.search_async(queries, top_n, device))
    }

    /// [`Index::search`] with asynchronous readback (WebGPU's `mapAsync`).
    pub async fn search_async(
        &self,
        queries: &[f32],
        top_n: usize,
        device: &Device,
    ) -> Result<Vec<Vec<Neighbor>>> {
        let d = self.meta.feature_dim;
        if queries.is_empty() || queries.len() % d != 0 {
            return Err(GscoError::Invalid(format!(
                "{} query values for dimension {d}",
                queries.len()
            )));
        }
        if top_n == 0 || top_n > self.meta.count {
            return Err(GscoError::Invalid(format!(
                "--top-n {top_n}: must be between 1 and the {} cases of the index",
                self.meta.count
            )));
        }
        let nq = queries.len() / d;
        let mut q = queries.to_vec();
        for row in q.chunks_exact_mut(d) {
            l2_normalize(row);
            l2_normalize(row);
        }
        // Queries as the right-hand side `[D, Q]`: each chunk is then one `[C, D] × [D, Q]` product over
        // index rows as stored (row-major, contiguous), with no transposed copy of the big operand.
        let mut q_t = vec![0f32; q.len()];
        for (i, row) in q.chunks_exact(d).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                q_t[j * nq + i] = v;
            }
        }
        let qt = Tensor::<2>::from_data(TensorData::new(q_t, [d, nq]), device);
        let chunk = (CHUNK_BYTES / (d * 4)).max(1);
        let mut best: Vec<Vec<Neighbor>> = vec![Vec::with_capacity(top_n + 1); nq];
        let mut r0 = 0;
        while r0 < self.meta.count {
            let r1 = (r0 + chunk).min(self.meta.count);
            let rows = Tensor::<2>::from_data(
                TensorData::new(self.rows_f32(r0, r1), [r1 - r0, d]),
                device,
            );
            // `[C, Q]`: row k holds case r0 + k against every query.
            let sims: Vec<f32> = rows
                .matmul(qt.clone())
                .into_data_async()
                .await
                .map_err(|e| GscoError::Invalid(format!("reading similarities back: {e:?}")))?
                .try_into_vec::<f32>()
                .map_err(|e| GscoError::Invalid(format!("reading similarities back: {e:?}")))?;
            for (qi, list) in best.iter_mut().enumerate() {
                for k in 0..r1 - r0 {
                    let s = sims[k * nq + qi];
                    // sklearn: S *= −1; S += 1; clip(S, 0, 2), all in float32.
                    let dist = (-s + 1.0).clamp(0.0, 2.0);
                    let dist = if dist.is_nan() { f32::INFINITY } else { dist };
                    if list.len() == top_n && dist >= list[top_n - 1].distance {
                        continue;
                    }
                    // Insert after every entry with distance ≤ dist: equal distances keep the lower index first.
                    let pos = list.partition_point(|n| n.distance <= dist);
                    list.insert(
                        pos,
                        Neighbor {
                            index: r0 + k,
                            distance: dist,
                        },
                    );
                    list.truncate(top_n);
                }
            }
            r0 = r1;
        }
        Ok(best)
    }
}
