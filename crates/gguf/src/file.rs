use std::ops::Range;
use std::path::{Path, PathBuf};

#[cfg(feature = "mmap")]
use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::header::{GgufHeader, TensorInfo};

/// A GGUF file with a validated header, memory-mapped ([`GgufFile::open`]: tensor data is borrowed straight
/// from the page cache) or held in memory ([`GgufFile::from_vec`]: the browser, where there is no mmap).
///
/// It may also be a language model and its `mmproj` file seen as one ([`GgufFile::open_model`],
/// [`crate::merge_mmproj`]): `header` is then the merged header, and tensor byte ranges address the two files
/// laid one after the other (the mmproj at [`GgufFile::mmproj_base`]).
#[derive(Debug)]
pub struct GgufFile {
    pub header: GgufHeader,
    parts: Vec<Part>,
}

#[derive(Debug)]
struct Part {
    map: Storage,
    path: PathBuf,
    /// Where this file's byte 0 sits in the merged byte space.
    base: u64,
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

#[cfg(feature = "mmap")]
fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| GgufError::io("opening", path, e))?;
    // SAFETY: the map is read-only. If another process truncates or rewrites the file while it is
    // mapped, reads may fault or see new bytes; that is inherent to mmap and accepted for model files,
    // which are written atomically (see GgufWriter) and never modified in place.
    unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io("memory-mapping", path, e))
}

impl GgufFile {
    /// A file already read into memory; `name` stands for its path in messages. Same checks as `open`.
    pub fn from_vec(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Self> {
        let header = GgufHeader::from_bytes(&bytes)?;
        Ok(GgufFile {
            header,
            parts: vec![Part {
                map: Storage::Owned(bytes),
                path: name.into(),
                base: 0,
            }],
        })
    }

    /// Maps the file, parses the header and checks every tensor lies inside it.
    #[cfg(feature = "mmap")]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let map = map_file(&path)?;
        let header = GgufHeader::from_bytes(&map)?;
        Ok(GgufFile {
            header,
            parts: vec![Part {
                map: Storage::Mapped(map),
                path,
                base: 0,
            }],
        })
    }

    /// A language model and its vision tower: `model`, plus the mmproj file given or, when `mmproj` is `None`,
    /// the first of [`crate::mmproj_candidates`] that exists beside `model` — unless `model` already holds a
    /// vision tower (a single-file GGUF) or is itself an mmproj file (then the error says which file to pass).
    /// Without an mmproj the result is `model` alone (a text model).
    ///
    /// # Errors
    /// Those of [`GgufFile::open`] for either file, and [`GgufError::SplitMismatch`] from
    /// [`crate::merge_mmproj`].
    #[cfg(feature = "mmap")]
    pub fn open_model(model: impl AsRef<Path>, mmproj: Option<&Path>) -> Result<Self> {
        let model = model.as_ref();
        let text = GgufFile::open(model)?;
        let mmproj = match mmproj {
            Some(p) => p.to_path_buf(),
            None => {
                if crate::split::is_mmproj(&text.header) {
                    return Err(GgufError::SplitMismatch {
                        text: model.display().to_string(),
                        mmproj: model.display().to_string(),
                        reason: "this is an mmproj file (the vision tower only); pass the language model \
                                 GGUF, and its mmproj is found beside it"
                            .into(),
                    });
                }
                if crate::split::has_vision_tower(&text.header) {
                    return Ok(text);
                }
                match crate::split::mmproj_candidates(model)
                    .into_iter()
                    .find(|p| p.is_file())
                {
                    Some(p) => p,
                    None => return Ok(text),
                }
            }
        };
        let proj = GgufFile::open(&mmproj)?;
        text.with_mmproj(proj)
    }

    /// Joins an mmproj file to this language model (see [`crate::merge_mmproj`]).
    ///
    /// # Errors
    /// [`GgufError::SplitMismatch`] when either side is already a pair or they cannot be one model.
    pub fn with_mmproj(self, mmproj: GgufFile) -> Result<Self> {
        let names = (
            self.path().display().to_string(),
            mmproj.path().display().to_string(),
        );
        if self.parts.len() != 1 || mmproj.parts.len() != 1 {
            return Err(GgufError::SplitMismatch {
                text: names.0,
                mmproj: names.1,
                reason: "one of them is already a language model + mmproj pair".into(),
            });
        }
        let text_len = self.parts[0].map.len() as u64;
        let (header, base) = crate::split::merge_mmproj(
            &self.header,
            text_len,
            &mmproj.header,
            (&names.0, &names.1),
        )?;
        let mut parts = self.parts;
        let mut proj = mmproj.parts;
        proj[0].base = base;
        parts.append(&mut proj);
        Ok(GgufFile { header, parts })
    }

    /// The language model's path (the only file, unless an mmproj was joined).
    pub fn path(&self) -> &Path {
        &self.parts[0].path
    }

    /// The mmproj file's path, when the vision tower came from one.
    pub fn mmproj_path(&self) -> Option<&Path> {
        self.parts.get(1).map(|p| p.path.as_path())
    }

    /// Where the mmproj file's byte 0 sits in the merged byte space; `None` for a single file.
    pub fn mmproj_base(&self) -> Option<u64> {
        self.parts.get(1).map(|p| p.base)
    }

    /// The first file's bytes: the whole file unless an mmproj was joined (then the language model's only;
    /// use [`GgufFile::slice`] or [`GgufFile::try_tensor_data`] to reach the mmproj's tensors).
    pub fn primary_bytes(&self) -> &[u8] {
        &self.parts[0].map
    }

    /// Length of the (merged) byte space that tensor ranges address: the file's length, or for a pair the
    /// mmproj's base plus its length (pass this where a reader wants "the file length").
    pub fn span_len(&self) -> u64 {
        let last = &self.parts[self.parts.len() - 1];
        last.base + last.map.len() as u64
    }

    /// Bytes on disk, all files together.
    pub fn total_len(&self) -> u64 {
        self.parts.iter().map(|p| p.map.len() as u64).sum()
    }

    /// The bytes at `range` of the (merged) byte space, which must lie inside one file.
    ///
    /// # Errors
    /// [`GgufError::TensorOutOfBounds`]-like range errors, naming `what`.
    pub fn slice(&self, range: Range<u64>, what: &str) -> Result<&[u8]> {
        let part = self
            .parts
            .iter()
            .rev()
            .find(|p| p.base <= range.start)
            .unwrap_or(&self.parts[0]);
        let len = part.map.len() as u64;
        let (start, end) = (
            range.start - part.base.min(range.start),
            range.end.saturating_sub(part.base),
        );
        if range.end < range.start || end > len {
            return Err(GgufError::TensorOutOfBounds {
                tensor: what.to_string(),
                start,
                end,
                file_len: len,
            });
        }
        Ok(&part.map[start as usize..end as usize])
    }

    /// Copies `dst.len()` bytes at `offset` of the (merged) byte space into `dst`.
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(dst.len() as u64)
            .ok_or_else(|| GgufError::overflow("read range"))?;
        dst.copy_from_slice(self.slice(offset..end, "read")?);
        Ok(())
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
                self.path().display()
            )
        })
    }

    /// Non-panicking [`GgufFile::tensor_data`].
    pub fn try_tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let r = self.header.tensor_range(t)?;
        self.slice(r, &t.name)
    }

    /// Data of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }
}
