//! Upstream's Hermes-2 prompt (`conversation.py` + InternVL-Chat-V1-2 `chat()`).

use std::ops::Range;

use meddr_tokenizer::MedDrTokenizer;

use crate::{
    check_image_tokens, render_chat_template, ChatMessage, ModelInfo, PromptFormat, Result,
    RuntimeError,
};

/// Renders the file's `tokenizer.chat_template` over `messages` ([`render_chat_template`]) with the file's
/// BOS and EOS texts. When the tokenizer adds BOS itself and the template also writes it, the written one
/// is dropped (llama.cpp does the same), so the prompt has one BOS as the model was trained with.
pub(crate) fn render_file_template(
    tokenizer: &MedDrTokenizer,
    info: &ModelInfo,
    messages: &[ChatMessage],
) -> Result<(String, Vec<Range<usize>>)> {
    // What the post-processor adds to any text: BOS when the file says so.
    let added = tokenizer.encode("")?;
    let bos = added
        .first()
        .and_then(|&id| tokenizer.id_to_token(id))
        .unwrap_or_default()
        .to_owned();
    let eos = tokenizer
        .id_to_token(info.eos_token_id)
        .unwrap_or_default()
        .to_owned();
    let (text, ranges) = render_chat_template(&info.chat_template, messages, &bos, &eos)?;
    match text.strip_prefix(bos.as_str()) {
        Some(rest) if !bos.is_empty() => {
            let cut = bos.len();
            Ok((
                rest.to_owned(),
                ranges
                    .into_iter()
                    .map(|r| r.start.saturating_sub(cut)..r.end.saturating_sub(cut))
                    .collect(),
            ))
        }
        _ => Ok((text, ranges)),
    }
}

pub const IMG_START: &str = "<img>";
pub const IMG_END: &str = "</img>";
pub const IMG_CONTEXT: &str = "<IMG_CONTEXT>";

/// Python's `str.isspace`: Unicode whitespace plus the ASCII separators U+001C..U+001F, which Rust's
/// `char::is_whitespace` does not include; `strip()` must remove exactly what Python removes.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// `<|im_start|>system\n{system}<|im_end|><|im_start|>user\n[<img>{IMG_CONTEXT × n}</img>\n]{question}<|im_end|>
/// <|im_start|>assistant\n` (no newline after `<|im_end|>`), with the question `strip()`ped as upstream's demo
/// passes it.
pub fn build_prompt(
    system: &str,
    question: &str,
    has_image: bool,
    num_image_tokens: usize,
) -> String {
    build_prompt_marked(system, question, has_image, num_image_tokens).0
}

/// [`build_prompt`] and the byte range of the (stripped) question in it.
fn build_prompt_marked(
    system: &str,
    question: &str,
    has_image: bool,
    num_image_tokens: usize,
) -> (String, Range<usize>) {
    let (p, mut user) = render_hermes2(
        system,
        &[],
        python_strip(question),
        has_image.then_some(num_image_tokens),
    );
    (p, user.pop().unwrap_or(0..0))
}

/// Upstream's Hermes-2 rendering (`conversation.py`, `SeparatorStyle.MPT`) of a history and a new question:
/// `<|im_start|>system\n{system}<|im_end|>`, then per turn `<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n`
/// followed by `{a}<|im_end|>` for answered turns. With `image_tokens`, the first question is preceded by
/// `<img>` + that many `<IMG_CONTEXT>` + `</img>\n` (the image belongs to the first turn). Returns the text and
/// the byte range of every question in it (user text), in order. Questions are used as given.
pub(crate) fn render_hermes2(
    system: &str,
    history: &[(&str, &str)],
    question: &str,
    image_tokens: Option<usize>,
) -> (String, Vec<Range<usize>>) {
    let image_len = image_tokens.map_or(0, |n| {
        IMG_START.len() + IMG_CONTEXT.len() * n + IMG_END.len() + 1
    });
    let text_len: usize = history.iter().map(|(q, a)| q.len() + a.len() + 64).sum();
    let mut p = String::with_capacity(96 + system.len() + text_len + question.len() + image_len);
    let mut user = Vec::with_capacity(history.len() + 1);
    p.push_str("<|im_start|>system\n");
    p.push_str(system);
    p.push_str("<|im_end|>");
    let turns = history
        .iter()
        .map(|&(q, a)| (q, Some(a)))
        .chain([(question, None)]);
    for (k, (q, a)) in turns.enumerate() {
        p.push_str("<|im_start|>user\n");
        if let (0, Some(n)) = (k, image_tokens) {
            p.push_str(IMG_START);
            for _ in 0..n {
                p.push_str(IMG_CONTEXT);
            }
            p.push_str(IMG_END);
            p.push('\n');
        }
        let start = p.len();
        p.push_str(q);
        user.push(start..p.len());
        p.push_str("<|im_end|><|im_start|>assistant\n");
        if let Some(a) = a {
            p.push_str(a);
            p.push_str("<|im_end|>");
        }
    }
    (p, user)
}

/// How control tokens typed in a question (`<|im_end|>`, `<|im_start|>system…`, `<IMG_CONTEXT>`) are read.
///
/// Upstream's slow `LlamaTokenizer` parses them as the control tokens they spell, which lets text from a
/// document or another person close the user turn and write a system turn of its own (prompt injection).
/// Defaults, per entry point (README "Control tokens in user text"): `Upstream` where the person typing is
/// the person running the model (the CLI, with a warning; the browser app), `Literal` where text comes from
/// other people (the OpenAI-compatible server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserText {
    /// As upstream: typed control tokens become control ids. The prompt's ids equal upstream's.
    #[default]
    Upstream,
    /// As plain text: the model sees the characters, never a control id (see
    /// [`MedDrTokenizer::encode_with_user_text`]).
    Literal,
}

impl UserText {
    pub fn as_str(self) -> &'static str {
        match self {
            UserText::Upstream => "upstream",
            UserText::Literal => "literal",
        }
    }
}

impl std::str::FromStr for UserText {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "upstream" => Ok(UserText::Upstream),
            "literal" => Ok(UserText::Literal),
            other => Err(RuntimeError::InvalidOption {
                field: "user_text",
                value: format!("{other:?}"),
                reason: "expected \"upstream\" (control tokens parsed, as upstream) or \"literal\" (plain text)",
            }),
        }
    }
}

/// A question's prompt as token ids, see [`encode_prompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    pub ids: Vec<u32>,
    /// Control tokens the question itself contains, in order (empty for ordinary questions).
    pub typed_control_tokens: Vec<String>,
    pub user_text: UserText,
}

impl EncodedPrompt {
    /// What to tell the user when the question's control tokens were parsed as control tokens (`None` when
    /// there were none, or they were read literally). `how`: how this entry point asks for literal text,
    /// e.g. "pass `--user-text literal`".
    pub fn warning(&self, how: &str) -> Option<String> {
        if self.user_text == UserText::Literal || self.typed_control_tokens.is_empty() {
            return None;
        }
        let mut seen: Vec<&str> = Vec::new();
        for t in &self.typed_control_tokens {
            if !seen.contains(&t.as_str()) {
                seen.push(t);
            }
        }
        Some(format!(
            "the question contains control token{} {} that the model reads as chat markup, not as text (as \
             upstream does); if the text is not yours, {how} to read it as plain text",
            if seen.len() == 1 { "" } else { "s" },
            seen.join(", ")
        ))
    }
}

/// Builds upstream's prompt for `question` ([`build_prompt`], with `info`'s system message and image token
/// count; a plain llama file's prompt is the question itself, [`PromptFormat::Raw`]) and tokenizes it, reading control tokens typed in the question as `user_text` says. Then checks
/// what can be checked before any heavy work: an image for a file without a vision encoder, and a question
/// that adds `<IMG_CONTEXT>` tokens of its own ([`check_image_tokens`]).
///
/// The one prompt path of every entry point (CLI `run` and `gsco`, browser session, server).
pub fn encode_prompt(
    tokenizer: &MedDrTokenizer,
    info: &ModelInfo,
    question: &str,
    has_image: bool,
    user_text: UserText,
) -> Result<EncodedPrompt> {
    let num_image_tokens = match (&info.vision, has_image) {
        (Some(v), true) => v.num_image_tokens,
        (None, true) => return Err(RuntimeError::NoVisionEncoder),
        (_, false) => 0,
    };
    let (text, user) = match info.prompt_format {
        PromptFormat::MedDr => {
            build_prompt_marked(&info.system_message, question, has_image, num_image_tokens)
        }
        PromptFormat::Raw => (question.to_owned(), 0..question.len()),
        PromptFormat::Template => {
            let (t, mut r) = render_file_template(
                tokenizer,
                info,
                &[ChatMessage::new("user", python_strip(question))],
            )?;
            (t, r.pop().unwrap_or(0..0))
        }
    };
    let enc = tokenizer.encode_with_user_text(&text, user, user_text == UserText::Literal)?;
    check_image_tokens(&enc.ids, info.image_context_id(tokenizer), num_image_tokens)?;
    Ok(EncodedPrompt {
        ids: enc.ids,
        typed_control_tokens: enc.typed_control_tokens,
        user_text,
    })
}
