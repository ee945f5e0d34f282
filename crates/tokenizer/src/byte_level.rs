//! Byte-level BPE vocabularies of llama.cpp GGUF files (`tokenizer.ggml.model = "gpt2"`), expressed as a
//! `tokenizers` JSON so that encoding, decoding and streaming share the SentencePiece path's machinery.
//!
//! Behaviour follows llama.cpp's `src/llama-vocab.cpp` (BPE vocabulary loading, `llm_tokenizer_bpe`, the
//! special-token partition and `token_to_piece`) and `src/unicode.cpp` (the GPT-2 byte ↔ unicode mapping).

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::spec::{token_type, TokenizerSpec};
use crate::{Result, TokenizerError};

/// The `tokenizer.ggml.pre` values this crate implements for byte-level BPE, as listed in error messages.
pub const SUPPORTED_PRE: &str = "default, llama-bpe, llama3, smollm, gpt-2";

/// The `tokenizer.ggml.model` values this crate implements.
pub const SUPPORTED_MODELS: &str = "llama, gpt2";

/// Most entries accepted in `tokenizer.ggml.tokens` / `tokenizer.ggml.merges` (llama.cpp's token ids are
/// `int32`; real vocabularies stay below 2^20).
pub const MAX_ARRAY_LEN: usize = 1 << 24;

/// The vocabulary families of `tokenizer.ggml.model` that can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufVocabKind {
    /// `"llama"`: SentencePiece BPE with scores ([`TokenizerSpec::from_gguf_parts`]).
    SentencePiece,
    /// `"gpt2"`: byte-level BPE with merges ([`TokenizerSpec::from_gguf_byte_level`]).
    ByteLevelBpe,
}

impl GgufVocabKind {
    /// Reads `tokenizer.ggml.model`; a missing key means `"llama"` (what MedDr files before the key carried).
    ///
    /// Errors: [`TokenizerError::UnsupportedGguf`] naming the key and the value for any other model.
    pub fn from_gguf(model: Option<&str>) -> Result<Self> {
        match model {
            None | Some("llama") => Ok(Self::SentencePiece),
            Some("gpt2") => Ok(Self::ByteLevelBpe),
            Some(other) => Err(TokenizerError::UnsupportedGguf {
                key: "tokenizer.ggml.model",
                value: other.to_owned(),
                supported: SUPPORTED_MODELS,
            }),
        }
    }
}

/// llama.cpp's pre-tokenizer families (`llama_vocab_pre_type`) for the `tokenizer.ggml.pre` values supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpePreTokenizer {
    /// `default` or no key: four regexes applied one after the other.
    Default,
    /// `llama-bpe`, `llama3`: the Llama 3 regex; whole words found in the vocabulary skip the merges.
    Llama3,
    /// `smollm`: single digits, then the GPT-2 regex.
    Smollm,
    /// `gpt-2`: the GPT-2 regex.
    Gpt2,
}

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl BpePreTokenizer {
    /// Reads `tokenizer.ggml.pre` (missing = `default`, as llama.cpp does).
    ///
    /// Errors: [`TokenizerError::UnsupportedGguf`] naming the key and the value for any other pre type.
    pub fn from_gguf(pre: Option<&str>) -> Result<Self> {
        match pre {
            None | Some("default") => Ok(Self::Default),
            Some("llama-bpe") | Some("llama3") => Ok(Self::Llama3),
            Some("smollm") => Ok(Self::Smollm),
            Some("gpt-2") => Ok(Self::Gpt2),
            Some(other) => Err(TokenizerError::UnsupportedGguf {
                key: "tokenizer.ggml.pre",
                value: other.to_owned(),
                supported: SUPPORTED_PRE,
            }),
        }
    }

    /// The regexes llama.cpp splits the text with, in order: each one splits every piece the previous left,
    /// matches and the text between them alike.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            Self::Default => &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            Self::Llama3 => &[LLAMA3_REGEX],
            Self::Smollm => &[r"\p{N}", GPT2_REGEX],
            Self::Gpt2 => &[GPT2_REGEX],
        }
    }

    /// llama.cpp's `ignore_merges`: a pre-tokenized word that is itself a token is taken whole.
    pub fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    /// llama.cpp's default for `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    pub fn default_add_bos(self) -> bool {
        self == Self::Llama3
    }
}

/// GPT-2's reversible byte → character table: printable Latin-1 bytes stand for themselves, the other bytes
/// take the characters from U+0100 on, in byte order.
pub fn byte_to_char(b: u8) -> char {
    table().0[b as usize]
}

/// Inverse of [`byte_to_char`]; `None` for a character outside the table.
pub fn char_to_byte(c: char) -> Option<u8> {
    table().1.get(&c).copied()
}

/// The bytes of a byte-level piece: each character through [`char_to_byte`], a character outside the table as
/// its own UTF-8 (llama.cpp's converter stores some pieces that way).
pub fn piece_bytes(piece: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len());
    let mut buf = [0u8; 4];
    for c in piece.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    out
}

fn table() -> &'static ([char; 256], HashMap<char, u8>) {
    static T: std::sync::OnceLock<([char; 256], HashMap<char, u8>)> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut fwd = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u8 {
            fwd[b as usize] = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or('\u{FFFD}');
                next += 1;
                c
            };
        }
        let back = fwd.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        (fwd, back)
    })
}

/// The `tokenizer.ggml.*` arrays and keys of a byte-level BPE GGUF.
#[derive(Debug, Clone, Default)]
pub struct GgufBpeParts {
    /// `tokenizer.ggml.tokens`: byte-level pieces (normal tokens) or literal text (control / user-defined).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`; `None` = all NORMAL (as llama.cpp reads a file without it).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores`; optional for BPE (kept for GGUF fidelity, unused by the tokenizer).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`: `"left right"`, rank = index.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.bos_token_id` / `eos_token_id` (llama.cpp's BPE default is 11 for both).
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` / `add_eos_token`; `None` = llama.cpp's default for the pre type.
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
}

/// llama.cpp's default BOS/EOS id for BPE vocabularies without the keys.
const DEFAULT_BPE_SPECIAL: u32 = 11;

fn cfg(msg: String) -> TokenizerError {
    TokenizerError::Config(msg)
}

impl TokenizerSpec {
    /// Builds the spec of a byte-level BPE GGUF (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's
    /// `llama-vocab.cpp` reads one: the pre type's regexes (see [`BpePreTokenizer`]), GPT-2 byte mapping, merges
    /// by rank, CONTROL/UNKNOWN tokens as special and USER_DEFINED tokens as non-special added tokens matched
    /// whole in the text, BOS/EOS added as `add_bos`/`add_eos` say.
    ///
    /// The JSON is `BPE(vocab, merges, ignore_merges)` with the pre-tokenizer
    /// `Sequence[Split(regex, Isolated)…, ByteLevel(add_prefix_space=false, use_regex=false)]` and a ByteLevel
    /// decoder; [`crate::MedDrTokenizer`] recognises it and decodes byte-level pieces itself.
    ///
    /// Byte pieces may be missing (StarCoder's vocabulary has none for 0xF1..): [`crate::MedDrTokenizer`] then
    /// refuses to encode text holding such a byte, where llama.cpp would fail to look the byte up.
    ///
    /// Merges whose halves or result are not tokens are left out (the `tokenizers` crate cannot load them;
    /// llama.cpp would merge and then spell the unknown result in single bytes).
    ///
    /// Errors (each names the key and the offending value): an unsupported `tokenizer.ggml.pre`
    /// ([`TokenizerError::UnsupportedGguf`]); arrays of different lengths, empty or longer than
    /// [`MAX_ARRAY_LEN`]; a token that appears twice; a merge without a separating space; an unknown token type;
    /// special ids outside the vocabulary.
    pub fn from_gguf_byte_level(parts: GgufBpeParts) -> Result<Self> {
        let pre = BpePreTokenizer::from_gguf(parts.pre.as_deref())?;
        let n = parts.tokens.len();
        if n == 0 {
            return Err(cfg("tokenizer.ggml.tokens is empty".into()));
        }
        for (key, len) in [
            ("tokenizer.ggml.tokens", n),
            ("tokenizer.ggml.merges", parts.merges.len()),
        ] {
            if len > MAX_ARRAY_LEN {
                return Err(cfg(format!(
                    "{key} has {len} entries, more than the {MAX_ARRAY_LEN} accepted"
                )));
            }
        }
        let token_types = parts
            .token_types
            .unwrap_or_else(|| vec![token_type::NORMAL; n]);
        if token_types.len() != n {
            return Err(cfg(format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                token_types.len()
            )));
        }
        let scores = match parts.scores {
            Some(s) if s.len() != n => {
                return Err(cfg(format!(
                    "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {n}",
                    s.len()
                )))
            }
            Some(s) => s,
            None => vec![0.0; n],
        };
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(cfg(format!(
                "tokenizer.ggml.scores[{i}] = {} is not finite",
                scores[i]
            )));
        }
        if let Some(i) = token_types.iter().position(|t| !(1..=6).contains(t)) {
            return Err(cfg(format!(
                "tokenizer.ggml.token_type[{i}] = {} is not a llama.cpp token type (1..=6)",
                token_types[i]
            )));
        }
        let mut vocab = Map::new();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, t) in parts.tokens.iter().enumerate() {
            if let Some(j) = index.insert(t.as_str(), i) {
                return Err(cfg(format!(
                    "tokenizer.ggml.tokens[{i}] = {t:?} repeats tokenizer.ggml.tokens[{j}]"
                )));
            }
            vocab.insert(t.clone(), json!(i));
        }
        let id_key = |key: &str, id: Option<u32>, default: Option<u32>| -> Result<Option<u32>> {
            match id.or(default) {
                Some(id) if id as usize >= n => Err(cfg(format!(
                    "{key} = {id} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos_id = id_key(
            "tokenizer.ggml.bos_token_id",
            parts.bos_id,
            Some(DEFAULT_BPE_SPECIAL),
        )?
        .unwrap_or(0);
        let eos_id = id_key(
            "tokenizer.ggml.eos_token_id",
            parts.eos_id,
            Some(DEFAULT_BPE_SPECIAL),
        )?
        .unwrap_or(0);
        let unk_id = id_key("tokenizer.ggml.unknown_token_id", parts.unk_id, None)?;
        let pad_id = id_key("tokenizer.ggml.padding_token_id", parts.pad_id, None)?;
        let add_bos = parts.add_bos.unwrap_or_else(|| pre.default_add_bos());
        let add_eos = parts.add_eos.unwrap_or(false);

        let mut merges = Vec::with_capacity(parts.merges.len());
        for (i, m) in parts.merges.iter().enumerate() {
            // llama.cpp looks for the separating space from the second byte on (a piece may be a lone space).
            let cut = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at)
                .ok_or_else(|| {
                    cfg(format!(
                        "tokenizer.ggml.merges[{i}] = {m:?} is not two pieces separated by a space"
                    ))
                })?;
            let (l, r) = (&m[..cut], &m[cut + 1..]);
            if r.is_empty() {
                return Err(cfg(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?} is not two pieces separated by a space"
                )));
            }
            let whole = format!("{l}{r}");
            if index.contains_key(l) && index.contains_key(r) && index.contains_key(whole.as_str())
            {
                merges.push(json!([l, r]));
            }
        }

        let mut added = Vec::new();
        for (i, &ty) in token_types.iter().enumerate() {
            let special = matches!(ty, token_type::CONTROL | token_type::UNKNOWN);
            if special || ty == token_type::USER_DEFINED {
                if parts.tokens[i].is_empty() {
                    // An empty added token would match everywhere; llama.cpp never finds it in text.
                    continue;
                }
                added.push(json!({
                    "id": i, "content": parts.tokens[i], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": special,
                }));
            }
        }
        let mut pretokenizers: Vec<Value> = pre
            .regexes()
            .iter()
            .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        pretokenizers.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
        let post = if add_bos || add_eos {
            let mut specials = Map::new();
            let mut single = Vec::new();
            let mut pair = Vec::new();
            let tok = |id: u32| parts.tokens[id as usize].clone();
            for (on, id) in [(add_bos, bos_id), (add_eos, eos_id)] {
                if on {
                    specials.insert(
                        tok(id),
                        json!({"id": tok(id), "ids": [id], "tokens": [tok(id)]}),
                    );
                }
            }
            for (seqs, out) in [(&["A"][..], &mut single), (&["A", "B"][..], &mut pair)] {
                for s in seqs {
                    if add_bos {
                        out.push(json!({"SpecialToken": {"id": tok(bos_id), "type_id": 0}}));
                    }
                    out.push(json!({"Sequence": {"id": s, "type_id": 0}}));
                    if add_eos {
                        out.push(json!({"SpecialToken": {"id": tok(eos_id), "type_id": 0}}));
                    }
                }
            }
            json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
        } else {
            Value::Null
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": pre.ignore_merges(),
                "vocab": vocab,
                "merges": merges,
            },
        });
        let hf_json = serde_json::to_string(&doc).map_err(|e| TokenizerError::Json {
            what: "generated byte-level tokenizer JSON".into(),
            cause: e,
        })?;
        tokenizers::Tokenizer::from_str(&hf_json).map_err(TokenizerError::tk)?;
        Ok(Self {
            tokens: parts.tokens,
            scores,
            token_types,
            bos_id,
            eos_id,
            unk_id: unk_id.unwrap_or(0),
            pad_id,
            add_bos,
            add_eos,
            add_space_prefix: false,
            hf_json,
            chat_template: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(b'A'), 'A');
    }

    #[test]
    fn unsupported_values_are_named() {
        let e = BpePreTokenizer::from_gguf(Some("qwen2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.pre = \"qwen2\""), "{e}");
        assert!(e.contains(SUPPORTED_PRE), "{e}");
        let e = GgufVocabKind::from_gguf(Some("t5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.model = \"t5\""), "{e}");
    }
}
