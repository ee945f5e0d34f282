//! Labelled image sets: a MedMNIST `.npz` split (upstream's format: `{split}_images` uint8 `[N, S, S, 3]` or
//! `[N, S, S]`, `{split}_labels` integers `[N, L]`) read as a stream, or a folder of images with a labels CSV.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use meddr_image::RgbImage;
use meddr_specialist::Task;
use npyz::npz::NpzArchive;

use crate::error::{data_err, GscoError, Result};

/// Labels of a set: `columns` values per image (1 = class index; L = one 0/1 flag per label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub columns: usize,
    pub values: Vec<u32>,
}

impl Labels {
    pub fn len(&self) -> usize {
        self.values.len() / self.columns.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.values[i * self.columns..(i + 1) * self.columns]
    }

    /// Checks the labels against a specialist's task and classes.
    pub fn check(&self, path: &Path, task: Task, num_classes: usize) -> Result<()> {
        match task {
            Task::MultiClass => {
                if self.columns != 1 {
                    return Err(data_err(path, format!("labels have {} columns; a multi-class specialist needs 1 (the class index)", self.columns)));
                }
                if let Some((i, v)) = self
                    .values
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v as usize >= num_classes)
                {
                    return Err(data_err(path, format!("label {v} of image {i} is not a class of this specialist (num_classes {num_classes})")));
                }
            }
            Task::MultiLabel => {
                if self.columns != num_classes {
                    return Err(data_err(path, format!("labels have {} columns; this multi-label specialist has {num_classes} labels", self.columns)));
                }
                if let Some((i, v)) = self.values.iter().enumerate().find(|(_, &v)| v > 1) {
                    return Err(data_err(
                        path,
                        format!(
                            "multi-label flag {v} at image {} is not 0 or 1",
                            i / self.columns
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Largest image side accepted from an `.npz` (MedMNIST+ goes up to 224).
pub const MAX_NPZ_SIDE: u64 = 4096;

/// One split of a MedMNIST `.npz` file. Labels are read at open; images are streamed by
/// [`MedMnistSplit::for_each_batch`].
pub struct MedMnistSplit {
    pub path: PathBuf,
    pub split: String,
    pub count: usize,
    /// Image side S (and whether the images are grey `[N, S, S]`).
    pub side: u32,
    pub grey: bool,
    pub labels: Labels,
    archive: NpzArchive<BufReader<File>>,
}

fn zip_err(path: &Path, e: std::io::Error) -> GscoError {
    data_err(path, format!("not a readable .npz (zip) file: {e}"))
}

impl MedMnistSplit {
    /// Opens `{split}_images` and `{split}_labels`, checking keys, dtypes, shapes and the count agreement.
    pub fn open(path: &Path, split: &str) -> Result<MedMnistSplit> {
        let mut archive = NpzArchive::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => GscoError::Io {
                path: path.to_path_buf(),
                cause: e,
            },
            _ => zip_err(path, e),
        })?;
        let names: Vec<String> = archive.array_names().map(str::to_string).collect();
        let img_key = format!("{split}_images");
        let lab_key = format!("{split}_labels");
        for key in [&img_key, &lab_key] {
            if !names.iter().any(|n| n == key) {
                return Err(data_err(path, format!("no array `{key}` (arrays in the file: {}); MedMNIST files hold train_/val_/test_ images and labels", names.join(", "))));
            }
        }
        // Images: only the header here.
        let (count, side, grey) = {
            let npy = archive
                .by_name(&img_key)
                .map_err(|e| zip_err(path, e))?
                .ok_or_else(|| data_err(path, format!("no array `{img_key}`")))?;
            let dtype = npy.dtype().descr().trim_matches('\'').to_string();
            if !matches!(dtype.as_str(), "|u1" | "<u1" | ">u1") {
                return Err(data_err(
                    path,
                    format!("`{img_key}` has dtype {dtype}; MedMNIST images are uint8 (|u1)"),
                ));
            }
            if npy.order() != npyz::Order::C {
                return Err(data_err(
                    path,
                    format!("`{img_key}` is stored in Fortran order; expected C order"),
                ));
            }
            let shape = npy.shape().to_vec();
            let ok = match shape.as_slice() {
                [_, h, w, 3] | [_, h, w] => h == w && *h > 0 && *h <= MAX_NPZ_SIDE,
                _ => false,
            };
            if !ok {
                return Err(data_err(path, format!("`{img_key}` has shape {shape:?}; expected [N, S, S, 3] or [N, S, S] with 0 < S ≤ {MAX_NPZ_SIDE}")));
            }
            (shape[0] as usize, shape[1] as u32, shape.len() == 3)
        };
        let labels = {
            let npy = archive
                .by_name(&lab_key)
                .map_err(|e| zip_err(path, e))?
                .ok_or_else(|| data_err(path, format!("no array `{lab_key}`")))?;
            let shape = npy.shape().to_vec();
            let columns = match shape.as_slice() {
                [n, l] if *l > 0 && *l <= 4096 => {
                    check_count(path, &lab_key, *n, count)?;
                    *l as usize
                }
                [n] => {
                    check_count(path, &lab_key, *n, count)?;
                    1
                }
                _ => {
                    return Err(data_err(
                        path,
                        format!("`{lab_key}` has shape {shape:?}; expected [N, L] (N = {count})"),
                    ))
                }
            };
            let descr = npy.dtype().descr().trim_matches('\'').to_string();
            let values = read_int_labels(npy, &descr)
                .map_err(|m| data_err(path, format!("`{lab_key}`: {m}")))?;
            Labels { columns, values }
        };
        if labels.len() != count {
            return Err(data_err(
                path,
                format!(
                    "`{lab_key}` holds {} labels for {count} images",
                    labels.len()
                ),
            ));
        }
        Ok(MedMnistSplit {
            path: path.to_path_buf(),
            split: split.to_string(),
            count,
            side,
            grey,
            labels,
            archive,
        })
    }

    /// Streams the images in order, `batch` at a time (the last batch may be shorter), as RGB (grey images
    /// replicated, as Pillow's `convert('RGB')` does). `f(first_index, images)`.
    pub fn for_each_batch(
        &mut self,
        batch: usize,
        mut f: impl FnMut(usize, &[RgbImage]) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let key = format!("{}_images", self.split);
        let npy = self
            .archive
            .by_name(&key)
            .map_err(|e| zip_err(&path, e))?
            .ok_or_else(|| data_err(&path, format!("no array `{key}`")))?;
        let mut reader = npy.into_inner();
        let s = self.side as usize;
        let channels = if self.grey { 1 } else { 3 };
        let per = s * s * channels;
        let mut raw = vec![0u8; per];
        let mut start = 0;
        while start < self.count {
            let n = batch.max(1).min(self.count - start);
            let mut images = Vec::with_capacity(n);
            for k in 0..n {
                reader.read_exact(&mut raw).map_err(|e| {
                    data_err(
                        &path,
                        format!(
                            "image {} of `{key}`: {e} (file truncated or corrupt?)",
                            start + k
                        ),
                    )
                })?;
                let data = if self.grey {
                    raw.iter().flat_map(|&g| [g, g, g]).collect()
                } else {
                    raw.clone()
                };
                images.push(RgbImage {
                    width: self.side,
                    height: self.side,
                    data,
                });
            }
            f(start, &images)?;
            start += n;
        }
        Ok(())
    }
}

fn check_count(path: &Path, key: &str, n: u64, count: usize) -> Result<()> {
    if n != count as u64 {
        return Err(data_err(
            path,
            format!("`{key}` has {n} rows but the images have {count}"),
        ));
    }
    Ok(())
}

/// Integer labels of any numpy integer dtype, as u32 (negative or larger values are refused).
fn read_int_labels<R: Read>(
    npy: npyz::NpyFile<R>,
    descr: &str,
) -> std::result::Result<Vec<u32>, String> {
    let n = npy.len();
    if n > 1 << 28 {
        return Err(format!("{n} label values is above the 2^28 limit"));
    }
    macro_rules! conv {
        ($t:ty) => {{
            let v: Vec<$t> = npy.into_vec::<$t>().map_err(|e| e.to_string())?;
            v.into_iter()
                .map(|x| {
                    u32::try_from(x)
                        .map_err(|_| format!("label value {x} is negative or too large"))
                })
                .collect()
        }};
    }
    match descr {
        "|u1" | "<u1" => conv!(u8),
        "|i1" | "<i1" => conv!(i8),
        "<u2" => conv!(u16),
        "<i2" => conv!(i16),
        "<u4" => conv!(u32),
        "<i4" => conv!(i32),
        "<u8" => conv!(u64),
        "<i8" => conv!(i64),
        "|b1" => {
            let v: Vec<bool> = npy.into_vec::<bool>().map_err(|e| e.to_string())?;
            Ok(v.into_iter().map(u32::from).collect())
        }
        other => Err(format!("dtype {other}; labels must be integers")),
    }
}

/// A folder of images with a CSV of labels: header `image,label`; `image` is a path relative to the folder;
/// `label` is a label name or a class index (multi-class), or label names joined by `/` (`none` or empty
/// for no label) for multi-label specialists.
pub struct FolderSet {
    pub dir: PathBuf,
    pub csv: PathBuf,
    pub files: Vec<PathBuf>,
    pub labels: Labels,
}

impl FolderSet {
    pub fn open(
        dir: &Path,
        csv_path: &Path,
        label_names: &[String],
        task: Task,
    ) -> Result<FolderSet> {
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(csv_path)
            .map_err(|e| data_err(csv_path, format!("cannot read CSV: {e}")))?;
        let headers = rdr
            .headers()
            .map_err(|e| data_err(csv_path, e.to_string()))?
            .clone();
        let col = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                data_err(
                    csv_path,
                    format!(
                        "no `{name}` column (header: {:?}); expected `image,label`",
                        headers.iter().collect::<Vec<_>>()
                    ),
                )
            })
        };
        let (ci, cl) = (col("image")?, col("label")?);
        let mut files = Vec::new();
        let mut values = Vec::new();
        for (row, rec) in rdr.records().enumerate() {
            let line = row + 2;
            let rec = rec.map_err(|e| data_err(csv_path, format!("line {line}: {e}")))?;
            let image = rec.get(ci).unwrap_or("");
            if image.is_empty() {
                return Err(data_err(csv_path, format!("line {line}: empty `image`")));
            }
            let p = Path::new(image);
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(data_err(
                    csv_path,
                    format!(
                        "line {line}: image path {image:?} must stay inside {}",
                        dir.display()
                    ),
                ));
            }
            let label = rec.get(cl).unwrap_or("");
            let find = |name: &str| label_names.iter().position(|l| l == name);
            match task {
                Task::MultiClass => {
                    let idx = find(label).or_else(|| {
                        label
                            .parse::<usize>()
                            .ok()
                            .filter(|&i| i < label_names.len())
                    });
                    let idx = idx.ok_or_else(|| data_err(csv_path, format!("line {line}: label {label:?} is not one of {label_names:?} nor a class index")))?;
                    values.push(idx as u32);
                }
                Task::MultiLabel => {
                    let mut flags = vec![0u32; label_names.len()];
                    if !(label.is_empty() || label == "none") {
                        for name in label.split('/') {
                            let i = find(name.trim()).ok_or_else(|| {
                                data_err(
                                    csv_path,
                                    format!(
                                        "line {line}: label {name:?} is not one of {label_names:?}"
                                    ),
                                )
                            })?;
                            flags[i] = 1;
                        }
                    }
                    values.extend(flags);
                }
            }
            files.push(dir.join(p));
        }
        if files.is_empty() {
            return Err(data_err(csv_path, "no rows"));
        }
        let columns = if task == Task::MultiClass {
            1
        } else {
            label_names.len()
        };
        Ok(FolderSet {
            dir: dir.to_path_buf(),
            csv: csv_path.to_path_buf(),
            files,
            labels: Labels { columns, values },
        })
    }
}
