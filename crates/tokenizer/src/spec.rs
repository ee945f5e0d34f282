//! Everything GGUF needs to carry about the tokenizer, read from a Hugging Face directory or from GGUF.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use crate::hf_json::{self, AddedTok, BuildInput};
use crate::sentencepiece::{ModelType, PieceKind, SentencePieceModel};
use crate::{Result, TokenizerError};

/// llama.cpp `tokenizer.ggml.token_type` values.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Score llama.cpp's converter gives added tokens.
const ADDED_TOKEN_SCORE: f32 = -1000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSpec {
    /// All tokens, id = index; `len()` = `len(tokenizer)` (pieces, then added tokens in id order).
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub unk_id: u32,
    pub pad_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// SentencePiece `add_dummy_prefix`.
    pub add_space_prefix: bool,
    /// Complete `tokenizers` JSON (`Tokenizer::from_str`), added tokens included.
    pub hf_json: String,
    pub chat_template: Option<String>,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::Io {
        path: path.to_owned(),
        cause: e,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Json {
            what: path.display().to_string(),
            cause: e,
        })
}

/// A special-token entry is a string or an `AddedToken` object.
fn token_content(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// llama.cpp `does_token_look_special`: added tokens that should be CONTROL even when not marked special.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `tokenizer_config.json` and `special_tokens_map.json`, merged (the config wins, as in transformers).
struct HfConfig {
    cfg: Value,
    stm: Value,
}

impl HfConfig {
    fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            cfg: read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null),
            stm: read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null),
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.cfg
            .get(key)
            .filter(|v| !v.is_null())
            .or_else(|| self.stm.get(key).filter(|v| !v.is_null()))
    }

    fn special(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(token_content)
    }

    fn bool_or(&self, key: &str, default: bool) -> bool {
        self.cfg
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// bos, eos, unk, pad, then `additional_special_tokens` (transformers' `all_special_tokens`).
    fn all_special(&self) -> Vec<String> {
        let mut out: Vec<String> = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .iter()
            .filter_map(|k| self.special(k).map(str::to_owned))
            .collect();
        if let Some(list) = self
            .get("additional_special_tokens")
            .and_then(Value::as_array)
        {
            out.extend(list.iter().filter_map(token_content).map(str::to_owned));
        }
        out
    }

    fn chat_template(&self) -> Option<String> {
        match self.cfg.get("chat_template")? {
            Value::String(s) => Some(s.clone()),
            // Newer configs hold a list of named templates; the unnamed use is "default".
            Value::Array(list) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
            _ => None,
        }
    }
}

fn resolve(
    name: &str,
    content: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<u32>,
    fallback: Option<u32>,
) -> Result<Option<u32>> {
    match content {
        Some(c) => lookup(c).map(Some).ok_or_else(|| {
            TokenizerError::config(format!(
                "{name} {c:?} is neither a piece nor an added token"
            ))
        }),
        None => Ok(fallback),
    }
}

fn sp_id(v: i32) -> Option<u32> {
    u32::try_from(v).ok()
}

fn check_loads(json: &str) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_str(json).map_err(TokenizerError::tk)
}

impl TokenizerSpec {
    /// Reads a Hugging Face tokenizer directory: `tokenizer.model` (+ `added_tokens.json`,
    /// `tokenizer_config.json`, `special_tokens_map.json`), or, without `tokenizer.model`, a Llama-style
    /// `tokenizer.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let model = dir.join("tokenizer.model");
        if model.is_file() {
            let bytes = std::fs::read(&model).map_err(|e| TokenizerError::Io {
                path: model.clone(),
                cause: e,
            })?;
            let sp = SentencePieceModel::parse(&bytes)?;
            Self::from_sentencepiece(&sp, dir)
        } else if dir.join("tokenizer.json").is_file() {
            Self::from_tokenizer_json_dir(dir)
        } else {
            Err(TokenizerError::config(format!(
                "{} has neither tokenizer.model nor tokenizer.json",
                dir.display()
            )))
        }
    }

    fn from_sentencepiece(sp: &SentencePieceModel, dir: &Path) -> Result<Self> {
        if sp.model_type != ModelType::Bpe {
            return Err(TokenizerError::Unsupported(format!(
                "SentencePiece model_type {:?}: only BPE (LLaMA-style) models are supported",
                sp.model_type
            )));
        }
        if !(sp.normalizer_name.is_empty() || sp.normalizer_name == "identity")
            || sp.has_precompiled_charsmap
        {
            return Err(TokenizerError::Unsupported(format!(
                "SentencePiece normalizer {:?}: only the identity normalizer is supported",
                sp.normalizer_name
            )));
        }
        if sp.remove_extra_whitespaces || !sp.escape_whitespaces || sp.treat_whitespace_as_suffix {
            return Err(TokenizerError::Unsupported(format!(
                "SentencePiece normalizer flags remove_extra_whitespaces={} escape_whitespaces={} \
                 treat_whitespace_as_suffix={}: only false/true/false (LLaMA) is supported",
                sp.remove_extra_whitespaces, sp.escape_whitespaces, sp.treat_whitespace_as_suffix
            )));
        }
        let hf = HfConfig::load(dir)?;
        let added_json = read_json(&dir.join("added_tokens.json"))?;
        let n = sp.pieces.len();
        let piece_ids: HashMap<&str, u32> = sp
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.piece.as_str(), i as u32))
            .collect();

        // id -> added token, from `added_tokens_decoder` and `added_tokens.json`.
        let mut added: BTreeMap<u32, AddedTok> = BTreeMap::new();
        let mut decoder_ids = Vec::new();
        if let Some(dec) = hf
            .cfg
            .get("added_tokens_decoder")
            .and_then(Value::as_object)
        {
            for (k, v) in dec {
                let id: u32 = k.parse().map_err(|_| {
                    TokenizerError::config(format!(
                        "added_tokens_decoder key {k:?} is not a token id"
                    ))
                })?;
                let content = v.get("content").and_then(Value::as_str).ok_or_else(|| {
                    TokenizerError::config(format!("added_tokens_decoder[{k}].content is missing"))
                })?;
                added.insert(
                    id,
                    AddedTok {
                        id,
                        content: content.to_owned(),
                        special: flag(v, "special"),
                        lstrip: flag(v, "lstrip"),
                        rstrip: flag(v, "rstrip"),
                        normalized: flag(v, "normalized"),
                        single_word: flag(v, "single_word"),
                    },
                );
                decoder_ids.push(id);
            }
        }
        let all_special = hf.all_special();
        let mut json_ids = Vec::new();
        if let Some(obj) = added_json.as_ref().and_then(Value::as_object) {
            for (content, id) in obj {
                let id = id
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| {
                        TokenizerError::config(format!(
                            "added_tokens.json[{content:?}] = {id} is not a token id"
                        ))
                    })?;
                match added.get(&id) {
                    Some(t) if t.content != *content => {
                        return Err(TokenizerError::AddedToken {
                            content: content.clone(),
                            id: id.into(),
                            problem: format!("is already {:?} in tokenizer_config.json", t.content),
                        })
                    }
                    Some(_) => {}
                    None => {
                        let special = all_special.iter().any(|s| s == content);
                        added.insert(id, AddedTok::plain(id, content.clone(), special));
                    }
                }
                json_ids.push(id);
            }
        }
        // transformers registers every special token (bos/eos/unk/pad/additional) as a special added token.
        for s in &all_special {
            if let Some(t) = added.values_mut().find(|t| t.content == *s) {
                t.special = true;
            } else if let Some(&id) = piece_ids.get(s.as_str()) {
                added.insert(id, AddedTok::plain(id, s.clone(), true));
            } else {
                return Err(TokenizerError::config(format!(
                    "special token {s:?} is neither a SentencePiece piece nor an added token"
                )));
            }
        }
        // Consistency: ids below n name their piece; ids from n on are dense; contents are unique.
        let mut by_content: HashMap<&str, u32> = HashMap::new();
        let mut next = n as u64;
        for (&id, t) in &added {
            if (id as usize) < n {
                if sp.pieces[id as usize].piece != t.content {
                    return Err(TokenizerError::AddedToken {
                        content: t.content.clone(),
                        id: id.into(),
                        problem: format!(
                            "is the SentencePiece piece {:?}",
                            sp.pieces[id as usize].piece
                        ),
                    });
                }
            } else {
                if u64::from(id) != next {
                    return Err(TokenizerError::AddedToken {
                        content: t.content.clone(),
                        id: id.into(),
                        problem: format!("leaves a gap: the next free id is {next}"),
                    });
                }
                next += 1;
                if let Some(&pid) = piece_ids.get(t.content.as_str()) {
                    return Err(TokenizerError::AddedToken {
                        content: t.content.clone(),
                        id: id.into(),
                        problem: format!("duplicates SentencePiece piece {pid}"),
                    });
                }
            }
            if let Some(other) = by_content.insert(&t.content, id) {
                return Err(TokenizerError::AddedToken {
                    content: t.content.clone(),
                    id: id.into(),
                    problem: format!("duplicates added token {other}"),
                });
            }
        }

        // GGUF arrays, following llama.cpp convert_hf_to_gguf.py `_create_vocab_sentencepiece`: SentencePiece
        // types and scores; then added_tokens.json entries become USER_DEFINED, then added_tokens_decoder
        // entries become CONTROL if `special` (or if they look special) else USER_DEFINED (with `▁` written as a
        // space); both with score -1000.
        let mut tokens: Vec<String> = sp.pieces.iter().map(|p| p.piece.clone()).collect();
        let mut scores: Vec<f32> = sp.pieces.iter().map(|p| p.score).collect();
        let mut token_types: Vec<i32> = sp.pieces.iter().map(|p| p.kind.gguf_type()).collect();
        let total = next as usize;
        for t in added.values().filter(|t| t.id as usize >= n) {
            tokens.push(t.content.clone());
            scores.push(ADDED_TOKEN_SCORE);
            token_types.push(token_type::USER_DEFINED);
        }
        for &id in &json_ids {
            let i = id as usize;
            scores[i] = ADDED_TOKEN_SCORE;
            token_types[i] = token_type::USER_DEFINED;
        }
        for &id in &decoder_ids {
            let (i, t) = (id as usize, &added[&id]);
            scores[i] = ADDED_TOKEN_SCORE;
            if t.special || looks_special(&t.content) {
                token_types[i] = token_type::CONTROL;
                tokens[i] = t.content.clone();
            } else {
                token_types[i] = token_type::USER_DEFINED;
                tokens[i] = t.content.replace('\u{2581}', " ");
            }
        }
        debug_assert_eq!(tokens.len(), total);

        let lookup = |c: &str| -> Option<u32> {
            added
                .values()
                .find(|t| t.content == c)
                .map(|t| t.id)
                .or_else(|| piece_ids.get(c).copied())
        };
        let bos_id = resolve(
            "bos_token",
            hf.special("bos_token"),
            &lookup,
            sp_id(sp.bos_id),
        )?
        .ok_or_else(|| {
            TokenizerError::config("no bos token: neither bos_token nor SentencePiece bos_id")
        })?;
        let eos_id = resolve(
            "eos_token",
            hf.special("eos_token"),
            &lookup,
            sp_id(sp.eos_id),
        )?
        .ok_or_else(|| {
            TokenizerError::config("no eos token: neither eos_token nor SentencePiece eos_id")
        })?;
        let unk_id = resolve(
            "unk_token",
            hf.special("unk_token"),
            &lookup,
            sp_id(sp.unk_id),
        )?
        .ok_or_else(|| TokenizerError::config("no unk token"))?;
        let pad_id = resolve(
            "pad_token",
            hf.special("pad_token"),
            &lookup,
            sp_id(sp.pad_id),
        )?;
        for (name, id) in [
            ("bos", Some(bos_id)),
            ("eos", Some(eos_id)),
            ("unk", Some(unk_id)),
            ("pad", pad_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= total) {
                return Err(TokenizerError::config(format!(
                    "{name} id {id} is outside the vocabulary of {total}"
                )));
            }
        }
        // LlamaTokenizer defaults.
        let add_bos = hf.bool_or("add_bos_token", true);
        let add_eos = hf.bool_or("add_eos_token", false);

        let pieces: Vec<(String, f32, PieceKind)> = sp
            .pieces
            .iter()
            .map(|p| (p.piece.clone(), p.score, p.kind))
            .collect();
        let added_list: Vec<AddedTok> = added.values().cloned().collect();
        let content_of = |id: u32| tokens_content(&pieces, &added_list, id);
        let hf_json = hf_json::build(&BuildInput {
            pieces: &pieces,
            added: &added_list,
            // The BPE's unk is the SentencePiece unk piece (LlamaConverter uses trainer_spec.unk_piece).
            unk_id: sp_id(sp.unk_id).unwrap_or(0),
            add_dummy_prefix: sp.add_dummy_prefix,
            bos: add_bos.then(|| (content_of(bos_id), bos_id)),
            eos: add_eos.then(|| (content_of(eos_id), eos_id)),
        })?;
        check_loads(&hf_json)?;
        Ok(Self {
            tokens,
            scores,
            token_types,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            add_space_prefix: sp.add_dummy_prefix,
            hf_json,
            chat_template: hf.chat_template(),
        })
    }

    fn from_tokenizer_json_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TokenizerError::Io {
            path: path.clone(),
            cause: e,
        })?;
        let info = hf_json::inspect(&text)?;
        if info.byte_level {
            return Err(TokenizerError::Unsupported(format!(
                "{}: byte-level BPE tokenizer.json directories are not supported by the quantizer",
                path.display()
            )));
        }
        check_loads(&text)?;
        let hf = HfConfig::load(dir)?;
        let n = info.vocab.len();
        let mut tokens = info.vocab.clone();
        let mut added = info.added.clone();
        added.sort_by_key(|a| a.id);
        for a in &added {
            let i = a.id as usize;
            if i < n {
                if tokens[i] != a.content {
                    return Err(TokenizerError::AddedToken {
                        content: a.content.clone(),
                        id: a.id.into(),
                        problem: format!("is the vocabulary entry {:?}", tokens[i]),
                    });
                }
            } else if i == tokens.len() {
                tokens.push(a.content.clone());
            } else {
                return Err(TokenizerError::AddedToken {
                    content: a.content.clone(),
                    id: a.id.into(),
                    problem: format!("leaves a gap: the next free id is {}", tokens.len()),
                });
            }
        }
        // No SentencePiece scores here: rank the merge results (higher score = earlier merge), so that a
        // llama.cpp-style score-driven BPE reproduces the merge order.
        let mut first_rank: HashMap<String, usize> = HashMap::new();
        for (r, (a, b)) in info.merges.iter().enumerate() {
            first_rank.entry(format!("{a}{b}")).or_insert(r);
        }
        let controls: std::collections::HashSet<&str> =
            info.controls.iter().map(String::as_str).collect();
        let mut scores = Vec::with_capacity(tokens.len());
        let mut token_types = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let (ty, score) = if i >= n {
                (token_type::USER_DEFINED, ADDED_TOKEN_SCORE)
            } else if info.unk_token.as_deref() == Some(t.as_str()) {
                (token_type::UNKNOWN, 0.0)
            } else if info.byte_fallback && hf_json::byte_piece(t).is_some() {
                (token_type::BYTE, 0.0)
            } else if controls.contains(t.as_str()) {
                (token_type::CONTROL, 0.0)
            } else {
                let rank = first_rank.get(t).copied().unwrap_or(info.merges.len() + i);
                (token_type::NORMAL, -(rank as f32))
            };
            token_types.push(ty);
            scores.push(score);
        }
        for a in &added {
            let i = a.id as usize;
            scores[i] = ADDED_TOKEN_SCORE;
            token_types[i] = if a.special || looks_special(&a.content) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
        }
        let lookup = |c: &str| -> Option<u32> {
            added
                .iter()
                .find(|a| a.content == c)
                .map(|a| a.id)
                .or_else(|| info.vocab.iter().position(|p| p == c).map(|i| i as u32))
        };
        let default_bos = info.post_bos.as_deref().or(Some("<s>")).and_then(lookup);
        let default_eos = info.post_eos.as_deref().or(Some("</s>")).and_then(lookup);
        let default_unk = info.unk_token.as_deref().and_then(lookup);
        let bos_id = resolve("bos_token", hf.special("bos_token"), &lookup, default_bos)?
            .ok_or_else(|| {
                TokenizerError::config("no bos token in tokenizer_config.json or tokenizer.json")
            })?;
        let eos_id = resolve("eos_token", hf.special("eos_token"), &lookup, default_eos)?
            .ok_or_else(|| {
                TokenizerError::config("no eos token in tokenizer_config.json or tokenizer.json")
            })?;
        let unk_id = resolve("unk_token", hf.special("unk_token"), &lookup, default_unk)?
            .ok_or_else(|| {
                TokenizerError::config("no unk token in tokenizer_config.json or tokenizer.json")
            })?;
        let pad_id = resolve("pad_token", hf.special("pad_token"), &lookup, None)?;
        Ok(Self {
            tokens,
            scores,
            token_types,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos: hf.bool_or("add_bos_token", info.post_bos.is_some()),
            add_eos: hf.bool_or("add_eos_token", info.post_eos.is_some()),
            add_space_prefix: info.add_dummy_prefix,
            hf_json: text,
            chat_template: hf.chat_template(),
        })
    }

    /// Rebuilds the spec from GGUF `tokenizer.ggml.*` metadata. With `hf_json` (GGUF `tokenizer.huggingface.json`)
    /// the runtime is exact; without it the JSON is rebuilt from the arrays, where every CONTROL token becomes a
    /// special added token (matched in text, as llama.cpp does) — this differs from the slow tokenizer only for
    /// SentencePiece control pieces that are not Hugging Face special tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn from_gguf_parts(
        tokens: Vec<String>,
        scores: Vec<f32>,
        token_types: Vec<i32>,
        bos_id: u32,
        eos_id: u32,
        unk_id: u32,
        pad_id: Option<u32>,
        add_bos: bool,
        add_eos: bool,
        add_space_prefix: bool,
        hf_json: Option<String>,
    ) -> Result<Self> {
        let n = tokens.len();
        if scores.len() != n || token_types.len() != n {
            return Err(TokenizerError::config(format!(
                "tokenizer.ggml arrays disagree: {n} tokens, {} scores, {} token types",
                scores.len(),
                token_types.len()
            )));
        }
        if n == 0 {
            return Err(TokenizerError::config("tokenizer.ggml.tokens is empty"));
        }
        for (name, id) in [
            ("bos", Some(bos_id)),
            ("eos", Some(eos_id)),
            ("unk", Some(unk_id)),
            ("pad", pad_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::IdOutOfRange {
                    id: id.into(),
                    vocab_size: n,
                })
                .map_err(|e| TokenizerError::config(format!("tokenizer.ggml {name} token: {e}")));
            }
        }
        let mut kinds = Vec::with_capacity(n);
        for (i, (&t, &s)) in token_types.iter().zip(&scores).enumerate() {
            if !s.is_finite() {
                return Err(TokenizerError::config(format!(
                    "tokenizer.ggml.scores[{i}] = {s} is not finite"
                )));
            }
            kinds.push(match t {
                token_type::NORMAL => PieceKind::Normal,
                token_type::UNKNOWN => PieceKind::Unknown,
                token_type::CONTROL => PieceKind::Control,
                token_type::USER_DEFINED => PieceKind::UserDefined,
                token_type::UNUSED => PieceKind::Unused,
                token_type::BYTE => PieceKind::Byte,
                _ => {
                    return Err(TokenizerError::config(format!(
                        "tokenizer.ggml.token_type[{i}] = {t} is not a llama.cpp token type (1..=6)"
                    )))
                }
            });
        }
        let hf_json = match hf_json {
            Some(json) => {
                let info = hf_json::inspect(&json)?;
                let total = info.vocab.len().max(
                    info.added
                        .iter()
                        .map(|a| a.id as usize + 1)
                        .max()
                        .unwrap_or(0),
                );
                if total != n {
                    return Err(TokenizerError::config(format!(
                        "tokenizer.huggingface.json has {total} tokens but tokenizer.ggml.tokens has {n}"
                    )));
                }
                if let Some(i) = (0..info.vocab.len()).find(|&i| info.vocab[i] != tokens[i]) {
                    return Err(TokenizerError::config(format!(
                        "token {i} is {:?} in tokenizer.huggingface.json but {:?} in tokenizer.ggml.tokens",
                        info.vocab[i], tokens[i]
                    )));
                }
                check_loads(&json)?;
                json
            }
            None => {
                let pieces: Vec<(String, f32, PieceKind)> = tokens
                    .iter()
                    .zip(&scores)
                    .zip(&kinds)
                    .map(|((t, &s), &k)| (t.clone(), s, k))
                    .collect();
                let added: Vec<AddedTok> = kinds
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| matches!(k, PieceKind::Control | PieceKind::UserDefined))
                    .map(|(i, k)| {
                        AddedTok::plain(i as u32, tokens[i].clone(), *k == PieceKind::Control)
                    })
                    .collect();
                let json = hf_json::build(&BuildInput {
                    pieces: &pieces,
                    added: &added,
                    unk_id,
                    add_dummy_prefix: add_space_prefix,
                    bos: add_bos.then(|| (tokens[bos_id as usize].clone(), bos_id)),
                    eos: add_eos.then(|| (tokens[eos_id as usize].clone(), eos_id)),
                })?;
                check_loads(&json)?;
                json
            }
        };
        Ok(Self {
            tokens,
            scores,
            token_types,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            add_space_prefix,
            hf_json,
            chat_template: None,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Grows the vocabulary to `rows` entries, the rows of a checkpoint's `embed_tokens` padded past
    /// `len(tokenizer)` (common in Hugging Face checkpoints, and the way to give a synthetic model a
    /// Yi-scale 64k vocabulary): ids `len..rows` become `[PAD{id}]` tokens of type UNUSED with score -1000, as
    /// llama.cpp's `convert_hf_to_gguf.py` (`_create_vocab_sentencepiece`) writes them. They are added to the
    /// `tokenizers` JSON as special added tokens, so text never encodes to them and the runtime's tokenizer
    /// keeps one entry per embedding row. Errors: `rows` below the current size, or above 2^22.
    pub fn pad_to(&mut self, rows: usize) -> Result<()> {
        let n = self.tokens.len();
        if rows < n {
            return Err(TokenizerError::config(format!(
                "cannot pad a {n}-token vocabulary down to {rows} rows"
            )));
        }
        if rows > 1 << 22 {
            return Err(TokenizerError::config(format!(
                "vocabulary of {rows} rows is above the 4194304 limit"
            )));
        }
        if rows == n {
            return Ok(());
        }
        let mut doc: Value =
            serde_json::from_str(&self.hf_json).map_err(|e| TokenizerError::Json {
                what: "the tokenizer JSON".into(),
                cause: e,
            })?;
        let added = doc
            .get_mut("added_tokens")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| {
                TokenizerError::config("the tokenizer JSON has no added_tokens array")
            })?;
        for id in n..rows {
            let content = format!("[PAD{id}]");
            added.push(serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true
            }));
            self.tokens.push(content);
            self.scores.push(ADDED_TOKEN_SCORE);
            self.token_types.push(token_type::UNUSED);
        }
        self.hf_json = serde_json::to_string(&doc).map_err(|e| TokenizerError::Json {
            what: "the padded tokenizer JSON".into(),
            cause: e,
        })?;
        Ok(())
    }
}

fn tokens_content(pieces: &[(String, f32, PieceKind)], added: &[AddedTok], id: u32) -> String {
    added
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.content.clone())
        .or_else(|| pieces.get(id as usize).map(|p| p.0.clone()))
        .unwrap_or_default()
}
