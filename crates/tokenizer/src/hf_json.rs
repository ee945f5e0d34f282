//! Writing and reading the `tokenizers`-crate JSON (`tokenizer.huggingface.json` in our GGUF).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::sentencepiece::PieceKind;
use crate::{Result, TokenizerError};

/// An added token as Hugging Face describes it (`added_tokens_decoder` / `tokenizer.json → added_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AddedTok {
    pub id: u32,
    pub content: String,
    pub special: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
    pub single_word: bool,
}

impl AddedTok {
    pub fn plain(id: u32, content: String, special: bool) -> Self {
        Self {
            id,
            content,
            special,
            lstrip: false,
            rstrip: false,
            normalized: false,
            single_word: false,
        }
    }
}

pub(crate) struct BuildInput<'a> {
    /// The model vocabulary (SentencePiece pieces), id = index.
    pub pieces: &'a [(String, f32, PieceKind)],
    /// Added tokens; ids below `pieces.len()` must name the same piece.
    pub added: &'a [AddedTok],
    pub unk_id: u32,
    pub add_dummy_prefix: bool,
    /// Tokens the post-processor puts around a sequence (`add_bos_token` / `add_eos_token`).
    pub bos: Option<(String, u32)>,
    pub eos: Option<(String, u32)>,
}

/// Pieces SentencePiece BPE can produce by merging (its `pieces_` map minus UNUSED, which it re-segments).
fn is_merge_piece(kind: PieceKind) -> bool {
    matches!(kind, PieceKind::Normal | PieceKind::UserDefined)
}

/// Merges as transformers' `SentencePieceExtractor` derives them: every split of a piece into two pieces of the
/// vocabulary, grouped by the merged piece in descending score order (a stable sort, so equal scores keep
/// vocabulary order), within a piece ordered by (left id, right id). SentencePiece BPE merges the adjacent pair
/// whose concatenation has the highest score, which is what a lower merge rank means to `tokenizers`.
/// Unlike the extractor, control/byte/unknown/unused pieces are neither merge results nor halves: SentencePiece
/// never forms them by merging.
pub(crate) fn derive_merges(pieces: &[(String, f32, PieceKind)]) -> Result<Vec<(String, String)>> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(pieces.len());
    for (i, (p, _, _)) in pieces.iter().enumerate() {
        if index.insert(p.as_str(), i).is_some() {
            return Err(TokenizerError::config(format!(
                "piece {p:?} appears twice in the vocabulary (id {i})"
            )));
        }
    }
    let mut order: Vec<usize> = (0..pieces.len())
        .filter(|&i| is_merge_piece(pieces[i].2))
        .collect();
    // Stable: equal scores keep id order, like Python's sorted(reverse=True).
    order.sort_by(|&a, &b| pieces[b].1.total_cmp(&pieces[a].1));
    let mut merges = Vec::new();
    let mut local: Vec<(usize, usize)> = Vec::new();
    for &i in &order {
        let piece = pieces[i].0.as_str();
        local.clear();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                if is_merge_piece(pieces[li].2) && is_merge_piece(pieces[ri].2) {
                    local.push((li, ri));
                }
            }
        }
        local.sort_unstable();
        merges.extend(
            local
                .iter()
                .map(|&(l, r)| (pieces[l].0.clone(), pieces[r].0.clone())),
        );
    }
    Ok(merges)
}

/// Regex escaping for the control-piece alternation (only the classic metacharacters, so that e.g. `<` is not
/// turned into a word-boundary escape).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const CONTROL_PREFIX: &str = "^(?:";
const CONTROL_SUFFIX: &str = ")$";

fn control_pattern(controls: &[&str]) -> String {
    let alts: Vec<String> = controls.iter().map(|c| escape(c)).collect();
    format!("{CONTROL_PREFIX}{}{CONTROL_SUFFIX}", alts.join("|"))
}

/// Inverse of [`control_pattern`]; `None` if the pattern is not one we wrote.
fn parse_control_pattern(p: &str) -> Option<Vec<String>> {
    let body = p
        .strip_prefix(CONTROL_PREFIX)?
        .strip_suffix(CONTROL_SUFFIX)?;
    let mut out = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.last_mut()?.push(chars.next()?),
            '|' => out.push(String::new()),
            c if "\\.+*?()[]{}^$".contains(c) => return None,
            c => out.last_mut()?.push(c),
        }
    }
    Some(out)
}

fn added_json(t: &AddedTok) -> Value {
    json!({
        "id": t.id, "content": t.content, "single_word": t.single_word, "lstrip": t.lstrip,
        "rstrip": t.rstrip, "normalized": t.normalized, "special": t.special,
    })
}

fn template(bos: &Option<(String, u32)>, eos: &Option<(String, u32)>, seqs: &[&str]) -> Value {
    let mut items = Vec::new();
    for s in seqs {
        if let Some((b, _)) = bos {
            items.push(json!({"SpecialToken": {"id": b, "type_id": 0}}));
        }
        items.push(json!({"Sequence": {"id": s, "type_id": 0}}));
        if let Some((e, _)) = eos {
            items.push(json!({"SpecialToken": {"id": e, "type_id": 0}}));
        }
    }
    Value::Array(items)
}

/// The complete `tokenizers` JSON reproducing the slow `LlamaTokenizer` (legacy) on a SentencePiece BPE vocab.
pub(crate) fn build(input: &BuildInput) -> Result<String> {
    let n = input.pieces.len();
    let merges = derive_merges(input.pieces)?;
    let mut vocab = Map::new();
    for (i, (p, _, _)) in input.pieces.iter().enumerate() {
        vocab.insert(p.clone(), json!(i));
    }
    let unk = input
        .pieces
        .get(input.unk_id as usize)
        .ok_or(TokenizerError::IdOutOfRange {
            id: input.unk_id.into(),
            vocab_size: n,
        })?
        .0
        .clone();
    let added_ids: std::collections::HashSet<u32> = input.added.iter().map(|a| a.id).collect();
    // SentencePiece decodes control pieces to nothing; those that are not HF added tokens (handled by the
    // special-token logic) are erased by the decoder, so that the JSON alone decodes like the slow tokenizer.
    let controls: Vec<&str> = input
        .pieces
        .iter()
        .enumerate()
        .filter(|(i, (_, _, k))| *k == PieceKind::Control && !added_ids.contains(&(*i as u32)))
        .map(|(_, (p, _, _))| p.as_str())
        .collect();
    let mut decoders = Vec::new();
    if !controls.is_empty() {
        decoders.push(json!({"type": "Replace", "pattern": {"Regex": control_pattern(&controls)}, "content": ""}));
    }
    decoders.push(json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}));
    decoders.push(json!({"type": "ByteFallback"}));
    decoders.push(json!({"type": "Fuse"}));
    decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));

    let mut normalizers = Vec::new();
    if input.add_dummy_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));

    let post = if input.bos.is_some() || input.eos.is_some() {
        let mut specials = Map::new();
        for (tok, id) in input.bos.iter().chain(input.eos.iter()) {
            specials.insert(
                tok.clone(),
                json!({"id": tok, "ids": [id], "tokens": [tok]}),
            );
        }
        json!({
            "type": "TemplateProcessing",
            "single": template(&input.bos, &input.eos, &["A"]),
            "pair": template(&input.bos, &input.eos, &["A", "B"]),
            "special_tokens": specials,
        })
    } else {
        Value::Null
    };

    let mut added: Vec<&AddedTok> = input.added.iter().collect();
    added.sort_by_key(|a| a.id);
    let merges: Vec<Value> = merges.into_iter().map(|(l, r)| json!([l, r])).collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.iter().map(|a| added_json(a)).collect::<Vec<_>>(),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    });
    serde_json::to_string(&doc).map_err(|e| TokenizerError::Json {
        what: "generated tokenizer JSON".into(),
        cause: e,
    })
}

/// What the runtime and the `tokenizer.json` import need to know about a `tokenizers` JSON.
#[derive(Debug)]
pub(crate) struct JsonInfo {
    /// Model vocabulary, id = index (dense).
    pub vocab: Vec<String>,
    /// Merges in rank order.
    pub merges: Vec<(String, String)>,
    pub added: Vec<AddedTok>,
    pub unk_token: Option<String>,
    pub byte_fallback: bool,
    /// The pre-tokenizer ends in `ByteLevel`: model pieces are GPT-2 byte-level strings
    /// ([`crate::byte_level`]), not SentencePiece pieces.
    pub byte_level: bool,
    pub add_dummy_prefix: bool,
    /// Metaspace `prepend_scheme: "first"`: the `▁` goes only before the text's first split, so a stretch of
    /// text cannot be re-encoded on its own with the same result.
    pub prepend_first_only: bool,
    /// Control pieces listed in our decoder's erase step.
    pub controls: Vec<String>,
    /// Token contents the post-processor adds before / after a single sequence.
    pub post_bos: Option<String>,
    pub post_eos: Option<String>,
}

/// The `tokenizers` crate deserialises a `TemplateProcessing` without checking it and indexes its
/// `special_tokens` map with every `SpecialToken` of the templates when encoding: a template naming a token the
/// map lacks panics there, as does a `single` template naming sequence B (both found by `tests/fuzz` target
/// `tokenizer_json`). Checked here instead, with ids
/// within the vocabulary (`total` tokens); other post-processors are not Llama-style and are refused.
fn check_template_processing(post: &Value, total: usize) -> Result<()> {
    let t = field(post, "type").and_then(Value::as_str).unwrap_or("");
    if t != "TemplateProcessing" {
        return Err(TokenizerError::Unsupported(format!(
            "tokenizer JSON post_processor.type = {t:?}; only TemplateProcessing (Llama-style) is supported"
        )));
    }
    let specials = field(post, "special_tokens").and_then(Value::as_object);
    for (name, entry) in specials.into_iter().flatten() {
        let ids = field(entry, "ids").and_then(Value::as_array);
        let tokens = field(entry, "tokens").and_then(Value::as_array);
        let (Some(ids), Some(tokens)) = (ids, tokens) else {
            return Err(cfg(format!(
                "post_processor.special_tokens[{name:?}] needs `ids` and `tokens` arrays"
            )));
        };
        if ids.len() != tokens.len() {
            return Err(cfg(format!(
                "post_processor.special_tokens[{name:?}] has {} ids but {} tokens",
                ids.len(),
                tokens.len()
            )));
        }
        if let Some(bad) = ids
            .iter()
            .find(|i| !i.as_u64().is_some_and(|i| i < total as u64))
        {
            return Err(cfg(format!(
                "post_processor.special_tokens[{name:?}] id {bad} is not a token id (vocabulary of {total})"
            )));
        }
    }
    for template in ["single", "pair"] {
        for item in field(post, template)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // `single` gets one sequence, A; indexing a B there panics inside `tokenizers` (fuzz find).
            if let Some(seq) = item.get("Sequence") {
                let id = field(seq, "id").and_then(Value::as_str).unwrap_or("");
                let allowed: &[&str] = if template == "single" {
                    &["A"]
                } else {
                    &["A", "B"]
                };
                if !allowed.contains(&id) {
                    return Err(cfg(format!(
                        "post_processor.{template} uses sequence {id:?}; it can use only {}",
                        allowed.join(" and ")
                    )));
                }
            }
            if let Some(tok) = item.get("SpecialToken") {
                let id = field(tok, "id").and_then(Value::as_str).unwrap_or("");
                if !specials.is_some_and(|m| m.contains_key(id)) {
                    return Err(cfg(format!(
                        "post_processor.{template} uses special token {id:?}, which post_processor.special_tokens does not define"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn bool_field(v: &Value, key: &str) -> bool {
    field(v, key).and_then(Value::as_bool).unwrap_or(false)
}

fn cfg(msg: String) -> TokenizerError {
    TokenizerError::Config(msg)
}

/// Reads a Llama-style (SentencePiece BPE) `tokenizers` JSON; other model families are rejected clearly.
pub(crate) fn inspect(text: &str) -> Result<JsonInfo> {
    let v: Value = serde_json::from_str(text).map_err(|e| TokenizerError::Json {
        what: "tokenizer JSON".into(),
        cause: e,
    })?;
    let model = field(&v, "model").ok_or_else(|| cfg("tokenizer JSON has no `model`".into()))?;
    let mtype = field(model, "type").and_then(Value::as_str).unwrap_or("");
    if mtype != "BPE" {
        return Err(TokenizerError::Unsupported(format!(
            "tokenizer JSON model.type = {mtype:?}; only SentencePiece-style \"BPE\" is supported"
        )));
    }
    // SentencePiece-style BPE has neither; `tokenizers` also panics building merges when a merge's second
    // part is shorter than `continuing_subword_prefix` (third fuzz find).
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(x) = field(model, key).filter(|x| x.as_str() != Some("")) {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer JSON model.{key} = {x}; SentencePiece-style BPE has none"
            )));
        }
    }
    let mut byte_level = false;
    if let Some(pre) = field(&v, "pre_tokenizer") {
        let t = field(pre, "type").and_then(Value::as_str).unwrap_or("");
        byte_level = is_byte_level_pre(pre);
        if t != "Metaspace" && !byte_level {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer JSON pre_tokenizer.type = {t:?}; only Llama-style JSON (no pre-tokenizer or Metaspace) \
                 or byte-level BPE (Sequence of Split regexes ending in ByteLevel without its own regex) is supported"
            )));
        }
    }
    let vocab_obj = field(model, "vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| cfg("tokenizer JSON model.vocab is not an object".into()))?;
    let n = vocab_obj.len();
    let mut vocab: Vec<Option<String>> = vec![None; n];
    for (piece, id) in vocab_obj {
        let id = id
            .as_u64()
            .ok_or_else(|| cfg(format!("model.vocab[{piece:?}] = {id} is not a token id")))?;
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| vocab.get_mut(i))
            .ok_or_else(|| {
                cfg(format!(
                    "model.vocab[{piece:?}] = {id} leaves a gap (vocabulary has {n} entries)"
                ))
            })?;
        if slot.is_some() {
            return Err(cfg(format!(
                "model.vocab id {id} is used twice (again by {piece:?})"
            )));
        }
        *slot = Some(piece.clone());
    }
    let vocab: Vec<String> = vocab.into_iter().map(|p| p.unwrap_or_default()).collect();

    let mut merges = Vec::new();
    for (i, m) in field(model, "merges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let pair = match m {
            Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())),
            Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some(l), Some(r)) => Some((l.to_owned(), r.to_owned())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| cfg(format!("model.merges[{i}] = {m} is not a pair")))?);
    }

    let mut added = Vec::new();
    for (i, a) in field(&v, "added_tokens")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let id = field(a, "id")
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| cfg(format!("added_tokens[{i}].id is missing or not a u32")))?;
        let content = field(a, "content")
            .and_then(Value::as_str)
            .ok_or_else(|| cfg(format!("added_tokens[{i}].content is missing")))?
            .to_owned();
        added.push(AddedTok {
            id,
            content,
            special: bool_field(a, "special"),
            lstrip: bool_field(a, "lstrip"),
            rstrip: bool_field(a, "rstrip"),
            normalized: bool_field(a, "normalized"),
            single_word: bool_field(a, "single_word"),
        });
    }

    let mut add_dummy_prefix = false;
    let mut stack: Vec<&Value> = field(&v, "normalizer").into_iter().collect();
    while let Some(n) = stack.pop() {
        match field(n, "type").and_then(Value::as_str) {
            Some("Sequence") => stack.extend(
                field(n, "normalizers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            ),
            Some("Prepend") => {
                add_dummy_prefix |= field(n, "prepend").and_then(Value::as_str) == Some("\u{2581}")
            }
            _ => {}
        }
    }
    let mut prepend_first_only = false;
    if let Some(pre) = field(&v, "pre_tokenizer").filter(|_| !byte_level) {
        let scheme = field(pre, "prepend_scheme").and_then(Value::as_str);
        prepend_first_only = scheme == Some("first");
        add_dummy_prefix |=
            matches!(scheme, Some("first") | Some("always")) || bool_field(pre, "add_prefix_space");
    }

    let mut controls = Vec::new();
    if let Some(decs) = field(&v, "decoder")
        .and_then(|d| field(d, "decoders"))
        .and_then(Value::as_array)
    {
        for d in decs {
            if field(d, "type").and_then(Value::as_str) == Some("Replace")
                && field(d, "content").and_then(Value::as_str) == Some("")
            {
                if let Some(p) = d
                    .get("pattern")
                    .and_then(|p| field(p, "Regex"))
                    .and_then(Value::as_str)
                {
                    controls.extend(parse_control_pattern(p).unwrap_or_default());
                }
            }
        }
    }

    let (mut post_bos, mut post_eos) = (None, None);
    if let Some(post) = field(&v, "post_processor") {
        check_template_processing(
            post,
            vocab
                .len()
                .max(added.iter().map(|a| a.id as usize + 1).max().unwrap_or(0)),
        )?;
        if field(post, "type").and_then(Value::as_str) == Some("TemplateProcessing") {
            let single = field(post, "single")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut seen_seq = false;
            for item in single {
                if item.get("Sequence").is_some() {
                    seen_seq = true;
                } else if let Some(id) = item
                    .get("SpecialToken")
                    .and_then(|s| field(s, "id"))
                    .and_then(Value::as_str)
                {
                    if seen_seq {
                        post_eos = Some(id.to_owned());
                    } else {
                        post_bos = Some(id.to_owned());
                    }
                }
            }
        }
    }

    Ok(JsonInfo {
        vocab,
        merges,
        added,
        unk_token: field(model, "unk_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
        byte_fallback: bool_field(model, "byte_fallback"),
        byte_level,
        add_dummy_prefix,
        prepend_first_only,
        controls,
        post_bos,
        post_eos,
    })
}

/// `Sequence[Split…, ByteLevel(use_regex=false)]` (what [`crate::TokenizerSpec::from_gguf_byte_level`] writes)
/// or a lone `ByteLevel` without its own regex: the pieces are byte-level strings.
fn is_byte_level_pre(pre: &Value) -> bool {
    let byte_level_last = |p: &Value| {
        field(p, "type").and_then(Value::as_str) == Some("ByteLevel")
            && !bool_field(p, "add_prefix_space")
            && field(p, "use_regex").and_then(Value::as_bool) == Some(false)
    };
    match field(pre, "type").and_then(Value::as_str) {
        Some("ByteLevel") => byte_level_last(pre),
        Some("Sequence") => {
            let items = field(pre, "pretokenizers")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            match items.split_last() {
                Some((last, rest)) => {
                    byte_level_last(last)
                        && rest
                            .iter()
                            .all(|p| field(p, "type").and_then(Value::as_str) == Some("Split"))
                }
                None => false,
            }
        }
        _ => false,
    }
}

/// `<0xHH>` → the byte, as SentencePiece and `tokenizers`' ByteFallback spell byte pieces.
pub(crate) fn byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_pattern_round_trips() {
        let c = ["<|Human|>", "a.b", "x\\y", "[z]"];
        let p = control_pattern(&c);
        assert_eq!(
            parse_control_pattern(&p).unwrap(),
            c.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn merges_follow_scores_and_ids() {
        let k = PieceKind::Normal;
        let pieces = vec![
            ("a".to_string(), -5.0, k),
            ("b".to_string(), -6.0, k),
            ("ab".to_string(), -1.0, k),
            ("abb".to_string(), -2.0, k),
            ("bb".to_string(), -3.0, k),
            ("<ab>".to_string(), 0.0, PieceKind::Control),
        ];
        let m = derive_merges(&pieces).unwrap();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        // "abb" splits as (a, bb) [ids 0,4] and (ab, b) [ids 2,1]: ordered by left id.
        assert_eq!(
            m,
            vec![s("a", "b"), s("a", "bb"), s("ab", "b"), s("b", "b")]
        );
    }
}
