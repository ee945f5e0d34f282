use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::header::{align_up, alignment_of, GgufHeader, TensorInfo, GGUF_VERSION};
use crate::types::GgmlType;
use crate::value::Value;

/// A tensor to be written: its offset is computed by the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: impl Into<Vec<u64>>, ty: GgmlType) -> Self {
        TensorSpec {
            name: name.into(),
            dims: dims.into(),
            ty,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Replace an existing file at the final path (checked at `create` and again just before the rename).
    pub overwrite: bool,
    /// Capacity of the write buffer; large buffers keep syscalls few when a quantizer streams small pieces.
    pub buffer_size: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            overwrite: false,
            buffer_size: 8 << 20,
        }
    }
}

/// Streaming GGUF writer. The header (with all offsets) is written first, then tensor data in the declared
/// order, into `.<name>.tmp-<pid>` next to the target; [`GgufWriter::finish`] fsyncs and renames it into
/// place. An error or a drop before `finish` deletes the temporary file, so a partial model never appears
/// under the final name; a killed process leaves its temporary file, which the next writer of the same
/// target removes (it is no longer locked).
#[derive(Debug)]
pub struct GgufWriter {
    header: GgufHeader,
    sizes: Vec<u64>,
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    overwrite: bool,
    /// Absolute position in the file.
    pos: u64,
    /// Index of the next tensor to begin.
    next: usize,
    /// Bytes written of the tensor currently open (`next - 1`), if one is open.
    open: Option<u64>,
    failed: bool,
    finished: bool,
}

impl GgufWriter {
    /// [`GgufWriter::create_with`] with default options (refuses to overwrite).
    pub fn create(
        path: impl AsRef<Path>,
        metadata: Vec<(String, Value)>,
        tensors: Vec<TensorSpec>,
    ) -> Result<Self> {
        Self::create_with(path, WriteOptions::default(), metadata, tensors)
    }

    /// Lays out the file (alignment from `general.alignment` in `metadata`, else 32; the key is written only
    /// if given) and writes the header to the temporary file.
    pub fn create_with(
        path: impl AsRef<Path>,
        opts: WriteOptions,
        metadata: Vec<(String, Value)>,
        tensors: Vec<TensorSpec>,
    ) -> Result<Self> {
        let final_path = path.as_ref().to_path_buf();
        // Never write a file our own reader (or a strict one) refuses.
        for (i, (key, _)) in metadata.iter().enumerate() {
            if let Err(why) = crate::header::validate_key(key) {
                return Err(GgufError::InvalidKey {
                    index: i as u64,
                    key: key.clone(),
                    why,
                });
            }
        }
        let alignment = alignment_of(&metadata)?;
        // llama.cpp and gguf-py only accept a u32 alignment; never write a file they would refuse.
        if let Some(v) = crate::value::lookup(&metadata, crate::header::ALIGNMENT_KEY) {
            if !matches!(v, Value::U32(_)) {
                return Err(crate::value::mismatch(
                    crate::header::ALIGNMENT_KEY,
                    "u32",
                    v,
                ));
            }
        }
        let mut infos = Vec::with_capacity(tensors.len());
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut cursor = 0u64;
        for spec in tensors {
            let info = TensorInfo {
                name: spec.name,
                dims: spec.dims,
                ty: spec.ty,
                offset: cursor,
            };
            let size = info.try_byte_size()?;
            let end = cursor
                .checked_add(size)
                .ok_or_else(|| GgufError::overflow("data section size"))?;
            cursor = align_up(end, alignment, "data section size")?;
            infos.push(info);
            sizes.push(size);
        }
        let mut header = GgufHeader {
            version: GGUF_VERSION,
            metadata,
            tensors: infos,
            alignment,
            data_offset: 0,
        };
        let bytes = header.encode()?;
        header.data_offset = bytes.len() as u64;
        header.validate_layout()?;

        if !opts.overwrite && exists(&final_path)? {
            return Err(GgufError::FileExists { path: final_path });
        }
        let (tmp_path, file) = create_temp(&final_path)?;
        let mut w = GgufWriter {
            header,
            sizes,
            final_path,
            tmp_path,
            out: Some(BufWriter::with_capacity(opts.buffer_size.max(1), file)),
            overwrite: opts.overwrite,
            pos: 0,
            next: 0,
            open: None,
            failed: false,
            finished: false,
        };
        w.raw_write(&bytes)?;
        Ok(w)
    }

    /// Layout being written (offsets, `data_offset`).
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Writes one whole tensor; it must be the next one in declared order and exactly its byte size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.begin_tensor(name)?;
        self.write_bytes(data)?;
        self.end_tensor()
    }

    /// Starts streaming the next tensor in declared order; follow with [`GgufWriter::write_bytes`] calls
    /// and [`GgufWriter::end_tensor`].
    pub fn begin_tensor(&mut self, name: &str) -> Result<()> {
        self.check_usable()?;
        if let Some(open) = self.open {
            let cur = &self.header.tensors[self.next - 1].name;
            let size = self.sizes[self.next - 1];
            return self.fail(format!("begin_tensor({name:?}) while tensor {cur:?} is open ({open} of {size} bytes written)"));
        }
        let Some(expected) = self.header.tensors.get(self.next) else {
            return self.fail(format!(
                "begin_tensor({name:?}): all {} declared tensors are already written",
                self.sizes.len()
            ));
        };
        if expected.name != name {
            let msg = format!(
                "tensors must be written in declared order: expected {:?} next, got {name:?}",
                expected.name
            );
            return self.fail(msg);
        }
        let start = self.header.data_offset + expected.offset;
        if self.pos != start {
            // Cannot happen: end_tensor pads to the next offset.
            return self.fail(format!(
                "internal layout error: at byte {} but tensor {name:?} starts at {start}",
                self.pos
            ));
        }
        self.next += 1;
        self.open = Some(0);
        Ok(())
    }

    /// Declares the next tensor's bytes all zero without writing them: the file gets a hole there (sparse on
    /// filesystems that have them), so a layout-only file of a 24 GB model takes a few MB of disk. For
    /// memory plans and loader tests; the tensor reads back as zeros.
    pub fn skip_tensor(&mut self, name: &str) -> Result<()> {
        self.begin_tensor(name)?;
        let size = self.sizes[self.next - 1];
        let out = self.out.as_mut().expect("checked by begin_tensor");
        let step = i64::try_from(size).map_err(|_| GgufError::overflow("tensor size"));
        let seek = step.and_then(|step| {
            out.seek(SeekFrom::Current(step))
                .map_err(|e| GgufError::io("seeking in", &self.tmp_path, e))
        });
        if let Err(e) = seek {
            self.cleanup();
            return Err(e);
        }
        self.pos += size;
        self.open = Some(size);
        self.end_tensor()
    }

    /// Appends bytes to the open tensor; more than its byte size is an error.
    pub fn write_bytes(&mut self, data: &[u8]) -> Result<()> {
        self.check_usable()?;
        let Some(written) = self.open else {
            return self
                .fail("write_bytes called with no tensor open (call begin_tensor first)".into());
        };
        let i = self.next - 1;
        let size = self.sizes[i];
        let total = written
            .checked_add(data.len() as u64)
            .filter(|&t| t <= size);
        let Some(total) = total else {
            let name = &self.header.tensors[i].name;
            let msg = format!(
                "tensor {name:?}: {} bytes written, expected exactly {size}",
                written as u128 + data.len() as u128
            );
            return self.fail(msg);
        };
        self.raw_write(data)?;
        self.open = Some(total);
        Ok(())
    }

    /// Closes the open tensor after checking it received exactly its byte size, then pads to the alignment.
    pub fn end_tensor(&mut self) -> Result<()> {
        self.check_usable()?;
        let Some(written) = self.open else {
            return self.fail("end_tensor called with no tensor open".into());
        };
        let i = self.next - 1;
        if written != self.sizes[i] {
            let msg = format!(
                "tensor {:?}: {written} bytes written, expected exactly {}",
                self.header.tensors[i].name, self.sizes[i]
            );
            return self.fail(msg);
        }
        self.open = None;
        self.pad()
    }

    /// Checks every declared tensor was written, flushes, fsyncs and renames the temporary file into place.
    pub fn finish(mut self) -> Result<()> {
        self.check_usable()?;
        if self.open.is_some() || self.next < self.sizes.len() {
            let first =
                &self.header.tensors[self.next.saturating_sub(self.open.is_some() as usize)].name;
            let missing = self.sizes.len() - self.next + self.open.is_some() as usize;
            return self.fail(format!(
                "finish: {missing} tensor(s) not completely written, first {first:?}"
            ));
        }
        let out = self.out.take().expect("usable writer has an output");
        let file = match out.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let err = GgufError::io("writing", &self.tmp_path, e.into_error());
                self.cleanup();
                return Err(err);
            }
        };
        // A skipped last tensor leaves the file short of its end: extend it (a hole reads as zeros).
        if let Err(e) = file.set_len(self.pos) {
            self.cleanup();
            return Err(GgufError::io("extending", &self.tmp_path, e));
        }
        if let Err(e) = file.sync_all() {
            self.cleanup();
            return Err(GgufError::io("syncing", &self.tmp_path, e));
        }
        drop(file);
        if !self.overwrite {
            match exists(&self.final_path) {
                Ok(false) => {}
                Ok(true) => {
                    self.cleanup();
                    return Err(GgufError::FileExists {
                        path: self.final_path.clone(),
                    });
                }
                Err(e) => {
                    self.cleanup();
                    return Err(e);
                }
            }
        }
        if let Err(e) = std::fs::rename(&self.tmp_path, &self.final_path) {
            self.cleanup();
            return Err(GgufError::io(
                "renaming temporary file to",
                &self.final_path,
                e,
            ));
        }
        self.finished = true;
        sync_parent_dir(&self.final_path);
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed || self.out.is_none() {
            return Err(GgufError::Writer(format!(
                "writer for {} already failed; its temporary file was removed",
                self.final_path.display()
            )));
        }
        Ok(())
    }

    /// Any error poisons the writer and removes the temporary file at once.
    fn fail<T>(&mut self, msg: String) -> Result<T> {
        self.cleanup();
        Err(GgufError::Writer(msg))
    }

    fn cleanup(&mut self) {
        self.failed = true;
        self.out = None; // close before unlinking (needed on Windows)
        let _ = std::fs::remove_file(&self.tmp_path);
    }

    fn raw_write(&mut self, data: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("checked by callers");
        if let Err(e) = out.write_all(data) {
            let err = GgufError::io("writing", &self.tmp_path, e);
            self.cleanup();
            return Err(err);
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let target = match align_up(self.pos, self.header.alignment, "tensor padding") {
            Ok(t) => t,
            Err(e) => {
                self.cleanup();
                return Err(e);
            }
        };
        const ZEROS: [u8; 256] = [0; 256];
        while self.pos < target {
            let n = ((target - self.pos) as usize).min(ZEROS.len());
            self.raw_write(&ZEROS[..n])?;
        }
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.finished && !self.failed {
            self.cleanup();
        }
    }
}

fn exists(p: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(GgufError::io("checking", p, e)),
    }
}

/// Creates `.<name>.tmp-<pid>` (or `-<pid>-<n>` if taken) in the target's directory, so the final rename
/// stays on one filesystem and is atomic. The file is held under an exclusive lock (`File::try_lock`) for the
/// writer's life; temporary files of this target that nobody holds are left by a killed writer (SIGKILL,
/// power loss) and are removed here, so a rerun cleans up after a crash.
fn create_temp(final_path: &Path) -> Result<(PathBuf, File)> {
    let (tmp, file) = create_temp_file(final_path)?;
    // A platform without file locks (wasm) writes no temporary files of concurrent writers to protect.
    if file.try_lock().is_ok() {
        remove_stale_temps(&tmp);
    }
    Ok((tmp, file))
}

/// Whether `file_name` is one of [`create_temp`]'s names for a target named `name`: `.<name>.tmp-<digits>`,
/// optionally followed by `-<digits>`.
pub(crate) fn is_temp_name_of(file_name: &str, name: &str) -> bool {
    let Some(rest) = file_name
        .strip_prefix('.')
        .and_then(|r| r.strip_prefix(name))
        .and_then(|r| r.strip_prefix(".tmp-"))
    else {
        return false;
    };
    let mut parts = rest.splitn(2, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let first = parts.next();
    match parts.next() {
        None => digits(first),
        second => digits(first) && digits(second),
    }
}

/// Removes the temporary files of `ours`'s target that no live writer holds locked (best effort: a file
/// that cannot be opened, locked or removed stays, and is still named as a temporary file).
fn remove_stale_temps(ours: &Path) {
    let (Some(dir), Some(our_name)) = (ours.parent(), ours.file_name().and_then(|n| n.to_str()))
    else {
        return;
    };
    // `.<name>.tmp-<pid>[-n]` → `<name>`.
    let Some(name) = our_name
        .strip_prefix('.')
        .and_then(|r| r.rfind(".tmp-").map(|i| &r[..i]))
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if n == our_name || !is_temp_name_of(n, name) {
            continue;
        }
        let path = e.path();
        if let Ok(f) = File::open(&path) {
            if f.try_lock().is_ok() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn create_temp_file(final_path: &Path) -> Result<(PathBuf, File)> {
    let name = final_path.file_name().ok_or_else(|| {
        GgufError::Writer(format!(
            "output path {} has no file name",
            final_path.display()
        ))
    })?;
    let dir = match final_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // wasm32-unknown-unknown has no process ids (std::process::id panics there).
    let pid = if cfg!(target_family = "wasm") {
        0
    } else {
        std::process::id()
    };
    for n in 0..1000u32 {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{pid}"));
        if n > 0 {
            tmp_name.push(format!("-{n}"));
        }
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(GgufError::io("creating temporary file", &tmp, e)),
        }
    }
    Err(GgufError::Writer(format!(
        "could not find a free temporary name next to {}",
        final_path.display()
    )))
}

/// Makes the rename durable; best effort because not every platform can open a directory.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::is_temp_name_of;

    #[test]
    fn temp_names() {
        for (n, yes) in [
            (".m.gguf.tmp-123", true),
            (".m.gguf.tmp-123-4", true),
            (".m.gguf.tmp-", false),
            (".m.gguf.tmp-12a", false),
            (".m.gguf.tmp-1-", false),
            (".m.gguf.tmp-1-2-3", false),
            ("m.gguf.tmp-1", false),
            (".n.gguf.tmp-1", false),
            (".m.gguf", false),
        ] {
            assert_eq!(is_temp_name_of(n, "m.gguf"), yes, "{n}");
        }
    }
}
