use std::collections::HashSet;
use std::ops::Range;

use crate::error::{GgufError, Result};
use crate::source::ByteSource;
use crate::types::GgmlType;
use crate::value::{int_array_as, int_as, lookup, mismatch, Array, Value, ValueType};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Alignment when `general.alignment` is absent (GGUF spec default).
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// No legitimate key, tensor name or token comes near this; a larger length is a corrupt or hostile file.
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Arrays of arrays deeper than this are rejected so a hostile file cannot overflow the parser's stack.
pub const MAX_ARRAY_DEPTH: usize = 16;
pub const MAX_DIMS: usize = 4;
/// Cap on the header (everything before the data section). A 256k-token vocabulary with merges is ~10 MiB;
/// the cap keeps a corrupt array length from making [`GgufHeader::read_from`] fetch gigabytes.
pub const MAX_HEADER_LEN: u64 = 256 << 20;

/// First size [`GgufHeader::read_from`] fetches; the header of a real model (with a 32k-token vocabulary)
/// fits, so one read usually suffices.
pub const INITIAL_READ: u64 = 1 << 20;

// Smallest encodings, used to bound counts before allocating.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
const MIN_ARRAY_BYTES: u64 = 4 + 8;

/// Where one tensor lives. `dims` is in ggml order: `dims[0]` is the contiguous row length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Relative to the start of the data section ([`GgufHeader::data_offset`]).
    pub offset: u64,
}

impl TensorInfo {
    /// Element count. Exact for parsed infos (checked at parse time); saturates for hand-built bad ones.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Number of rows: product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        let bs = self.ty.block_size();
        self.row_len()
            .div_ceil(bs)
            .saturating_mul(self.ty.type_size())
    }

    /// Bytes of the whole tensor. Exact for parsed infos; use [`TensorInfo::try_byte_size`] on unchecked ones.
    pub fn byte_size(&self) -> u64 {
        self.row_bytes().saturating_mul(self.n_rows())
    }

    /// Checked byte size: errors on bad dims, rows that are not whole blocks, or overflow.
    pub fn try_byte_size(&self) -> Result<u64> {
        check_dims(&self.name, &self.dims)?;
        let row = self.ty.row_bytes(self.row_len())?;
        let mut n = row;
        for &d in &self.dims[1..] {
            n = n.checked_mul(d).ok_or_else(|| {
                GgufError::overflow(format!("byte size of tensor {:?}", self.name))
            })?;
        }
        Ok(n)
    }
}

/// Checks the rules every tensor shape must follow (see the crate docs for why zero dims are rejected).
pub(crate) fn check_dims(name: &str, dims: &[u64]) -> Result<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
        });
    }
    let mut n: u64 = 1;
    for (axis, &d) in dims.iter().enumerate() {
        if d == 0 || d > i64::MAX as u64 {
            return Err(GgufError::BadDim {
                tensor: name.to_owned(),
                axis,
                value: d,
            });
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                GgufError::overflow(format!("element count of tensor {name:?} (dims {dims:?})"))
            })?;
    }
    Ok(n)
}

/// Checks a metadata key against the GGUF spec's rule (`docs/gguf.md`, "Standardized key-value pairs": keys
/// are ASCII, hierarchical, `.`-separated): non-empty, printable ASCII without spaces, no empty segment
/// (leading, trailing or doubled dots). Case and `-`/`_` are left free: real files use both. `Err` says why.
pub fn validate_key(key: &str) -> std::result::Result<(), &'static str> {
    if key.is_empty() {
        return Err("the key is empty");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the key holds a non-ASCII, space or control character");
    }
    if key.split('.').any(str::is_empty) {
        return Err("the key has an empty segment (a leading, trailing or doubled '.')");
    }
    Ok(())
}

/// Parsed header: metadata in file order, tensor directory and where the data section starts.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section (end of the tensor directory, padded to `alignment`).
    pub data_offset: u64,
}

/// Result of parsing a prefix of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseOutcome {
    Complete(GgufHeader),
    /// The header continues past the prefix; retry with a prefix of at least this many bytes.
    NeedMore {
        at_least: u64,
    },
}

enum Stop {
    NeedMore(u64),
    Err(GgufError),
}

impl From<GgufError> for Stop {
    fn from(e: GgufError) -> Self {
        Stop::Err(e)
    }
}

type PResult<T> = std::result::Result<T, Stop>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: u64,
    /// Length of the whole file, when known; lets declared lengths be checked against what can exist.
    total: Option<u64>,
}

impl<'a> Cursor<'a> {
    /// Bytes after `pos` that can possibly exist: the file's remainder when the length is known.
    fn remaining_in_file(&self) -> Option<u64> {
        self.total.map(|t| t.saturating_sub(self.pos))
    }

    fn available_in_prefix(&self) -> u64 {
        (self.buf.len() as u64).saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> PResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| GgufError::overflow(field()))?;
        if end > MAX_HEADER_LEN {
            return Err(GgufError::HeaderTooLarge {
                field: field(),
                needed: end,
                max: MAX_HEADER_LEN,
            }
            .into());
        }
        if let Some(total) = self.total {
            if end > total {
                return Err(GgufError::Truncated {
                    field: field(),
                    needed: end,
                    available: total,
                }
                .into());
            }
        }
        if end > self.buf.len() as u64 {
            return Err(Stop::NeedMore(end));
        }
        // Both bounds are <= buf.len(), so they fit in usize.
        let s = &self.buf[self.pos as usize..end as usize];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> PResult<[u8; N]> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Rejects a declared length whose minimal encoding cannot fit in the rest of the file.
    fn check_declared(
        &self,
        len: u64,
        min_bytes_each: u64,
        field: &dyn Fn() -> String,
    ) -> PResult<()> {
        if let Some(remaining) = self.remaining_in_file() {
            let needed = len.saturating_mul(min_bytes_each);
            if needed > remaining {
                return Err(GgufError::LengthExceedsRemaining {
                    field: field(),
                    len,
                    needed,
                    remaining,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Capacity to reserve for `count` items of at least `min_each` bytes: never more than the bytes at hand
    /// could hold, so a hostile count cannot trigger a huge allocation.
    fn capacity(&self, count: u64, min_each: u64) -> usize {
        let bound = self.available_in_prefix() / min_each.max(1);
        usize::try_from(count.min(bound)).unwrap_or(0)
    }

    fn string(&mut self, field: &dyn Fn() -> String) -> PResult<String> {
        let len = self.u64(&|| format!("{} (length)", field()))?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::StringTooLong {
                field: field(),
                len,
                max: MAX_STRING_LEN,
            }
            .into());
        }
        self.check_declared(len, 1, field)?;
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { field: field() }.into()),
        }
    }

    fn value_type(&mut self, field: &dyn Fn() -> String) -> PResult<ValueType> {
        let id = self.u32(field)?;
        ValueType::from_id(id)
            .ok_or_else(|| Stop::Err(GgufError::UnknownValueType { id, field: field() }))
    }

    fn value(&mut self, ty: ValueType, depth: usize, field: &dyn Fn() -> String) -> PResult<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(field)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(field)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(field)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Bool => Value::Bool(to_bool(self.array::<1>(field)?[0], field)?),
            ValueType::String => Value::String(self.string(field)?),
            ValueType::Array => Value::Array(self.array_value(depth, field)?),
        })
    }

    fn array_value(&mut self, depth: usize, field: &dyn Fn() -> String) -> PResult<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                field: field(),
                max: MAX_ARRAY_DEPTH,
            }
            .into());
        }
        let elem = self.value_type(&|| format!("{} (array element type)", field()))?;
        let count = self.u64(&|| format!("{} (array length)", field()))?;
        let len_field = || format!("{} (array of {count} {elem})", field());
        if let Some(size) = elem.fixed_size() {
            self.check_declared(count, size, &len_field)?;
            let nbytes = count
                .checked_mul(size)
                .ok_or_else(|| GgufError::overflow(len_field()))?;
            let raw = self.take(nbytes, &len_field)?;
            return Ok(decode_fixed_array(elem, raw, field)?);
        }
        if elem == ValueType::String {
            self.check_declared(count, 8, &len_field)?;
            let mut v = Vec::with_capacity(self.capacity(count, 8));
            for _ in 0..count {
                v.push(self.string(field)?);
            }
            Ok(Array::String(v))
        } else {
            self.check_declared(count, MIN_ARRAY_BYTES, &len_field)?;
            let mut v = Vec::with_capacity(self.capacity(count, MIN_ARRAY_BYTES));
            for _ in 0..count {
                v.push(self.array_value(depth + 1, field)?);
            }
            Ok(Array::Array(v))
        }
    }
}

fn to_bool(b: u8, field: &dyn Fn() -> String) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool {
            field: field(),
            value,
        }),
    }
}

fn decode_fixed_array(elem: ValueType, raw: &[u8], field: &dyn Fn() -> String) -> Result<Array> {
    fn chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match elem {
        ValueType::U8 => Array::U8(raw.to_vec()),
        ValueType::I8 => Array::I8(raw.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => Array::U16(chunks(raw, u16::from_le_bytes)),
        ValueType::I16 => Array::I16(chunks(raw, i16::from_le_bytes)),
        ValueType::U32 => Array::U32(chunks(raw, u32::from_le_bytes)),
        ValueType::I32 => Array::I32(chunks(raw, i32::from_le_bytes)),
        ValueType::F32 => Array::F32(chunks(raw, f32::from_le_bytes)),
        ValueType::U64 => Array::U64(chunks(raw, u64::from_le_bytes)),
        ValueType::I64 => Array::I64(chunks(raw, i64::from_le_bytes)),
        ValueType::F64 => Array::F64(chunks(raw, f64::from_le_bytes)),
        ValueType::Bool => Array::Bool(
            raw.iter()
                .map(|&b| to_bool(b, field))
                .collect::<Result<_>>()?,
        ),
        ValueType::String | ValueType::Array => {
            unreachable!("variable-size element types are handled by the caller")
        }
    })
}

/// Reads `general.alignment` (if any) and checks it is a usable power of two.
pub(crate) fn alignment_of(metadata: &[(String, Value)]) -> Result<u64> {
    match lookup(metadata, ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => {
            let i = v
                .as_integer()
                .ok_or_else(|| mismatch(ALIGNMENT_KEY, "an unsigned integer (u32)", v))?;
            match u64::try_from(i) {
                Ok(a) if a.is_power_of_two() => Ok(a),
                Ok(a) => Err(GgufError::BadAlignment { value: a }),
                Err(_) => Err(GgufError::ValueOutOfRange {
                    key: ALIGNMENT_KEY.into(),
                    value: i.to_string(),
                    target: "u64",
                }),
            }
        }
    }
}

pub(crate) fn align_up(x: u64, alignment: u64, field: &str) -> Result<u64> {
    // alignment is a power of two here.
    x.checked_add(alignment - 1)
        .map(|v| v & !(alignment - 1))
        .ok_or_else(|| GgufError::overflow(field))
}

impl GgufHeader {
    /// Parses a prefix of a file whose total length is unknown. Re-parses from the start on every call;
    /// headers are small, so this keeps the browser side (which appends `Blob.slice` results) trivial.
    /// `NeedMore::at_least` never exceeds [`MAX_HEADER_LEN`], but may exceed the file's length when the file
    /// is corrupt; callers that know the length should use [`GgufHeader::parse_with_len`].
    pub fn parse(prefix: &[u8]) -> Result<ParseOutcome> {
        Self::parse_with_len(prefix, None)
    }

    /// Like [`GgufHeader::parse`], but with the file's total length known: declared lengths are checked
    /// against the bytes that can exist, truncation is an error instead of `NeedMore`, and a complete
    /// header is also [validated against the length](GgufHeader::validate_against_len).
    pub fn parse_with_len(prefix: &[u8], file_len: Option<u64>) -> Result<ParseOutcome> {
        let mut c = Cursor {
            buf: prefix,
            pos: 0,
            total: file_len,
        };
        match Self::parse_inner(&mut c) {
            Ok(h) => {
                if let Some(len) = file_len {
                    h.validate_against_len(len)?;
                }
                Ok(ParseOutcome::Complete(h))
            }
            Err(Stop::NeedMore(at_least)) => Ok(ParseOutcome::NeedMore { at_least }),
            Err(Stop::Err(e)) => Err(e),
        }
    }

    /// Parses a complete in-memory file (the slice is the whole file).
    pub fn from_bytes(file: &[u8]) -> Result<GgufHeader> {
        match Self::parse_with_len(file, Some(file.len() as u64))? {
            ParseOutcome::Complete(h) => Ok(h),
            // parse_with_len reports truncation as an error when the length is known.
            ParseOutcome::NeedMore { at_least } => Err(GgufError::Truncated {
                field: "header".into(),
                needed: at_least,
                available: file.len() as u64,
            }),
        }
    }

    /// Reads just the header from a random-access source: fetches a 1 MiB prefix, then grows it (at least
    /// doubling) until the header is complete. Tensor data is never read.
    pub fn read_from<S: ByteSource + ?Sized>(src: &S) -> Result<GgufHeader> {
        let len = src.len();
        let mut buf: Vec<u8> = Vec::new();
        let mut want = INITIAL_READ.min(len);
        loop {
            let have = buf.len() as u64;
            if want > have {
                let add = usize::try_from(want - have)
                    .map_err(|_| GgufError::overflow(format!("header prefix of {want} bytes")))?;
                buf.resize(buf.len() + add, 0);
                src.read_at(have, &mut buf[have as usize..])?;
            }
            match Self::parse_with_len(&buf, Some(len))? {
                ParseOutcome::Complete(h) => return Ok(h),
                ParseOutcome::NeedMore { at_least } => {
                    let next = at_least.max(want.saturating_mul(2)).min(len);
                    if next <= want {
                        // Cannot happen: with the length known, parse reports truncation as an error.
                        return Err(GgufError::Truncated {
                            field: "header".into(),
                            needed: at_least,
                            available: len,
                        });
                    }
                    want = next;
                }
            }
        }
    }

    fn parse_inner(c: &mut Cursor<'_>) -> PResult<GgufHeader> {
        // Reject wrong magic from the first bytes, before asking for more data.
        let n = c.buf.len().min(4);
        if c.buf[..n] != GGUF_MAGIC[..n] {
            let mut found = [0u8; 4];
            found[..n].copy_from_slice(&c.buf[..n]);
            return Err(GgufError::BadMagic { found }.into());
        }
        c.take(4, &|| "magic".into())?;
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version }.into());
        }
        let n_tensors = c.u64(&|| "tensor_count".into())?;
        let n_kv = c.u64(&|| "metadata_kv_count".into())?;
        c.check_declared(n_kv, MIN_KV_BYTES, &|| "metadata_kv_count".into())?;

        let mut metadata = Vec::with_capacity(c.capacity(n_kv, MIN_KV_BYTES));
        let mut keys: HashSet<String> = HashSet::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata entry #{i} key"))?;
            if let Err(why) = validate_key(&key) {
                return Err(GgufError::InvalidKey { index: i, key, why }.into());
            }
            let field = || format!("value of metadata key {key:?}");
            let ty = c.value_type(&|| format!("{} (type)", field()))?;
            let value = c.value(ty, 0, &field)?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey { key }.into());
            }
            metadata.push((key, value));
        }

        c.check_declared(n_tensors, MIN_TENSOR_INFO_BYTES, &|| "tensor_count".into())?;
        let mut tensors = Vec::with_capacity(c.capacity(n_tensors, MIN_TENSOR_INFO_BYTES));
        let mut names: HashSet<String> = HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor #{i} name"))?;
            let n_dims = c.u32(&|| format!("tensor {name:?} n_dims"))?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(GgufError::BadDimCount {
                    tensor: name,
                    n_dims: n_dims as u64,
                }
                .into());
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(c.u64(&|| format!("tensor {name:?} dims[{d}]"))?);
            }
            check_dims(&name, &dims)?;
            let type_id = c.u32(&|| format!("tensor {name:?} type"))?;
            let ty = GgmlType::from_id(type_id).map_err(|_| GgufError::UnknownGgmlType {
                id: type_id,
                field: format!("tensor {name:?}"),
            })?;
            let offset = c.u64(&|| format!("tensor {name:?} offset"))?;
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor { name }.into());
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }

        let alignment = alignment_of(&metadata)?;
        let data_offset = align_up(c.pos, alignment, "data section offset")?;
        let header = GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        };
        header.validate_layout()?;
        Ok(header)
    }

    /// Checks that needs no file length: sizes, alignment and that no two tensors share bytes.
    pub fn validate_layout(&self) -> Result<()> {
        if !self.alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment {
                value: self.alignment,
            });
        }
        let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(self.tensors.len());
        for (i, t) in self.tensors.iter().enumerate() {
            let size = t.try_byte_size()?;
            if t.offset % self.alignment != 0 {
                return Err(GgufError::MisalignedOffset {
                    tensor: t.name.clone(),
                    offset: t.offset,
                    alignment: self.alignment,
                });
            }
            let r = self.tensor_range_checked(t, size)?;
            spans.push((r.start, r.end, i));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            let (_, a_end, a) = w[0];
            let (b_start, _, b) = w[1];
            if b_start < a_end {
                return Err(GgufError::TensorOverlap {
                    first: self.tensors[a].name.clone(),
                    first_end: a_end,
                    second: self.tensors[b].name.clone(),
                    second_start: b_start,
                });
            }
        }
        Ok(())
    }

    fn tensor_range_checked(&self, t: &TensorInfo, size: u64) -> Result<Range<u64>> {
        let start = self
            .data_offset
            .checked_add(t.offset)
            .ok_or_else(|| GgufError::overflow(format!("data start of tensor {:?}", t.name)))?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| GgufError::overflow(format!("data end of tensor {:?}", t.name)))?;
        Ok(start..end)
    }

    /// Checks every tensor's data lies inside a file of `file_len` bytes (and all layout rules).
    pub fn validate_against_len(&self, file_len: u64) -> Result<()> {
        self.validate_layout()?;
        for t in &self.tensors {
            let r = self.tensor_range_checked(t, t.try_byte_size()?)?;
            if r.end > file_len {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: r.start,
                    end: r.end,
                    file_len,
                });
            }
        }
        Ok(())
    }

    /// Absolute byte range of a tensor's data in the file.
    pub fn tensor_range(&self, t: &TensorInfo) -> Result<Range<u64>> {
        self.tensor_range_checked(t, t.try_byte_size()?)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        lookup(&self.metadata, key)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// Any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        int_as(key, self.require(key)?, "u32")
    }

    pub fn get_i32(&self, key: &str) -> Result<i32> {
        int_as(key, self.require(key)?, "i32")
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        int_as(key, self.require(key)?, "u64")
    }

    pub fn get_i64(&self, key: &str) -> Result<i64> {
        int_as(key, self.require(key)?, "i64")
    }

    /// f32, or f64 rounded to f32 (some writers store f64).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => Err(mismatch(key, "a float", v)),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.require(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            v => Err(mismatch(key, "a float", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(mismatch(key, "a bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| mismatch(key, "a string", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| mismatch(key, "an array", v))
    }

    /// Array of any integer type whose elements all fit.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        int_array_as(key, self.require(key)?, "u32")
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        int_array_as(key, self.require(key)?, "i32")
    }

    /// f32 array (f64 arrays are rounded).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.require(key)? {
            Value::Array(Array::F32(v)) => Ok(v.clone()),
            Value::Array(Array::F64(v)) => Ok(v.iter().map(|&x| x as f32).collect()),
            v => Err(mismatch(key, "a float array", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v.iter().map(String::as_str).collect()),
            v => Err(mismatch(key, "a string array", v)),
        }
    }

    /// Serialises the header (magic through the padding before the data section). The result is exactly
    /// `data_offset` bytes long when `data_offset` was computed for this content.
    pub fn encode(&self) -> Result<Vec<u8>> {
        crate::encode::encode_header(self.version, &self.metadata, &self.tensors, self.alignment)
    }
}
