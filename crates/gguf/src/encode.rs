//! Serialisation of the header. Kept symmetric with the parser's rules: anything we write, we can read.

use std::collections::HashSet;

use crate::error::{GgufError, Result};
use crate::header::{
    align_up, check_dims, TensorInfo, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_STRING_LEN,
};
use crate::value::{Array, Value};

fn put_str(out: &mut Vec<u8>, s: &str, field: &dyn Fn() -> String) -> Result<()> {
    if s.len() as u64 > MAX_STRING_LEN {
        return Err(GgufError::StringTooLong {
            field: field(),
            len: s.len() as u64,
            max: MAX_STRING_LEN,
        });
    }
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, v: &Value, field: &dyn Fn() -> String) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s, field)?,
        Value::Array(a) => put_array(out, a, 0, field)?,
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

fn put_array(out: &mut Vec<u8>, a: &Array, depth: usize, field: &dyn Fn() -> String) -> Result<()> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            field: field(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        Array::String(v) => {
            for s in v {
                put_str(out, s, field)?;
            }
        }
        Array::Array(v) => {
            for inner in v {
                put_array(out, inner, depth + 1, field)?;
            }
        }
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
    Ok(())
}

/// Encodes magic, counts, metadata and tensor directory, padded with zeros to `alignment`.
/// Rejects duplicate keys/names and shapes the reader would reject.
pub(crate) fn encode_header(
    version: u32,
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> Result<Vec<u8>> {
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { value: alignment });
    }
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    let mut keys = HashSet::new();
    for (i, (key, value)) in metadata.iter().enumerate() {
        if !keys.insert(key.as_str()) {
            return Err(GgufError::DuplicateKey { key: key.clone() });
        }
        put_str(&mut out, key, &|| format!("metadata entry #{i} key"))?;
        out.extend_from_slice(&value.value_type().id().to_le_bytes());
        put_value(&mut out, value, &|| {
            format!("value of metadata key {key:?}")
        })?;
    }
    let mut names = HashSet::new();
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::DuplicateTensor {
                name: t.name.clone(),
            });
        }
        check_dims(&t.name, &t.dims)?;
        put_str(&mut out, &t.name, &|| format!("tensor {:?} name", t.name))?;
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    let padded = align_up(out.len() as u64, alignment, "header length")?;
    let padded = usize::try_from(padded).map_err(|_| GgufError::overflow("header length"))?;
    out.resize(padded, 0);
    Ok(out)
}
