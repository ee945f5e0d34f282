//! The streaming conversion: one pass over the checkpoint, a bounded chunk of rows in memory at a time,
//! rows quantized in parallel, bytes appended to the GGUF as they are produced.

use crate::checkpoint::{CheckpointConfig, ShardSet, SourceTensor};
use crate::error::{QuantizeError, Result};
use crate::metadata::{self, MetadataInput};
use crate::plan::{self, PlannedTensor, RowOrder, Source};
use crate::progress::Progress;
use crate::recipe::FileType;
use meddr_gguf::{GgmlType, GgufWriter, TensorSpec, WriteOptions};
use meddr_quants::QuantType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Target elements per chunk: 4 Mi f32 = 16 MiB, plus its quantized copy — small against any model.
const CHUNK_ELEMS: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub ftype: FileType,
    pub vision_type: Option<GgmlType>,
    pub threads: Option<usize>,
    pub force: bool,
    /// Show progress (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct Summary {
    /// The language model (llama.cpp loads it as a text model).
    pub output: PathBuf,
    /// The vision tower and projector (`<stem>.mmproj.gguf` beside `output`), when the checkpoint has one.
    pub mmproj: Option<PathBuf>,
    /// Bytes of the mmproj file (0 without one); `output_bytes` is the language model's.
    pub mmproj_bytes: u64,
    pub tensors: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub seconds: f64,
    pub lora_merged: bool,
    pub vision_layers_kept: usize,
    /// [`crate::plan::Plan::fallback_report`]: what fell back from the recipe's type, for the user.
    pub fallback_report: Option<String>,
}

pub fn quant_type(ty: GgmlType) -> Result<QuantType> {
    QuantType::from_ggml_id(ty as u32)
        .ok_or_else(|| QuantizeError::Usage(format!("block type {} cannot be written", ty.name())))
}

/// Quantizes `checkpoint` to `ftype` as `dir/<name>-<ftype>.gguf` (and its `.mmproj.gguf`) once per process:
/// later calls with the same output return at once, and concurrent callers wait for the first. For test
/// suites and tools that need a GGUF of a fixture checkpoint (no progress output, earlier files replaced).
/// Errors: those of [`quantize_checkpoint`], or creating `dir`; a failed call is not remembered.
pub fn quantize_once(checkpoint: &Path, dir: &Path, name: &str, ftype: FileType) -> Result<PathBuf> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static DONE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let out = dir.join(format!("{name}-{}.gguf", ftype.name()));
    // Held while quantizing, so a second caller waits instead of writing the same file.
    let mut done = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !done.contains(&out) {
        std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
        let opts = Options {
            ftype,
            vision_type: None,
            threads: None,
            force: true,
            progress: false,
        };
        quantize_checkpoint(checkpoint, &out, &opts)?;
        done.insert(out.clone());
    }
    Ok(out)
}

/// Converts a checkpoint into llama.cpp's two-file layout: the language model at `output` and the vision
/// tower + projector at [`meddr_gguf::mmproj_path_for`]`(output)` (`<stem>.mmproj.gguf`). Both are written
/// under temporary names and renamed only when both are complete; an error leaves neither.
pub fn quantize_checkpoint(dir: &Path, output: &Path, opts: &Options) -> Result<Summary> {
    convert(dir, output, opts, false)
}

/// [`quantize_checkpoint`]'s two files with every tensor declared (names, shapes, types, offsets, all the
/// metadata) but no weight computed or written: the tensors are holes that read as zeros, and
/// [`meddr_gguf::LAYOUT_ONLY_KEY`] marks both files so no loader answers from them. MedDr's full 40B
/// layout at Q4_K_M this way takes seconds and a few MB of disk (its files still report 24 GB), enough for
/// `meddr info`'s memory plan. Only the checkpoint's headers are read.
pub fn write_layout(dir: &Path, output: &Path, opts: &Options) -> Result<Summary> {
    convert(dir, output, opts, true)
}

fn convert(dir: &Path, output: &Path, opts: &Options, layout_only: bool) -> Result<Summary> {
    let start = Instant::now();
    if !dir.is_dir() {
        return Err(QuantizeError::Usage(format!(
            "checkpoint directory {} does not exist",
            dir.display()
        )));
    }
    let mmproj_path = meddr_gguf::mmproj_path_for(output);
    for p in [output, mmproj_path.as_path()] {
        if p.exists() && !opts.force {
            return Err(QuantizeError::OutputExists {
                path: p.to_path_buf(),
            });
        }
    }
    let cfg = CheckpointConfig::from_file(&dir.join("config.json"))?;
    let shards = ShardSet::open(dir)?;
    let mut tokenizer = meddr_tokenizer::TokenizerSpec::from_hf_dir(dir)
        .map_err(|e| QuantizeError::Tokenizer(e.to_string()))?;
    let vision_type = opts
        .vision_type
        .unwrap_or_else(|| opts.ftype.default_vision_type());
    let plan = plan::build(&cfg, &shards, opts.ftype, vision_type)?;
    // Embedding rows past len(tokenizer) (padded checkpoints) get [PAD{id}] tokens, as llama.cpp's converter
    // writes them; fewer rows than tokens cannot be a working model.
    if tokenizer.tokens.len() > plan.vocab {
        return Err(QuantizeError::Tokenizer(format!(
            "the tokenizer has {} tokens but embed_tokens has only {} rows",
            tokenizer.tokens.len(),
            plan.vocab
        )));
    }
    tokenizer
        .pad_to(plan.vocab)
        .map_err(|e| QuantizeError::Tokenizer(e.to_string()))?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "MedDr".into());
    let md = metadata::build(&MetadataInput {
        name: &name,
        cfg: &cfg,
        plan: &plan,
        ftype: opts.ftype,
        tokenizer: &tokenizer,
    })
    .map_err(QuantizeError::Tokenizer)?;

    let specs = |vision: bool| -> Vec<TensorSpec> {
        plan.tensors
            .iter()
            .filter(|t| meddr_gguf::is_vision_tensor(&t.name) == vision)
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect()
    };
    let (text_specs, proj_specs) = (specs(false), specs(true));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| QuantizeError::Usage(format!("cannot start worker threads: {e}")))?;
    let wopts = WriteOptions {
        overwrite: opts.force,
        ..WriteOptions::default()
    };
    let mut md = md;
    if layout_only {
        md.push((
            meddr_gguf::LAYOUT_ONLY_KEY.to_string(),
            meddr_gguf::Value::Bool(true),
        ));
    }
    let (mut text_md, mut proj_md) = metadata::split(md);
    let id = split_id(dir, &text_md, &proj_md, &text_specs, &proj_specs);
    for md in [&mut text_md, &mut proj_md] {
        md.push((
            metadata::SPLIT_ID_KEY.to_string(),
            meddr_gguf::Value::String(id.clone()),
        ));
    }
    let mut writer = GgufWriter::create_with(output, wopts.clone(), text_md, text_specs)?;
    let mut proj_writer = if proj_specs.is_empty() {
        None
    } else {
        Some(GgufWriter::create_with(
            &mmproj_path,
            wopts,
            proj_md,
            proj_specs,
        )?)
    };
    let progress = Progress::new(plan.input_bytes, opts.progress && !layout_only);
    let mut chunk = ChunkBuffers::default();
    for t in &plan.tensors {
        let w = match proj_writer.as_mut() {
            Some(p) if meddr_gguf::is_vision_tensor(&t.name) => p,
            _ => &mut writer,
        };
        if layout_only {
            w.skip_tensor(&t.name)?;
        } else {
            pool.install(|| write_tensor(&shards, t, w, &progress, &mut chunk))?;
        }
    }
    // The mmproj is renamed into place first; should the language model then fail, the mmproj goes too, so
    // an error never leaves half a model under the final names.
    let mmproj = match proj_writer {
        Some(p) => {
            p.finish()?;
            Some(mmproj_path)
        }
        None => None,
    };
    if let Err(e) = writer.finish() {
        if let Some(p) = &mmproj {
            let _ = std::fs::remove_file(p);
        }
        return Err(e.into());
    }
    progress.finish();
    let output_bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let mmproj_bytes = mmproj
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    Ok(Summary {
        output: output.to_path_buf(),
        mmproj,
        mmproj_bytes,
        tensors: plan.tensors.len(),
        input_bytes: plan.input_bytes,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
        lora_merged: plan.lora.is_some(),
        vision_layers_kept: plan.vision_layers_kept,
        fallback_report: plan.fallback_report(),
    })
}

/// [`metadata::SPLIT_ID_KEY`]'s value: 16 hex digits.
fn split_id(
    dir: &Path,
    text_md: &[(String, meddr_gguf::Value)],
    proj_md: &[(String, meddr_gguf::Value)],
    text_specs: &[TensorSpec],
    proj_specs: &[TensorSpec],
) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: stable within one build, which is all an id compared between two files
    // written by the same run needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in text_md.iter().chain(proj_md) {
        k.hash(&mut h);
        format!("{v:?}").hash(&mut h);
    }
    for t in text_specs.iter().chain(proj_specs) {
        (&t.name, &t.dims, t.ty as u32).hash(&mut h);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<(String, u64, Option<std::time::SystemTime>)> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().ok(),
                ))
            })
            .collect();
        files.sort();
        files.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

#[derive(Default)]
struct ChunkBuffers {
    scratch: Vec<u8>,
    rows: Vec<f32>,
    permuted: Vec<f32>,
    out: Vec<u8>,
}

fn write_tensor(
    shards: &ShardSet,
    t: &PlannedTensor,
    writer: &mut GgufWriter,
    progress: &Progress,
    buf: &mut ChunkBuffers,
) -> Result<()> {
    let qt = quant_type(t.ty)?;
    let row_bytes =
        meddr_quants::quantized_size(qt, t.row_len).map_err(|cause| QuantizeError::Quant {
            name: t.name.clone(),
            cause,
        })?;
    let (base, lora) = match &t.source {
        Source::Plain(n) => (&shards.tensors[n], None),
        Source::Lora { base, a, b, scale } => {
            let ta = &shards.tensors[a];
            let tb = &shards.tensors[b];
            let av = shards.read_all_f32(ta)?;
            let bv = shards.read_all_f32(tb)?;
            progress.add(ta.n_bytes + tb.n_bytes);
            (&shards.tensors[base], Some((av, bv, ta.shape[0], *scale)))
        }
    };
    let align = match t.order {
        RowOrder::Same => 1,
        RowOrder::RopePairs { head_dim } => head_dim,
    };
    let mut chunk_rows = (CHUNK_ELEMS / t.row_len.max(1)).max(1);
    chunk_rows = (chunk_rows / align).max(1) * align;
    writer.begin_tensor(&t.name)?;
    let mut r0 = 0;
    while r0 < t.rows {
        let r1 = (r0 + chunk_rows).min(t.rows);
        let n = (r1 - r0) * t.row_len;
        buf.rows.resize(n, 0.0);
        shards.read_f32(base, r0 * t.row_len, n, &mut buf.scratch, &mut buf.rows)?;
        if let Some((a, b, rank, scale)) = &lora {
            merge_lora(&mut buf.rows, r0, t.row_len, a, b, *rank, *scale);
        }
        let rows: &[f32] = match t.order {
            RowOrder::Same => &buf.rows,
            RowOrder::RopePairs { head_dim } => {
                permute_rope_pairs(&buf.rows, &mut buf.permuted, t.row_len, head_dim);
                &buf.permuted
            }
        };
        buf.out.resize((r1 - r0) * row_bytes, 0);
        buf.out
            .par_chunks_mut(row_bytes)
            .zip(rows.par_chunks(t.row_len))
            .enumerate()
            .try_for_each(|(i, (dst, src))| {
                meddr_quants::quantize_into(qt, src, dst).map_err(|cause| QuantizeError::Quant {
                    name: format!("{} (source {}, row {})", t.name, base.name, r0 + i),
                    cause,
                })
            })?;
        writer.write_bytes(&buf.out)?;
        progress.add(((r1 - r0) * t.row_len * base.dtype.size()) as u64);
        r0 = r1;
    }
    writer.end_tensor()?;
    Ok(())
}

/// `W[r] += scale · Σ_k B[r, k] · A[k]` for the rows of this chunk, in f32 like PEFT's merge.
fn merge_lora(
    rows: &mut [f32],
    first_row: usize,
    row_len: usize,
    a: &[f32],
    b: &[f32],
    rank: usize,
    scale: f32,
) {
    rows.par_chunks_mut(row_len).enumerate().for_each(|(i, w)| {
        let r = first_row + i;
        let brow = &b[r * rank..(r + 1) * rank];
        let mut delta = vec![0f32; row_len];
        for (k, &bk) in brow.iter().enumerate() {
            let arow = &a[k * row_len..(k + 1) * row_len];
            for (d, &x) in delta.iter_mut().zip(arow) {
                *d += bk * x;
            }
        }
        for (x, d) in w.iter_mut().zip(&delta) {
            *x += scale * d;
        }
    });
}

/// llama.cpp's q/k permutation on whole heads: output row `h·hd + 2i + j` ← source row `h·hd + j·hd/2 + i`.
pub fn permute_rope_pairs(src: &[f32], dst: &mut Vec<f32>, row_len: usize, head_dim: usize) {
    dst.resize(src.len(), 0.0);
    let rows = src.len() / row_len;
    let half = head_dim / 2;
    for out_row in 0..rows {
        let h = out_row / head_dim;
        let within = out_row % head_dim;
        let (i, j) = (within / 2, within % 2);
        let src_row = h * head_dim + j * half + i;
        dst[out_row * row_len..(out_row + 1) * row_len]
            .copy_from_slice(&src[src_row * row_len..(src_row + 1) * row_len]);
    }
}

/// For tests and tools: the f32 values the plan would write for one tensor, before quantization.
pub fn planned_tensor_f32(shards: &ShardSet, t: &PlannedTensor) -> Result<Vec<f32>> {
    let base: &SourceTensor = match &t.source {
        Source::Plain(n) | Source::Lora { base: n, .. } => &shards.tensors[n],
    };
    let mut rows = shards.read_all_f32(base)?;
    if let Source::Lora { a, b, scale, .. } = &t.source {
        let ta = &shards.tensors[a];
        let av = shards.read_all_f32(ta)?;
        let bv = shards.read_all_f32(&shards.tensors[b])?;
        merge_lora(&mut rows, 0, t.row_len, &av, &bv, ta.shape[0], *scale);
    }
    Ok(match t.order {
        RowOrder::Same => rows,
        RowOrder::RopePairs { head_dim } => {
            let mut out = Vec::new();
            permute_rope_pairs(&rows, &mut out, t.row_len, head_dim);
            out
        }
    })
}
