//! Upstream's Hermes-2 prompt (`conversation.py` + InternVL-Chat-V1-2 `chat()`).

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
    let q = python_strip(question);
    let image_len = if has_image {
        IMG_START.len() + IMG_CONTEXT.len() * num_image_tokens + IMG_END.len() + 1
    } else {
        0
    };
    let mut p = String::with_capacity(96 + system.len() + q.len() + image_len);
    p.push_str("<|im_start|>system\n");
    p.push_str(system);
    p.push_str("<|im_end|><|im_start|>user\n");
    if has_image {
        p.push_str(IMG_START);
        for _ in 0..num_image_tokens {
            p.push_str(IMG_CONTEXT);
        }
        p.push_str(IMG_END);
        p.push('\n');
    }
    p.push_str(q);
    p.push_str("<|im_end|><|im_start|>assistant\n");
    p
}
