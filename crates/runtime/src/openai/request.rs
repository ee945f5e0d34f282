//! OpenAI request bodies (the server's and the browser package's), read leniently as llama-server and mistral.rs read them: every field optional but
//! the prompt, unknown fields ignored, a wrong type or value refused with the field's name. Shapes follow the
//! OpenAI API reference (Chat Completions, Completions; late 2026).

use base64::Engine as _;
use serde::Deserialize;

use super::RequestError;

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of up to 4 strings")]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// What both endpoints share (read from the same body as the endpoint's own fields).
#[derive(Debug, Deserialize, Default)]
pub struct Sampling {
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// OpenAI's seed is a signed integer; any value is accepted and its bits used.
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub n: Option<u32>,
    /// Extensions llama-server also takes.
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    /// llama-server's extension: never stop on the end-of-turn token (always `max_tokens`).
    #[serde(default)]
    pub ignore_eos: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, or a list of parts {\"type\": \"text\", \"text\": …} / {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/…;base64,…\"}}"
)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a string (or a list holding one string); token-id prompts are not supported"
)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

/// A chat request's messages in upstream's terms: a system message, answered turns, the new question and
/// the one image (upstream's image belongs to the first turn).
#[derive(Debug)]
pub struct ChatMessages {
    pub system: Option<String>,
    pub turns: Vec<(String, String)>,
    pub question: String,
    pub image: Option<Vec<u8>>,
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn text_of(
    content: Option<Content>,
    role: &str,
    index: usize,
    image: &mut Option<Vec<u8>>,
) -> Result<String, RequestError> {
    let param = format!("messages[{index}].content");
    match content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match part {
                    Part::Text { text } => texts.push(text),
                    Part::ImageUrl { image_url } => {
                        if role != "user" {
                            return Err(RequestError::bad_request(
                                Some(&param),
                                format!("{} {role} message cannot carry an image", article(role)),
                            ));
                        }
                        if image.is_some() {
                            return Err(RequestError::bad_request(
                                Some(&param),
                                "more than one image: MedDr (InternVL-Chat-V1-2) takes one image per conversation",
                            ));
                        }
                        *image = Some(decode_data_url(&image_url.url, &param)?);
                    }
                }
            }
            Ok(texts.join("\n"))
        }
    }
}

/// Reads `messages`: optional system (or developer) messages first, then user and assistant messages
/// alternating, ending with a user message; at most one image, in any user message.
pub fn chat_messages(messages: Vec<Message>) -> Result<ChatMessages, RequestError> {
    if messages.is_empty() {
        return Err(RequestError::bad_request(
            Some("messages"),
            "`messages` is empty: at least one user message is needed",
        ));
    }
    let mut image = None;
    let mut system: Option<String> = None;
    let mut users: Vec<String> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let role = m.role.as_str();
        match role {
            "system" | "developer" => {
                if !users.is_empty() {
                    return Err(RequestError::bad_request(
                        Some(&format!("messages[{i}].role")),
                        format!(
                            "{} {role} message must come before the first user message",
                            article(role)
                        ),
                    ));
                }
                let t = text_of(m.content, role, i, &mut image)?;
                system = Some(match system {
                    Some(s) => s + "\n" + &t,
                    None => t,
                });
            }
            "user" | "assistant" => {
                let expected = if users.len() == answers.len() {
                    "user"
                } else {
                    "assistant"
                };
                if role != expected {
                    return Err(RequestError::bad_request(
                        Some(&format!("messages[{i}].role")),
                        format!(
                            "expected {} {expected} message here, found {role}: user and assistant messages must alternate, starting with user",
                            article(expected)
                        ),
                    ));
                }
                if role == "user" && m.content.is_none() {
                    return Err(RequestError::bad_request(
                        Some(&format!("messages[{i}].content")),
                        "a user message needs content",
                    ));
                }
                let t = text_of(m.content, role, i, &mut image)?;
                if role == "user" {
                    users.push(t);
                } else {
                    answers.push(t);
                }
            }
            other => {
                return Err(RequestError::bad_request(
                    Some(&format!("messages[{i}].role")),
                    format!("role {other:?} is not supported (system, developer, user, assistant)"),
                ))
            }
        }
    }
    if users.len() == answers.len() {
        return Err(RequestError::bad_request(
            Some("messages"),
            "the last message must be a user message",
        ));
    }
    let question = users.pop().unwrap_or_default();
    Ok(ChatMessages {
        system,
        turns: users.into_iter().zip(answers).collect(),
        question,
        image,
    })
}

/// The image types the preprocessor reads (`meddr_image`); others are refused by name before decoding.
/// DICOM (`application/dicom`, PS3.18's media type) is rendered with its own window and its middle frame.
const IMAGE_TYPES: [&str; 7] = [
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/bmp",
    "image/tiff",
    "image/webp",
    "application/dicom",
];

/// The bytes of a `data:image/…;base64,…` URL. Remote `http(s)` URLs are refused: fetching them would
/// send a patient's context to a third party (and open the server to SSRF), so this server never does.
pub fn decode_data_url(url: &str, param: &str) -> Result<Vec<u8>, RequestError> {
    let Some(rest) = url.strip_prefix("data:") else {
        if !url.contains("://") {
            return Err(RequestError::bad_request(
                Some(param),
                "the image URL is not a data: URL; send the image inline as data:image/png;base64,…",
            ));
        }
        let scheme: String = url.chars().take_while(|c| *c != ':').take(16).collect();
        return Err(RequestError::bad_request(
            Some(param),
            format!(
                "image URLs with scheme {scheme:?} are not fetched (remote images are off: nothing leaves this \
                 machine); send the image inline as data:image/png;base64,…"
            ),
        ));
    };
    let Some((meta, payload)) = rest.split_once(',') else {
        return Err(RequestError::bad_request(
            Some(param),
            "malformed data URL: no ',' after the media type",
        ));
    };
    let mut meta_parts = meta.split(';');
    let media = meta_parts
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !meta_parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(RequestError::bad_request(
            Some(param),
            "data URL is not base64-encoded (expected ';base64,')",
        ));
    }
    if !IMAGE_TYPES.contains(&media.as_str()) {
        let shown: String = media.chars().take(64).collect();
        return Err(RequestError::bad_request(
            Some(param),
            format!("unsupported image type {shown:?} (supported: image/jpeg, image/png, image/bmp, image/tiff, image/webp, application/dicom)"),
        ));
    }
    // Some clients wrap base64 at 76 columns.
    let clean: Vec<u8> = payload
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .map_err(|e| {
            RequestError::bad_request(Some(param), format!("the image's base64 is broken: {e}"))
        })
}

/// The one prompt of a completion request.
pub fn completion_prompt(p: PromptField) -> Result<String, RequestError> {
    match p {
        PromptField::One(s) => Ok(s),
        PromptField::Many(mut v) if v.len() == 1 => Ok(v.remove(0)),
        PromptField::Many(v) => Err(RequestError::bad_request(
            Some("prompt"),
            format!(
                "{} prompts were given; this server completes one prompt per request",
                v.len()
            ),
        )),
    }
}
