use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};

/// Random-access bytes of known length: a local file, an in-memory buffer, or (in the browser) a `Blob`
/// wrapper. Lets [`crate::GgufHeader::read_from`] fetch only the header of a multi-GB file.
#[allow(clippy::len_without_is_empty)]
pub trait ByteSource {
    fn len(&self) -> u64;
    /// Fills `buf` completely from `offset`; a short source is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), GgufError>;
}

fn slice_read(data: &[u8], offset: u64, buf: &mut [u8]) -> Result<()> {
    let end = offset.checked_add(buf.len() as u64);
    match end {
        Some(end) if end <= data.len() as u64 => {
            buf.copy_from_slice(&data[offset as usize..end as usize]);
            Ok(())
        }
        _ => Err(GgufError::Truncated {
            field: format!("read of {} bytes at offset {offset}", buf.len()),
            needed: end.unwrap_or(u64::MAX),
            available: data.len() as u64,
        }),
    }
}

impl ByteSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        slice_read(self, offset, buf)
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        slice_read(self, offset, buf)
    }
}

impl<T: ByteSource + ?Sized> ByteSource for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// A local file read with positioned reads (`pread` on Unix, `seek_read` on Windows), so one handle can be
/// shared across threads without a seek cursor race. Elsewhere it falls back to seek + read.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
    len: u64,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io("opening", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io("reading metadata of", &path, e))?
            .len();
        Ok(FileSource { file, path, len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(unix)]
    fn pread(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn pread(&self, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.file.seek_read(buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(not(any(unix, windows)))]
    fn pread(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.pread(offset, buf)
            .map_err(|e| GgufError::io("reading", &self.path, e))
    }
}
