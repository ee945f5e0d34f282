//! A plain llama GGUF's own chat template (`tokenizer.chat_template`, Hugging Face Jinja), rendered with
//! minijinja the way transformers' `apply_chat_template` and llama.cpp's Jinja path (`--jinja`) render it:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, `raise_exception`, Python string methods
//! (`.strip()`, `.startswith()`…), context `messages`, `add_generation_prompt`, `bos_token`, `eos_token`.
//!
//! Why minijinja rather than our own: templates are programs (loops, conditions, filters); a Jinja engine
//! made for the job is the only sane way to run them, and minijinja builds for wasm32 as the browser needs.

use std::ops::Range;

use minijinja::{context, Environment, Error, ErrorKind};

use crate::{Result, RuntimeError};

/// Instructions a template may execute per render (a real chat template needs a few thousand per message).
const TEMPLATE_FUEL: u64 = 10_000_000;

/// One chat message for a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// Renders `template` over `messages` with the generation prompt added. Returns the text and, in order, the
/// byte range where each user message's content landed in it (empty when the template rewrote the content
/// beyond recognition: such text cannot be kept literal, see [`crate::UserText`]).
///
/// Errors: [`RuntimeError::ChatTemplate`] with the template's own message (a syntax error, an unknown
/// filter, a `raise_exception` such as "Conversation roles must alternate").
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    bos_token: &str,
    eos_token: &str,
) -> Result<(String, Vec<Range<usize>>)> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| RuntimeError::ChatTemplate {
            reason: e.to_string(),
        })?;
    env.set_syntax(syntax);
    // A template comes with an untrusted file: a loop that never ends stops with an error instead.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    let err = |e: Error| {
        let mut reason = e.to_string();
        if let Some(d) = e.detail() {
            if !reason.contains(d) {
                reason = format!("{reason}: {d}");
            }
        }
        RuntimeError::ChatTemplate { reason }
    };
    env.add_template("chat", template).map_err(err)?;
    let msgs: Vec<_> = messages
        .iter()
        .map(|m| context! { role => &m.role, content => &m.content })
        .collect();
    let text = env
        .get_template("chat")
        .map_err(err)?
        .render(context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => bos_token,
            eos_token => eos_token,
        })
        .map_err(err)?;
    let mut ranges = Vec::new();
    let mut from = 0;
    for m in messages.iter().filter(|m| m.role == "user") {
        let c = m.content.trim();
        match text[from..].find(c) {
            Some(at) if !c.is_empty() => {
                ranges.push(from + at..from + at + c.len());
                from += at + c.len();
            }
            _ => ranges.push(from..from),
        }
    }
    Ok((text, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn a_chatml_template_renders_with_the_users_text_located() {
        let m = [
            ChatMessage::new("user", "Hi <b>"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "Hi <b>"),
        ];
        let (t, r) = render_chat_template(CHATML, &m, "<s>", "</s>").unwrap();
        assert_eq!(
            t,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi <b><|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nHi <b><|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(r.len(), 2);
        assert!(r[0].end <= r[1].start && &t[r[1].clone()] == "Hi <b>");
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let t = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = render_chat_template(t, &[], "", "").unwrap_err();
        assert!(e.to_string().contains("fuel"), "{e}");
    }

    #[test]
    fn template_errors_are_reported_with_their_message() {
        let t = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversation must start with system') }}{% endif %}";
        let e = render_chat_template(t, &[ChatMessage::new("user", "x")], "", "").unwrap_err();
        assert!(
            e.to_string()
                .contains("Conversation must start with system"),
            "{e}"
        );
        let e = render_chat_template("{% for %}", &[], "", "").unwrap_err();
        assert!(e.to_string().contains("chat template"), "{e}");
        // Python string methods work as in transformers.
        let (t, _) = render_chat_template(
            "{{ messages[0]['content'].strip().upper() }}",
            &[ChatMessage::new("user", " a ")],
            "",
            "",
        )
        .unwrap();
        assert_eq!(t, "A");
    }
}
