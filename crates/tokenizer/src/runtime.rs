//! Runtime tokenizer: encoding through the `tokenizers` crate, decoding with slow-`LlamaTokenizer` semantics.

use std::str::FromStr;

use tokenizers::Model;

use crate::hf_json::{self, JsonInfo};
use crate::spec::{token_type, TokenizerSpec};
use crate::{Result, TokenizerError};

/// How SentencePiece itself decodes a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpKind {
    Normal,
    Byte(u8),
    /// Decodes to nothing.
    Control,
    Unknown,
}

/// SentencePiece's surface for the unknown piece (`kDefaultUnknownSymbol`).
const UNK_SURFACE: &str = " \u{2047} ";
const SPACE: char = '\u{2581}';

/// A piece handed to SentencePiece's decoder by the slow tokenizer: a vocabulary id, or a string that is not a
/// piece (the first token after its leading `▁` was cut), which SentencePiece echoes verbatim.
enum Piece<'a> {
    Id(u32),
    Raw(&'a str),
}

pub struct MedDrTokenizer {
    tk: tokenizers::Tokenizer,
    /// Content of every id (pieces, then added tokens).
    contents: Vec<String>,
    sp_kind: Vec<SpKind>,
    /// Hugging Face special tokens (`all_special_ids`).
    special: Vec<bool>,
    /// Tokens the slow tokenizer emits verbatim between `' '`-joined sub-texts: non-special added tokens and
    /// special added tokens beyond the SentencePiece vocabulary (transformers 4.37 `legacy_added_tokens`).
    legacy_added: Vec<bool>,
    /// SentencePiece `add_dummy_prefix`: its decoder then drops the `▁` of the first piece.
    add_dummy_prefix: bool,
    /// Ids of the `tokenizers` added vocabulary: the points where its encoder splits the text.
    added: Vec<bool>,
    /// See [`JsonInfo::prepend_first_only`].
    prepend_first_only: bool,
    /// The same tokenizer with `encode_special_tokens` set: special added tokens are not split out.
    literal: tokenizers::Tokenizer,
    /// Byte-level BPE (GPT-2 style, [`crate::byte_level`]): model pieces stand for bytes through GPT-2's
    /// byte ↔ character table, added tokens for their literal text; decoding follows llama.cpp's
    /// `token_to_piece` instead of the slow `LlamaTokenizer`.
    byte_level: bool,
    /// Byte-level only: bytes without a single-byte piece in the vocabulary; text holding one is refused.
    missing_bytes: Vec<u8>,
}

/// Token ids of a text with a stretch of user text in it, see [`MedDrTokenizer::encode_with_user_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTextEncoding {
    pub ids: Vec<u32>,
    /// Control tokens typed in the user's text (contents, in order, repeats kept), whichever way they were
    /// encoded: with `literal` false they are in `ids` as control tokens, with `literal` true as plain text.
    pub typed_control_tokens: Vec<String>,
}

impl std::fmt::Debug for MedDrTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MedDrTokenizer")
            .field("vocab_size", &self.contents.len())
            .finish_non_exhaustive()
    }
}

impl MedDrTokenizer {
    /// Builds from the spec's JSON; SentencePiece piece types come from `token_types` (GGUF is authoritative).
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self> {
        let mut t = Self::from_hf_json(&spec.hf_json)?;
        if t.contents.len() != spec.tokens.len() || spec.token_types.len() != spec.tokens.len() {
            return Err(TokenizerError::config(format!(
                "tokenizer JSON has {} tokens but the spec has {} tokens / {} types",
                t.contents.len(),
                spec.tokens.len(),
                spec.token_types.len()
            )));
        }
        for (i, &ty) in spec.token_types.iter().enumerate() {
            t.sp_kind[i] = match ty {
                token_type::BYTE if t.byte_level => SpKind::Normal,
                token_type::BYTE => hf_json::byte_piece(&t.contents[i])
                    .map(SpKind::Byte)
                    .ok_or_else(|| {
                        TokenizerError::config(format!(
                            "token {i} {:?} has type BYTE but is not <0xHH>",
                            t.contents[i]
                        ))
                    })?,
                token_type::CONTROL => SpKind::Control,
                token_type::UNKNOWN => SpKind::Unknown,
                _ => SpKind::Normal,
            };
        }
        t.add_dummy_prefix = spec.add_space_prefix;
        Ok(t)
    }

    /// Builds from a `tokenizers` JSON alone (as written by [`TokenizerSpec`] or a Llama-style `tokenizer.json`).
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let info: JsonInfo = hf_json::inspect(json)?;
        let tk = tokenizers::Tokenizer::from_str(json).map_err(TokenizerError::tk)?;
        let n = info.vocab.len();
        let total = n.max(
            info.added
                .iter()
                .map(|a| a.id as usize + 1)
                .max()
                .unwrap_or(0),
        );
        if tk.get_vocab_size(true) != total {
            return Err(TokenizerError::config(format!(
                "tokenizer JSON: {} tokens per the tokenizers crate, {total} per vocab + added_tokens (gap or clash)",
                tk.get_vocab_size(true)
            )));
        }
        let mut contents = info.vocab.clone();
        contents.resize(total, String::new());
        let mut special = vec![false; total];
        let mut legacy_added = vec![false; total];
        let mut filled = vec![false; total];
        for a in &info.added {
            let i = a.id as usize;
            if i < n && contents[i] != a.content {
                return Err(TokenizerError::AddedToken {
                    content: a.content.clone(),
                    id: a.id.into(),
                    problem: format!("is the vocabulary entry {:?}", contents[i]),
                });
            }
            contents[i] = a.content.clone();
            filled[i] = true;
            special[i] = a.special;
            legacy_added[i] = !a.special || i >= n;
        }
        if let Some(i) = (n..total).find(|&i| !filled[i]) {
            return Err(TokenizerError::IdOutOfRange {
                id: i as u64,
                vocab_size: total,
            })
            .map_err(|e| {
                TokenizerError::config(format!("tokenizer JSON leaves id {i} undefined ({e})"))
            });
        }
        let controls: std::collections::HashSet<&str> =
            info.controls.iter().map(String::as_str).collect();
        let sp_kind = contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i >= n {
                    SpKind::Normal
                } else if info.unk_token.as_deref() == Some(c.as_str()) {
                    SpKind::Unknown
                } else if let Some(b) = hf_json::byte_piece(c).filter(|_| info.byte_fallback) {
                    SpKind::Byte(b)
                } else if controls.contains(c.as_str()) {
                    SpKind::Control
                } else {
                    SpKind::Normal
                }
            })
            .collect();
        let mut literal = tk.clone();
        literal.set_encode_special_tokens(true);
        let missing_bytes = if info.byte_level {
            (0..=255u8)
                .filter(|&b| {
                    let c = crate::byte_level::byte_to_char(b);
                    tk.get_model()
                        .token_to_id(c.encode_utf8(&mut [0u8; 4]))
                        .is_none()
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            tk,
            contents,
            sp_kind,
            special,
            legacy_added,
            add_dummy_prefix: info.add_dummy_prefix,
            added: filled,
            prepend_first_only: info.prepend_first_only,
            literal,
            byte_level: info.byte_level,
            missing_bytes,
        })
    }

    /// Token ids of `text`; added tokens are matched first; BOS/EOS only if the post-processor adds them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.check_bytes(text)?;
        let enc = self.tk.encode(text, true).map_err(TokenizerError::tk)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with llama.cpp's `llama_tokenize` switches: `add_special` adds BOS/EOS as the
    /// vocabulary says ([`Self::encode`] always does); with `parse_special` false, special (control) tokens
    /// written in the text are not matched and are tokenized as text, while non-special added (USER_DEFINED)
    /// tokens still are, as llama.cpp's `tokenizer_st_partition` and `tokenizers`' `encode_special_tokens` do.
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        self.check_bytes(text)?;
        let tk = if parse_special {
            &self.tk
        } else {
            &self.literal
        };
        let enc = tk.encode(text, add_special).map_err(TokenizerError::tk)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Byte-level BPE: the `tokenizers` BPE would drop a byte without a piece silently; refuse instead.
    fn check_bytes(&self, text: &str) -> Result<()> {
        if self.missing_bytes.is_empty() {
            return Ok(());
        }
        match text.bytes().find(|b| self.missing_bytes.contains(b)) {
            Some(b) => Err(TokenizerError::Unsupported(format!(
                "the text holds byte 0x{b:02X}, which this byte-level vocabulary has no piece for"
            ))),
            None => Ok(()),
        }
    }

    /// True for a byte-level BPE vocabulary (llama.cpp `tokenizer.ggml.model = "gpt2"`).
    pub fn is_byte_level(&self) -> bool {
        self.byte_level
    }

    /// A token that carries chat or model markup: a Hugging Face special token or a SentencePiece control
    /// piece. Such ids must never come out of text the user typed, when that text is taken literally.
    pub fn is_control(&self, id: u32) -> bool {
        self.is_special(id) || self.sp_kind.get(id as usize) == Some(&SpKind::Control)
    }

    /// Encodes `text` as [`Self::encode`] does and reports the control tokens (see [`Self::is_control`]) that
    /// overlap `user` (a byte range of `text`: text typed by a person, not by the template).
    ///
    /// With `literal` false the ids are exactly [`Self::encode`]'s, i.e. upstream's: typed `<|im_end|>` is
    /// the control token, as the slow `LlamaTokenizer` parses it. With `literal` true, the stretch between the
    /// template's own added tokens around `user` is encoded as the `tokenizers` pipeline would if no special
    /// token were known there (`encode_special_tokens`), and a control id that the model's own pieces still
    /// produce (SentencePiece USER_DEFINED pieces such as Yi's `<|im_end|>`) is spelled with smaller pieces,
    /// down to byte pieces. The result decodes to the same text and holds no control id inside the stretch.
    /// When nothing control-like is typed, both modes give [`Self::encode`]'s ids.
    ///
    /// Errors: `user` not a char-boundary range of `text`; a literal stretch that cannot be spelled without
    /// control ids (no byte pieces); a Metaspace `prepend_scheme: "first"` tokenizer with a stretch that does
    /// not start the text (its `▁` rule depends on the stretch's position).
    pub fn encode_with_user_text(
        &self,
        text: &str,
        user: std::ops::Range<usize>,
        literal: bool,
    ) -> Result<UserTextEncoding> {
        self.encode_with_user_texts(text, std::slice::from_ref(&user), literal)
    }

    /// [`Self::encode_with_user_text`] with several stretches of user text (a conversation's questions), given
    /// in order and not overlapping; each is handled as the single one is.
    pub fn encode_with_user_texts(
        &self,
        text: &str,
        user: &[std::ops::Range<usize>],
        literal: bool,
    ) -> Result<UserTextEncoding> {
        let mut prev_end = 0;
        for r in user {
            if r.start > r.end
                || r.start < prev_end
                || r.end > text.len()
                || !text.is_char_boundary(r.start)
                || !text.is_char_boundary(r.end)
            {
                return Err(TokenizerError::config(format!(
                    "user text range {}..{} is not a character range of a {}-byte text after the previous range",
                    r.start,
                    r.end,
                    text.len()
                )));
            }
            prev_end = r.end;
        }
        self.check_bytes(text)?;
        let enc = self.tk.encode(text, true).map_err(TokenizerError::tk)?;
        let ids = enc.get_ids();
        let offsets = enc.get_offsets();
        // 1 marks what the post-processor added (BOS/EOS); their offsets say nothing about the text.
        let from_post = enc.get_special_tokens_mask();
        let overlaps = |i: usize, r: &std::ops::Range<usize>| {
            let (a, b) = offsets[i];
            from_post[i] == 0 && a < r.end && b > r.start
        };
        let in_user = |i: usize| user.iter().any(|r| overlaps(i, r));
        let typed: Vec<usize> = (0..ids.len())
            .filter(|&i| in_user(i) && self.is_control(ids[i]))
            .collect();
        let typed_control_tokens = typed
            .iter()
            .map(|&i| self.contents[ids[i] as usize].clone())
            .collect();
        if !literal || typed.is_empty() {
            return Ok(UserTextEncoding {
                ids: ids.to_vec(),
                typed_control_tokens,
            });
        }
        // Each stretch to re-encode: from the end of the last template added token before a user range to the
        // start of the first one after it. `tokenizers` normalises and encodes each stretch between added
        // tokens on its own, so re-encoding a stretch alone changes nothing outside it.
        let is_boundary =
            |i: usize| from_post[i] == 0 && self.added[ids[i] as usize] && !in_user(i);
        // (first id index replaced, end id index, stretch start byte, stretch end byte), in order.
        let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
        for r in user {
            if !typed.iter().any(|&i| overlaps(i, r)) {
                continue;
            }
            let before = (0..ids.len())
                .filter(|&i| is_boundary(i) && offsets[i].1 <= r.start)
                .last();
            let after = (0..ids.len()).find(|&i| is_boundary(i) && offsets[i].0 >= r.end);
            let start = before.map_or(0, |i| offsets[i].1);
            let end = after.map_or(text.len(), |i| offsets[i].0);
            if self.prepend_first_only && start > 0 {
                return Err(TokenizerError::Unsupported(format!(
                    "literal user text with a Metaspace prepend_scheme \"first\" tokenizer: the text at byte {start} \
                     cannot be re-encoded on its own"
                )));
            }
            let first = before.map_or(0, |i| i + 1);
            let last = after.unwrap_or(ids.len());
            // BOS/EOS of the post-processor stay where they are: at the ends of the replaced run.
            let lead = (first..last).take_while(|&i| from_post[i] == 1).count();
            let trail = (first + lead..last)
                .rev()
                .take_while(|&i| from_post[i] == 1)
                .count();
            let span = (first + lead, last - trail, start, end);
            if spans.last() != Some(&span) {
                spans.push(span);
            }
        }
        let mut out: Vec<u32> = Vec::with_capacity(ids.len());
        let mut next = 0;
        for (first, last, start, end) in spans {
            out.extend(&ids[next..first]);
            let stretch = self
                .literal
                .encode(&text[start..end], false)
                .map_err(TokenizerError::tk)?;
            for &id in stretch.get_ids() {
                if self.is_control(id) {
                    self.spell_without_controls(&self.contents[id as usize], &mut out)?;
                } else {
                    out.push(id);
                }
            }
            next = last;
        }
        out.extend(&ids[next..]);
        Ok(UserTextEncoding {
            ids: out,
            typed_control_tokens,
        })
    }

    /// Appends model pieces for `s` (no `▁` added) that contain no control id: the model's own tokenisation
    /// of each half, recursively, and byte pieces for a single character that is itself a control piece.
    fn spell_without_controls(&self, s: &str, out: &mut Vec<u32>) -> Result<()> {
        if self.byte_level {
            let mapped: String = s.bytes().map(crate::byte_level::byte_to_char).collect();
            return self.spell_byte_level(&mapped, out);
        }
        let n_chars = s.chars().count();
        if n_chars <= 1 {
            let mut buf = [0u8; 4];
            for c in s.chars() {
                for b in c.encode_utf8(&mut buf).bytes() {
                    let piece = format!("<0x{b:02X}>");
                    match self.tk.get_model().token_to_id(&piece) {
                        Some(id) if self.sp_kind.get(id as usize) == Some(&SpKind::Byte(b)) => out.push(id),
                        _ => {
                            return Err(TokenizerError::Unsupported(format!(
                                "{s:?} cannot be spelled without a control token: the vocabulary has no byte piece {piece}"
                            )))
                        }
                    }
                }
            }
            return Ok(());
        }
        let mid = s
            .char_indices()
            .nth(n_chars / 2)
            .map_or(s.len(), |(i, _)| i);
        for half in [&s[..mid], &s[mid..]] {
            let toks = self
                .tk
                .get_model()
                .tokenize(half)
                .map_err(TokenizerError::tk)?;
            if toks.iter().any(|t| self.is_control(t.id)) {
                self.spell_without_controls(half, out)?;
            } else {
                out.extend(toks.iter().map(|t| t.id));
            }
        }
        Ok(())
    }

    /// [`Self::spell_without_controls`] for byte-level BPE, on text already mapped to byte-level characters:
    /// each half through the model, down to the single-byte pieces.
    fn spell_byte_level(&self, mapped: &str, out: &mut Vec<u32>) -> Result<()> {
        let n_chars = mapped.chars().count();
        if n_chars <= 1 {
            for c in mapped.chars() {
                match self.tk.get_model().token_to_id(c.encode_utf8(&mut [0u8; 4])) {
                    Some(id) if !self.is_control(id) => out.push(id),
                    _ => {
                        return Err(TokenizerError::Unsupported(format!(
                            "byte-level piece {c:?} is missing or a control token: the text cannot be spelled without one"
                        )))
                    }
                }
            }
            return Ok(());
        }
        let mid = mapped
            .char_indices()
            .nth(n_chars / 2)
            .map_or(mapped.len(), |(i, _)| i);
        for half in [&mapped[..mid], &mapped[mid..]] {
            let toks = self
                .tk
                .get_model()
                .tokenize(half)
                .map_err(TokenizerError::tk)?;
            if toks.iter().any(|t| self.is_control(t.id)) {
                self.spell_byte_level(half, out)?;
            } else {
                out.extend(toks.iter().map(|t| t.id));
            }
        }
        Ok(())
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tk.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.contents.get(id as usize).map(String::as_str)
    }

    pub fn vocab_size(&self) -> usize {
        self.contents.len()
    }

    /// The bytes token `id` stands for, as OpenAI's log-probability `bytes` field gives them: a byte piece
    /// `<0xNN>` is that one byte (it may be part of a character), SentencePiece's `▁` is a space, any other
    /// piece is its UTF-8 text. `None` for an id outside the vocabulary.
    ///
    /// For byte-level BPE: an added (control / user-defined) token is its UTF-8 text, any other piece is
    /// mapped back through GPT-2's byte table ([`crate::piece_bytes`]), so it may be part of a character.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.contents.get(id as usize)?;
        if self.byte_level {
            return Some(self.byte_level_piece(id as usize));
        }
        let b = piece.as_bytes();
        if b.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
            if let Ok(v) = u8::from_str_radix(&piece[3..5], 16) {
                return Some(vec![v]);
            }
        }
        Some(piece.replace(SPACE, " ").into_bytes())
    }

    /// Hugging Face special token (dropped by `skip_special_tokens`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Decodes like transformers 4.37's slow `LlamaTokenizer.decode` (legacy, `spaces_between_special_tokens`
    /// left at its default `True`):
    /// 1. with `skip_special`, HF special ids are dropped;
    /// 2. "legacy added" tokens (see [`MedDrTokenizer`] fields) split the rest into sub-texts that are joined
    ///    with `' '`; an empty sub-text before such a token is dropped;
    /// 3. each run of other ids goes through `convert_tokens_to_string`: the first token loses one leading `▁`;
    ///    a special token that follows a non-special token (not at the start) is preceded by `' '`; the
    ///    non-special stretches are decoded by SentencePiece (controls vanish, byte pieces are decoded as UTF-8
    ///    with one U+FFFD per invalid byte).
    ///
    /// For byte-level BPE the rules are llama.cpp's `token_to_piece` / `llama_detokenize` (with
    /// `unparse_special` = `!skip_special`, no space clean-up): with `skip_special`, special ids are dropped;
    /// added tokens are their text, other pieces their bytes ([`Self::token_bytes`]); the bytes are read as
    /// UTF-8 with U+FFFD for each maximal invalid sequence. Concatenating pieces is lossless, so the text of
    /// a prefix of `ids` is a prefix of the text of `ids` up to an unfinished character at its end.
    ///
    /// The `tokenizers` decoder cannot express rules 2–3 (nor SentencePiece's per-byte U+FFFD rule, its
    /// ByteFallback replaces a whole invalid byte run), hence this layer.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.contents.len();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(TokenizerError::IdOutOfRange {
                id: bad.into(),
                vocab_size: n,
            });
        }
        if self.byte_level {
            let mut bytes = Vec::new();
            for &id in ids {
                if !(skip_special && self.special[id as usize]) {
                    bytes.extend(self.byte_level_piece(id as usize));
                }
            }
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        let mut sub_texts: Vec<String> = Vec::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            let i = id as usize;
            if skip_special && self.special[i] {
                continue;
            }
            if self.legacy_added[i] {
                if !run.is_empty() {
                    let s = self.tokens_to_string(&run);
                    if !s.is_empty() {
                        sub_texts.push(s);
                    }
                    run.clear();
                }
                sub_texts.push(self.contents[i].clone());
            } else {
                run.push(id);
            }
        }
        if !run.is_empty() {
            sub_texts.push(self.tokens_to_string(&run));
        }
        Ok(sub_texts.join(" "))
    }

    /// Bytes of byte-level token `i` (in range): added tokens literally, model pieces through the byte table.
    fn byte_level_piece(&self, i: usize) -> Vec<u8> {
        if self.added[i] {
            self.contents[i].as_bytes().to_vec()
        } else {
            crate::byte_level::piece_bytes(&self.contents[i])
        }
    }

    /// `LlamaTokenizer.convert_tokens_to_string` (legacy).
    fn tokens_to_string(&self, run: &[u32]) -> String {
        let first_cut: Option<&str> = run
            .first()
            .and_then(|&id| self.contents[id as usize].strip_prefix(SPACE));
        let mut out = String::new();
        let mut seg: Vec<Piece> = Vec::new();
        let mut prev_special = false;
        for (i, &id) in run.iter().enumerate() {
            if self.special[id as usize] {
                if !prev_special && i != 0 {
                    out.push(' ');
                }
                self.sp_decode(&seg, &mut out);
                seg.clear();
                out.push_str(&self.contents[id as usize]);
                prev_special = true;
            } else {
                let piece = match (i, first_cut) {
                    (0, Some(cut)) => match self.tk.get_model().token_to_id(cut) {
                        Some(pid) => Piece::Id(pid),
                        None => Piece::Raw(cut),
                    },
                    _ => Piece::Id(id),
                };
                seg.push(piece);
                prev_special = false;
            }
        }
        self.sp_decode(&seg, &mut out);
        out
    }

    /// SentencePiece `DecodePieces`, appending to `out` (which starts a fresh decode: `is_bos_ws` is judged on
    /// the text this call produces).
    fn sp_decode(&self, pieces: &[Piece], out: &mut String) {
        let start = out.len();
        let mut bytes: Vec<u8> = Vec::new();
        for p in pieces {
            let id = match p {
                Piece::Id(id) => *id as usize,
                Piece::Raw(s) => {
                    flush_bytes(&mut bytes, out);
                    out.push_str(s);
                    continue;
                }
            };
            match self.sp_kind[id] {
                SpKind::Byte(b) => bytes.push(b),
                kind => {
                    flush_bytes(&mut bytes, out);
                    match kind {
                        SpKind::Control => {}
                        SpKind::Unknown => out.push_str(UNK_SURFACE),
                        _ => {
                            let mut piece = self.contents[id].as_str();
                            if out.len() == start && self.add_dummy_prefix {
                                piece = piece.strip_prefix(SPACE).unwrap_or(piece);
                            }
                            out.extend(piece.chars().map(|c| if c == SPACE { ' ' } else { c }));
                        }
                    }
                }
            }
        }
        flush_bytes(&mut bytes, out);
    }

    /// Starts a streaming decoder for generated ids.
    pub fn decode_stream(&self) -> DecodeStream<'_> {
        DecodeStream {
            tokenizer: self,
            ids: Vec::new(),
            emitted: 0,
            prefix: 0,
            read: 0,
            prefix_text: String::new(),
        }
    }
}

/// SentencePiece turns a run of byte pieces into text one UTF-8 character at a time; each byte that does not
/// start a valid character becomes one U+FFFD.
fn flush_bytes(bytes: &mut Vec<u8>, out: &mut String) {
    let mut rest: &[u8] = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (valid, tail) = rest.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction of `valid_up_to`.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{FFFD}');
                rest = &tail[1..];
            }
        }
    }
    bytes.clear();
}

/// Incremental detokenizer for generation, with `skip_special_tokens=True` semantics (what upstream `chat()`
/// returns). Each step decodes only a short window of the latest ids (the ids of the last text handed out,
/// then the new ones) and yields the text past the window's first part, as `tokenizers`' `DecodeStream`
/// does: a step costs the window, not the whole answer (re-decoding everything made a 4,096-token answer
/// quadratic). While the text ends in U+FFFD (possibly an unfinished multi-byte character) it holds back,
/// so a delta never has to be retracted. The deltas add up to [`MedDrTokenizer::decode`] of all the ids
/// (tested on random id sequences against the whole decode, for SentencePiece and byte-level vocabularies).
pub struct DecodeStream<'a> {
    tokenizer: &'a MedDrTokenizer,
    ids: Vec<u32>,
    /// Bytes of decoded text already handed out.
    emitted: usize,
    /// The window starts at `ids[prefix]`; `ids[prefix..read]` decode to `prefix_text`, whose text (as part
    /// of the whole) is handed out already; `ids[read..]` have not been.
    prefix: usize,
    read: usize,
    prefix_text: String,
}

impl DecodeStream<'_> {
    /// Adds one generated id; returns the new text, if any is ready.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids[self.prefix..], true)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let delta = match text.strip_prefix(self.prefix_text.as_str()) {
            Some("") => return Ok(None),
            Some(d) => d.to_owned(),
            // The window's start changed how its first part decodes (never seen; kept for safety): hand out
            // what the whole decode adds and restart the window from the first id.
            None => {
                let full = self.tokenizer.decode(&self.ids, true)?;
                let d = self.delta(&full);
                self.prefix = 0;
                self.read = self.ids.len();
                self.prefix_text = full;
                return Ok(d);
            }
        };
        self.emitted += delta.len();
        // The next window starts at the ids of this delta, unless they decode to nothing on their own (a
        // lone space piece, a skipped special): a window's first piece loses its leading space, and that
        // must happen inside the part already handed out.
        let own = self.tokenizer.decode(&self.ids[self.read..], true)?;
        if own.is_empty() {
            self.prefix_text = text;
        } else {
            self.prefix = self.read;
            self.prefix_text = own;
        }
        self.read = self.ids.len();
        Ok(Some(delta))
    }

    /// Adds the last id of a generation and returns everything not yet handed out, held-back bytes included:
    /// an unfinished character at the very end becomes one U+FFFD per byte, as upstream's decode gives. Every
    /// streaming path calls this for its final token, so what was streamed is exactly the final text.
    pub fn step_last(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.finish()
    }

    /// Flushes whatever is held back (e.g. a genuinely invalid byte at the end of generation). Decodes every
    /// id once, so the end of the stream is exactly the whole decode.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self.tokenizer.decode(&self.ids, true)?;
        let d = self.delta(&text);
        self.prefix = 0;
        self.read = self.ids.len();
        self.prefix_text = text;
        Ok(d)
    }

    /// The whole text decoded so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true)
    }

    /// What the whole decode `text` adds past the text handed out.
    fn delta(&mut self, text: &str) -> Option<String> {
        // With specials skipped, appending ids only appends text once byte sequences are complete; should a
        // prefix ever change anyway, hand out only what extends past the last emitted position.
        if text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return None;
        }
        let d = text[self.emitted..].to_owned();
        self.emitted = text.len();
        Some(d)
    }
}
