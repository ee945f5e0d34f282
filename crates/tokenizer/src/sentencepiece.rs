//! Reader for SentencePiece's `tokenizer.model` (a `ModelProto` protobuf).
//!
//! Hand-written on purpose: there is no maintained pure-Rust SentencePiece crate that also builds for
//! wasm32, and `prost` would need a `.proto` file plus build-time code generation (protoc) for the handful of
//! fields we read. The wire format needed here is tiny (varints, fixed32/64 and length-delimited fields), so a
//! bounds-checked parser of ~150 lines is the leaner and more auditable choice. Unknown fields are skipped, as
//! protobuf requires; every malformed input yields [`TokenizerError::Protobuf`] with the byte offset.

use crate::{Result, TokenizerError};

/// `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceKind {
    fn from_proto(v: u64, offset: usize) -> Result<Self> {
        Ok(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => {
                return Err(perr(
                    offset,
                    format!("SentencePiece.type = {v} is not a known piece type (1..=6)"),
                ))
            }
        })
    }

    /// llama.cpp's `tokenizer.ggml.token_type` value (same numbering as SentencePiece).
    pub fn gguf_type(self) -> i32 {
        match self {
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
        }
    }
}

/// `TrainerSpec.model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentencePiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// The parts of a SentencePiece model that tokenisation depends on. Defaults follow `sentencepiece_model.proto`.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    pub pieces: Vec<SentencePiece>,
    pub model_type: ModelType,
    pub byte_fallback: bool,
    /// `NormalizerSpec.name` ("identity", "nmt_nfkc", ...).
    pub normalizer_name: String,
    /// Whether the normalizer carries a precompiled character map (non-identity normalisation).
    pub has_precompiled_charsmap: bool,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
}

fn perr(offset: usize, what: impl Into<String>) -> TokenizerError {
    TokenizerError::Protobuf {
        offset,
        what: what.into(),
    }
}

/// A protobuf field value; `Bytes` carries the absolute offset of its payload for error messages.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8], usize),
}

/// Cursor over one message; `base` is the absolute offset of `buf[0]` in the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64> {
        let start = self.offset();
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(perr(start, "truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(perr(start, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(perr(start, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let start = self.offset();
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                perr(
                    start,
                    format!(
                        "{what}: needs {n} bytes but only {} remain",
                        self.buf.len() - self.pos
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, value), or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>, usize)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.offset();
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(perr(at, "field number 0 is invalid"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "fixed64 field")?;
                Value::Fixed64
            }
            2 => {
                let len_at = self.offset();
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| perr(len_at, format!("length {len} too large")))?;
                let payload_at = self.offset();
                Value::Bytes(self.take(len, &format!("field {field}"))?, payload_at)
            }
            5 => {
                let b = self.take(4, "fixed32 field")?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => {
                return Err(perr(
                    at,
                    format!("field {field} uses unsupported wire type {w}"),
                ))
            }
        };
        Ok(Some((field, value, at)))
    }
}

fn expect_varint(v: &Value, field: &str, at: usize) -> Result<u64> {
    match v {
        Value::Varint(x) => Ok(*x),
        _ => Err(perr(at, format!("{field} must be a varint"))),
    }
}

fn expect_bytes<'a>(v: &Value<'a>, field: &str, at: usize) -> Result<(&'a [u8], usize)> {
    match v {
        Value::Bytes(b, off) => Ok((b, *off)),
        _ => Err(perr(at, format!("{field} must be length-delimited"))),
    }
}

fn expect_str<'a>(v: &Value<'a>, field: &str, at: usize) -> Result<&'a str> {
    let (b, off) = expect_bytes(v, field, at)?;
    std::str::from_utf8(b)
        .map_err(|e| perr(off + e.valid_up_to(), format!("{field} is not valid UTF-8")))
}

/// proto2 `int32` is sign-extended to 64 bits on the wire.
fn as_i32(v: u64, field: &str, at: usize) -> Result<i32> {
    i32::try_from(v as i64)
        .map_err(|_| perr(at, format!("{field} = {} does not fit in int32", v as i64)))
}

impl SentencePieceModel {
    /// Parses a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut m = SentencePieceModel {
            pieces: Vec::new(),
            model_type: ModelType::Unigram,
            byte_fallback: false,
            normalizer_name: String::new(),
            has_precompiled_charsmap: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        };
        let mut r = Reader::new(bytes, 0);
        while let Some((field, value, at)) = r.field()? {
            match field {
                1 => {
                    let (b, off) = expect_bytes(&value, "ModelProto.pieces", at)?;
                    m.pieces.push(parse_piece(b, off, m.pieces.len())?);
                }
                2 => {
                    let (b, off) = expect_bytes(&value, "ModelProto.trainer_spec", at)?;
                    parse_trainer(&mut m, b, off)?;
                }
                3 => {
                    let (b, off) = expect_bytes(&value, "ModelProto.normalizer_spec", at)?;
                    parse_normalizer(&mut m, b, off)?;
                }
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err(perr(bytes.len(), "model has no pieces"));
        }
        let n = m.pieces.len();
        // bos/eos/pad may legitimately be disabled (-1); they are range-checked where they are used.
        if m.unk_id < 0 || m.unk_id as usize >= n {
            return Err(perr(
                bytes.len(),
                format!(
                    "TrainerSpec.unk_id = {} is outside the {n} pieces",
                    m.unk_id
                ),
            ));
        }
        Ok(m)
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
}

fn parse_piece(buf: &[u8], base: usize, index: usize) -> Result<SentencePiece> {
    let mut r = Reader::new(buf, base);
    let mut piece = None;
    let mut score = 0.0f32;
    let mut kind = PieceKind::Normal;
    while let Some((field, value, at)) = r.field()? {
        match field {
            1 => piece = Some(expect_str(&value, "SentencePiece.piece", at)?.to_owned()),
            2 => match value {
                Value::Fixed32(bits) => score = f32::from_bits(bits),
                _ => {
                    return Err(perr(
                        at,
                        format!("SentencePiece.score of piece {index} must be a float"),
                    ))
                }
            },
            3 => {
                kind = PieceKind::from_proto(expect_varint(&value, "SentencePiece.type", at)?, at)?
            }
            _ => {}
        }
    }
    let piece = piece.ok_or_else(|| perr(base, format!("piece {index} has no `piece` string")))?;
    if !score.is_finite() {
        return Err(perr(
            base,
            format!("piece {index} ({piece:?}) has non-finite score {score}"),
        ));
    }
    Ok(SentencePiece { piece, score, kind })
}

fn parse_trainer(m: &mut SentencePieceModel, buf: &[u8], base: usize) -> Result<()> {
    let mut r = Reader::new(buf, base);
    while let Some((field, value, at)) = r.field()? {
        match field {
            3 => {
                m.model_type = match expect_varint(&value, "TrainerSpec.model_type", at)? {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    v => return Err(perr(at, format!("TrainerSpec.model_type = {v} is unknown"))),
                }
            }
            24 => {
                m.treat_whitespace_as_suffix =
                    expect_varint(&value, "TrainerSpec.treat_whitespace_as_suffix", at)? != 0
            }
            35 => m.byte_fallback = expect_varint(&value, "TrainerSpec.byte_fallback", at)? != 0,
            40 => {
                m.unk_id = as_i32(
                    expect_varint(&value, "TrainerSpec.unk_id", at)?,
                    "TrainerSpec.unk_id",
                    at,
                )?
            }
            41 => {
                m.bos_id = as_i32(
                    expect_varint(&value, "TrainerSpec.bos_id", at)?,
                    "TrainerSpec.bos_id",
                    at,
                )?
            }
            42 => {
                m.eos_id = as_i32(
                    expect_varint(&value, "TrainerSpec.eos_id", at)?,
                    "TrainerSpec.eos_id",
                    at,
                )?
            }
            43 => {
                m.pad_id = as_i32(
                    expect_varint(&value, "TrainerSpec.pad_id", at)?,
                    "TrainerSpec.pad_id",
                    at,
                )?
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(m: &mut SentencePieceModel, buf: &[u8], base: usize) -> Result<()> {
    let mut r = Reader::new(buf, base);
    while let Some((field, value, at)) = r.field()? {
        match field {
            1 => m.normalizer_name = expect_str(&value, "NormalizerSpec.name", at)?.to_owned(),
            2 => {
                m.has_precompiled_charsmap =
                    !expect_bytes(&value, "NormalizerSpec.precompiled_charsmap", at)?
                        .0
                        .is_empty()
            }
            3 => {
                m.add_dummy_prefix =
                    expect_varint(&value, "NormalizerSpec.add_dummy_prefix", at)? != 0
            }
            4 => {
                m.remove_extra_whitespaces =
                    expect_varint(&value, "NormalizerSpec.remove_extra_whitespaces", at)? != 0
            }
            5 => {
                m.escape_whitespaces =
                    expect_varint(&value, "NormalizerSpec.escape_whitespaces", at)? != 0
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edge_cases() {
        // 10-byte varint of -1 (int32 pad_id = -1 as written by protobuf).
        let mut r = Reader::new(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            0,
        );
        assert_eq!(as_i32(r.varint().unwrap(), "x", 0).unwrap(), -1);
        let mut r = Reader::new(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            0,
        );
        assert!(r.varint().is_err());
        let mut r = Reader::new(&[0x80, 0x80], 7);
        match r.varint() {
            Err(TokenizerError::Protobuf { offset: 7, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn length_beyond_buffer_is_reported_with_offset() {
        // field 1, wire type 2, length 100, only 2 bytes of payload.
        let bytes = [0x0a, 100, b'a', b'b'];
        match SentencePieceModel::parse(&bytes) {
            Err(TokenizerError::Protobuf { offset: 2, what }) => {
                assert!(what.contains("100"), "{what}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_and_fields() {
        // One piece "a" (score -1.5, type USER_DEFINED), trainer model_type BPE + byte_fallback, normalizer with
        // add_dummy_prefix false.
        let mut piece = vec![0x0a, 1, b'a', 0x15];
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        piece.extend_from_slice(&[0x18, 4]);
        let mut bytes = vec![0x0a, piece.len() as u8];
        bytes.extend_from_slice(&piece);
        bytes.extend_from_slice(&[0x12, 5, 0x18, 2, 0x98, 0x02, 1]);
        bytes.extend_from_slice(&[0x1a, 2, 0x18, 0]);
        let m = SentencePieceModel::parse(&bytes).unwrap();
        assert_eq!(
            m.pieces,
            vec![SentencePiece {
                piece: "a".into(),
                score: -1.5,
                kind: PieceKind::UserDefined
            }]
        );
        assert_eq!(m.model_type, ModelType::Bpe);
        assert!(m.byte_fallback && !m.add_dummy_prefix && m.remove_extra_whitespaces);
        assert_eq!((m.unk_id, m.bos_id, m.eos_id, m.pad_id), (0, 1, 2, -1));
    }
}
