use std::path::{Path, PathBuf};

#[cfg(feature = "mmap")]
use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::header::{GgufHeader, TensorInfo};

/// A GGUF file with a validated header, memory-mapped ([`GgufFile::open`]: tensor data is borrowed straight
/// from the page cache) or held in memory ([`GgufFile::from_vec`]: the browser, where there is no mmap).
#[derive(Debug)]
pub struct GgufFile {
    pub header: GgufHeader,
    map: Storage,
    path: PathBuf,
}

#[derive(Debug)]
enum Storage {
    #[cfg(feature = "mmap")]
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(feature = "mmap")]
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

impl GgufFile {
    /// A file already read into memory; `name` stands for its path in messages. Same checks as `open`.
    pub fn from_vec(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Self> {
        let header = GgufHeader::from_bytes(&bytes)?;
        Ok(GgufFile {
            header,
            map: Storage::Owned(bytes),
            path: name.into(),
        })
    }

    /// Maps the file, parses the header and checks every tensor lies inside it.
    #[cfg(feature = "mmap")]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| GgufError::io("opening", &path, e))?;
        // SAFETY: the map is read-only. If another process truncates or rewrites the file while it is
        // mapped, reads may fault or see new bytes; that is inherent to mmap and accepted for model files,
        // which are written atomically (see GgufWriter) and never modified in place.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io("memory-mapping", &path, e))?;
        let header = GgufHeader::from_bytes(&map)?;
        Ok(GgufFile {
            header,
            map: Storage::Mapped(map),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// Data of a tensor from this file's header.
    ///
    /// # Panics
    /// If `t` does not describe a tensor inside this file (e.g. it came from another header) — an API misuse,
    /// not a property of the file, since all of this file's tensors were bounds-checked by `open`.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.try_tensor_data(t).unwrap_or_else(|e| {
            panic!(
                "tensor_data called with a TensorInfo not from {}: {e}",
                self.path.display()
            )
        })
    }

    /// Non-panicking [`GgufFile::tensor_data`].
    pub fn try_tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let r = self.header.tensor_range(t)?;
        let len = self.map.len() as u64;
        if r.end > len {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                start: r.start,
                end: r.end,
                file_len: len,
            });
        }
        Ok(&self.map[r.start as usize..r.end as usize])
    }

    /// Data of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }
}
