//! GGUF v3 reading and writing for MedDr Edge.
//!
//! # Why our own module
//! The `gguf` crate only reads and its ggml type table predates recent types, and `ggus` has no k-quant
//! block sizes; we need a writer for `meddr-quantize`, exact block sizes for every type up to MXFP4, and a
//! parser that works on a *prefix* of the file in the browser. All three are small, so they live here.
//!
//! # Format (little-endian)
//! `"GGUF"`, `u32 version` (2 or 3), `u64 tensor_count`, `u64 kv_count`, then `kv_count` entries
//! (`string key`, `u32 value type`, value), then `tensor_count` tensor infos (`string name`, `u32 n_dims`,
//! `u64 dims[n_dims]` with the contiguous dimension first, `u32 ggml type`, `u64 offset` relative to the
//! data section), zero padding to `general.alignment` (default 32), then the tensor data. Strings are
//! `u64 len` + UTF-8 bytes; arrays are `u32 element type` + `u64 count` + elements (arrays may nest).
//!
//! # Reading
//! * [`GgufHeader::parse`] takes whatever prefix of the file is at hand and returns
//!   [`ParseOutcome::NeedMore`] with the prefix length to try next; the browser appends `Blob.slice` bytes
//!   and calls again. [`GgufHeader::read_from`] does this over any [`ByteSource`] (a [`FileSource`] using
//!   positioned reads, a byte slice, or a caller's Blob wrapper), starting at 1 MiB and at least doubling.
//! * [`GgufFile::open`] (feature `mmap`, on by default) maps a local file and hands out tensor data as
//!   borrowed slices.
//! * A vision model in llama.cpp's layout is two files, the language model and its `mmproj` (vision tower +
//!   projector, `general.architecture = clip`). [`GgufFile::open_model`] finds the mmproj beside the model
//!   ([`mmproj_candidates`]) and [`merge_mmproj`] presents the pair as one header whose tensor offsets address
//!   the two files laid end to end, so readers need not know there are two.
//!
//! Files are untrusted. The parser never panics and never allocates more than a small multiple of the
//! bytes it has actually seen: counts are bounded by the bytes present before reserving, a string may not
//! exceed 64 MiB ([`MAX_STRING_LEN`]) nor (when the file length is known) the bytes left, and nesting is
//! capped, as is the whole header ([`MAX_HEADER_LEN`], 256 MiB). All size arithmetic is checked. It rejects, with a [`GgufError`] naming the field and value:
//! bad magic, versions other than 2/3, unknown value or ggml type ids, duplicate keys or tensor names,
//! tensors with 0 or more than 4 dims, zero-sized dims, rows that are not whole quantisation blocks,
//! `general.alignment` that is not a non-zero power of two, tensor offsets not aligned, tensors sharing
//! bytes, and (with a known length, [`GgufHeader::validate_against_len`]) data past the end of the file.
//!
//! Zero-sized dimensions are rejected although ggml could express them: no model tensor is empty, an empty
//! tensor has no bytes so its offset is meaningless for the overlap check, and `n_rows`/`row_len` could no
//! longer recover the shape. Treating it as corruption is the safer reading.
//!
//! # Writing
//! [`GgufWriter`] lays out the whole file up front, writes the header to `.<name>.tmp-<pid>` in the target
//! directory, then streams tensors in declared order (whole via [`GgufWriter::write_tensor`] or in pieces
//! via `begin_tensor`/`write_bytes`/`end_tensor`, so a quantiser never holds a whole model). `finish`
//! fsyncs and renames; any error or an unfinished drop deletes the temporary file, so a partial output
//! never exists under the final name. Existing files are not overwritten unless
//! [`WriteOptions::overwrite`] is set. Metadata keeps insertion order.
//!
//! Dims use ggml order everywhere: `dims[0]` is the row length (contiguous), so a PyTorch `[out, in]`
//! weight is `dims = [in, out]`.
//!
//! # Example
//! ```
//! use meddr_gguf::{GgmlType, GgufHeader, GgufWriter, ParseOutcome, TensorSpec, Value};
//! # let dir = std::env::temp_dir().join(format!("meddr-gguf-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("tiny.gguf");
//! let meta = vec![("general.architecture".to_string(), Value::from("llama"))];
//! let specs = vec![TensorSpec::new("w", vec![64, 2], GgmlType::Q8_0)]; // 2 rows of 2 blocks
//! let mut w = GgufWriter::create(&path, meta, specs)?;
//! w.begin_tensor("w")?;
//! for row in 0..2u8 {
//!     w.write_bytes(&[row; 68])?; // one row = 2 × 34-byte blocks
//! }
//! w.end_tensor()?;
//! w.finish()?;
//!
//! let bytes = std::fs::read(&path)?;
//! // Browser style: parse whatever prefix has arrived, fetch more on NeedMore.
//! let mut have = 16;
//! let header = loop {
//!     match GgufHeader::parse(&bytes[..have])? {
//!         ParseOutcome::Complete(h) => break h,
//!         ParseOutcome::NeedMore { at_least } => have = at_least as usize,
//!     }
//! };
//! assert_eq!(header.get_str("general.architecture")?, "llama");
//! let t = header.tensor("w").unwrap();
//! assert_eq!((t.row_len(), t.n_rows(), t.byte_size()), (64, 2, 136));
//! # #[cfg(feature = "mmap")]
//! # assert_eq!(meddr_gguf::GgufFile::open(&path)?.tensor_data(t)[68], 1);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod encode;
mod error;
mod file;
mod header;
mod source;
mod split;
mod types;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use file::GgufFile;
pub use header::{
    validate_key, GgufHeader, ParseOutcome, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT,
    GGUF_MAGIC, GGUF_VERSION, INITIAL_READ, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_HEADER_LEN,
    MAX_STRING_LEN,
};
pub use source::{ByteSource, FileSource};
pub use split::{
    has_vision_tower, is_mmproj, is_vision_tensor, merge_mmproj, mmproj_candidates,
    mmproj_path_for, LAYOUT_ONLY_KEY, MMPROJ_ARCHITECTURE,
};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorSpec, WriteOptions};
