//! Shared test helpers: python location, temp dirs, a canonical value dump shared with the python side,
//! a raw GGUF byte builder for malformed files, and a small PRNG.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use meddr_gguf::{Array, GgmlType, TensorSpec, Value};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv python with gguf-py; tests fail (not skip) when it is missing.
pub fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "python with gguf-py not found at {} (set MEDDR_PYTHON or create <workspace>/.venv with `gguf` and `numpy`)",
        p.display()
    );
    p
}

/// Runs a python script with args; returns stdout, panicking with stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("spawning python");
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// A fresh directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "meddr-gguf-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Names of all entries (including hidden temp files).
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Canonical text of a value, produced identically by `PY_DUMP`: floats as raw bits so comparisons are
/// exact, strings as UTF-8 hex.
pub fn canon(v: &Value) -> String {
    match v {
        Value::U8(x) => format!("u8:{x}"),
        Value::I8(x) => format!("i8:{x}"),
        Value::U16(x) => format!("u16:{x}"),
        Value::I16(x) => format!("i16:{x}"),
        Value::U32(x) => format!("u32:{x}"),
        Value::I32(x) => format!("i32:{x}"),
        Value::U64(x) => format!("u64:{x}"),
        Value::I64(x) => format!("i64:{x}"),
        Value::F32(x) => format!("f32:{:08x}", x.to_bits()),
        Value::F64(x) => format!("f64:{:016x}", x.to_bits()),
        Value::Bool(b) => format!("bool:{}", *b as u8),
        Value::String(s) => format!("str:{}", hex(s.as_bytes())),
        Value::Array(a) => {
            let items: Vec<String> = (0..a.len()).map(|i| canon(&a.get(i).unwrap())).collect();
            format!("arr:{}[{}]", type_tag(a.elem_type().id()), items.join(","))
        }
    }
}

fn type_tag(id: u32) -> &'static str {
    [
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
    ][id as usize]
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Python that dumps a GGUF file via gguf-py's `GGUFReader` in the canonical format: `kv <key> <canon>`
/// lines in file order, `tensor <name> <dims,> <type id> <offset rel. to data> <n_bytes> <data hex>`,
/// `alignment <a>`, `data_offset <o>`. Nested arrays are rebuilt from the reader's flat `parts`.
pub const PY_DUMP: &str = r#"
import sys
import numpy as np
from gguf import GGUFReader
NAMES = ['u8','i8','u16','i16','u32','i32','f32','bool','str','arr','u64','i64','f64']
def dec(parts, i, t):
    if t == 8:
        return 'str:' + bytes(parts[i + 1]).hex(), i + 2
    if t == 9:
        it = int(parts[i][0]); n = int(parts[i + 1][0]); i += 2
        items = []
        for _ in range(n):
            s, i = dec(parts, i, it)
            items.append(s)
        return 'arr:%s[%s]' % (NAMES[it], ','.join(items)), i
    v = parts[i]
    if t == 6:
        return 'f32:%08x' % int(v.view(np.uint32)[0]), i + 1
    if t == 12:
        return 'f64:%016x' % int(v.view(np.uint64)[0]), i + 1
    if t == 7:
        return 'bool:%d' % int(v[0]), i + 1
    return '%s:%d' % (NAMES[t], int(v[0])), i + 1
r = GGUFReader(sys.argv[1])
for name, f in r.fields.items():
    if name.startswith('GGUF.'):
        continue
    s, end = dec(f.parts, 3, int(f.parts[2][0]))
    assert end == len(f.parts), name
    print('kv', name, s)
for t in r.tensors:
    dims = ','.join(str(int(d)) for d in t.shape)
    print('tensor', t.name, dims, int(t.tensor_type), t.data_offset - r.data_offset, int(t.n_bytes), t.data.tobytes().hex())
print('alignment', int(r.alignment))
print('data_offset', int(r.data_offset))
"#;

/// The same dump produced from our reader.
pub fn rust_dump(
    h: &meddr_gguf::GgufHeader,
    data: impl Fn(&meddr_gguf::TensorInfo) -> Vec<u8>,
) -> String {
    let mut s = String::new();
    for (k, v) in &h.metadata {
        s += &format!("kv {k} {}\n", canon(v));
    }
    for t in &h.tensors {
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        s += &format!(
            "tensor {} {} {} {} {} {}\n",
            t.name,
            dims.join(","),
            t.ty.id(),
            t.offset,
            t.byte_size(),
            hex(&data(t))
        );
    }
    s += &format!("alignment {}\ndata_offset {}\n", h.alignment, h.data_offset);
    s
}

/// Metadata exercising all 13 value types, edge values, empty and nested arrays.
pub fn sample_metadata() -> Vec<(String, Value)> {
    let v = |k: &str, v: Value| (k.to_owned(), v);
    vec![
        v("general.architecture", "llama".into()),
        v("general.alignment", Value::U32(64)),
        v("t.u8", Value::U8(255)),
        v("t.i8", Value::I8(-128)),
        v("t.u16", Value::U16(65535)),
        v("t.i16", Value::I16(-32768)),
        v("t.u32", Value::U32(4_000_000_000)),
        v("t.i32", Value::I32(-2_000_000_000)),
        v("t.f32", Value::F32(-1.5e-7)),
        v(
            "t.f32_nan_inf",
            Value::Array(Array::F32(vec![
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.1,
                -0.0,
            ])),
        ),
        v("t.bool_t", Value::Bool(true)),
        v("t.bool_f", Value::Bool(false)),
        v("t.str", "héllo, wörld ✓ \u{1F600}".into()),
        v("t.str_empty", "".into()),
        v("t.u64", Value::U64(u64::MAX)),
        v("t.i64", Value::I64(i64::MIN)),
        v("t.f64", Value::F64(std::f64::consts::PI)),
        v("a.u8", vec![0u8, 1, 255].into()),
        v("a.i8", vec![-1i8, 0, 127].into()),
        v("a.u16", vec![1u16, 65535].into()),
        v("a.i16", vec![-2i16, 300].into()),
        v("a.u32", vec![7u32, 8, 9].into()),
        v("a.i32", vec![-7i32, 8].into()),
        v("a.f32", vec![0.485f32, 0.456, 0.406].into()),
        v("a.bool", vec![true, false, true].into()),
        v("a.str", vec!["<s>", "</s>", "▁the", ""].into()),
        v("a.u64", vec![u64::MAX, 0].into()),
        v("a.i64", vec![i64::MIN, i64::MAX].into()),
        v("a.f64", vec![1e300f64, -2.5].into()),
        v("a.empty_u32", Value::Array(Array::U32(vec![]))),
        v(
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::U8(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::F32(vec![1.0]), Array::I64(vec![])]),
                Array::Bool(vec![]),
            ])),
        ),
    ]
}

/// One tensor per ggml type, two rows of two blocks each (so the data exercises row/block math).
pub fn all_type_specs() -> Vec<TensorSpec> {
    GgmlType::ALL
        .iter()
        .map(|&ty| TensorSpec::new(format!("t.{}", ty.name()), vec![ty.block_size() * 2, 3], ty))
        .collect()
}

/// Deterministic pseudo-random tensor bytes; scalar float types get finite values so python round trips
/// through numpy cannot canonicalise NaN payloads.
pub fn tensor_bytes(spec: &TensorSpec, seed: u64) -> Vec<u8> {
    let n = spec.ty.row_bytes(spec.dims[0]).unwrap() * spec.dims[1..].iter().product::<u64>();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut b = rng.bytes(n as usize);
    if matches!(
        spec.ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::F64 | GgmlType::BF16
    ) {
        // Clear the top exponent bit of every element: finite and non-NaN in all four formats.
        let w = (spec.ty.type_size()) as usize;
        for c in b.chunks_mut(w) {
            c[w - 1] &= 0x3f;
        }
    }
    b
}

/// Minimal GGUF encoder that lets tests write anything, including malformed files.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u32(&mut self, x: u32) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.str(k).u32(8).str(v)
    }
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` data bytes.
    pub fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while self.0.len() % align != 0 {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0xAB, n));
        self
    }
}
