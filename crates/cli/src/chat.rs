//! `meddr chat`: an interactive conversation on the runtime's [`Conversation`] (the same type the server and
//! the browser use): streaming answers, `/image`, `/reset`, `/save`, the KV cache kept between turns.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use meddr_cli::{GpuOptions, VisionLoad};
use meddr_runtime::{
    tokenizer_from_gguf_header, Conversation, GenerationOptions, SamplingParams, StopPolicy,
    TokenEvent, UserText,
};
use serde_json::json;

use crate::{load_backend, open_model, read_image_with, Device, UserTextArg, DISCLAIMER};

pub(crate) const HELP: &str = "\
Commands (one per line; anything else is a question):
  /image PATH   start a new conversation about this image (upstream: the image belongs to the first turn)
  /reset        start a new conversation without an image
  /save FILE    write the conversation so far as JSON (questions, answers, settings)
  /help         this list
  /quit         leave (so does end of input)

Example:
  meddr chat -m meddr-q4_k_m.gguf --image chest.jpg

Research aid, not a medical device: do not use for diagnosis.";

#[derive(clap::Args)]
pub(crate) struct ChatArgs {
    /// GGUF model file (meddr-quantize output).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// The vision tower's mmproj GGUF (llama.cpp's split). Default: `<model>.mmproj.gguf` or
    /// `mmproj-<model>.gguf` beside the model, when there is one.
    #[arg(long, value_name = "PATH")]
    mmproj: Option<PathBuf>,
    /// Image the conversation is about (also `/image PATH` later).
    #[arg(long)]
    image: Option<PathBuf>,
    /// DICOM window and frame, for every image of the session.
    #[command(flatten)]
    dicom: crate::dicom_args::DicomArgs,
    /// New tokens per answer at most.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// 0 = greedy (upstream's setting).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How control tokens typed in a question are read (see `meddr run --help`).
    #[arg(long, value_enum, default_value_t = UserTextArg::Upstream)]
    user_text: UserTextArg,
    /// Where to run: the wgpu engine, or the f32 CPU reference.
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// GPU: KV-cache positions (default: the model's context length).
    #[arg(long)]
    context_length: Option<u32>,
}

pub(crate) fn chat(a: ChatArgs) -> Result<()> {
    let (file, info) = open_model(&a.model, a.mmproj.as_deref())?;
    if info.prompt_format == meddr_runtime::PromptFormat::Raw {
        bail!(
            "model {}: {}",
            a.model.display(),
            meddr_runtime::RuntimeError::NoChatTemplate
        );
    }
    let tokenizer = tokenizer_from_gguf_header(&file.header).context("tokenizer in the GGUF")?;
    let opts = GenerationOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed,
            ..Default::default()
        },
        stop: StopPolicy::UpstreamEos,
        logprobs: None,
        interrupt: Default::default(),
    };
    opts.sampling.validate()?;
    let first_image = a
        .image
        .as_deref()
        .map(|p| read_image_with(p, &info, &a.dicom.options()))
        .transpose()?;
    let gopts = GpuOptions {
        force_f32: false,
        context_length: a.context_length,
        vision: VisionLoad::Resident,
        prefill_chunk: None,
    };
    let mut backend = load_backend(&a.model, file, a.device, &gopts)?;
    let user_text = UserText::from(a.user_text);
    let mut conv = Conversation::new(user_text);
    let mut image_path: Option<PathBuf> = None;
    if let (Some((pv, _)), Some(p)) = (first_image, &a.image) {
        conv.set_image(
            backend
                .encode_image(&pv)
                .map_err(|e| anyhow::anyhow!("encoding the image: {e}"))?,
        );
        image_path = Some(p.clone());
    }
    let interactive = std::io::stdin().is_terminal();
    eprintln!("meddr chat: {DISCLAIMER} Type /help for commands.");
    let mut stdout = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("you> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // A failed command or question is reported and the conversation goes on.
        let outcome: Result<bool> = (|| {
            if let Some(cmd) = line.strip_prefix('/') {
                let (name, arg) = cmd
                    .split_once(' ')
                    .map_or((cmd, ""), |(n, r)| (n, r.trim()));
                match name {
                    "quit" | "exit" => return Ok(false),
                    "help" => eprintln!("{HELP}"),
                    "reset" => {
                        conv.reset();
                        image_path = None;
                        eprintln!("meddr chat: new conversation");
                    }
                    "image" => {
                        if arg.is_empty() {
                            bail!("/image needs a file: /image PATH");
                        }
                        let p = PathBuf::from(arg);
                        let (pv, _) = read_image_with(&p, &info, &a.dicom.options())?;
                        let feats = backend
                            .encode_image(&pv)
                            .map_err(|e| anyhow::anyhow!("encoding the image: {e}"))?;
                        conv.set_image(feats);
                        eprintln!("meddr chat: new conversation about {}", p.display());
                        image_path = Some(p);
                    }
                    "save" => {
                        if arg.is_empty() {
                            bail!("/save needs a file: /save FILE");
                        }
                        save(Path::new(arg), &a, image_path.as_deref(), &conv, user_text)?;
                        eprintln!("meddr chat: saved {} turns to {arg}", conv.turns().len());
                    }
                    other => bail!("unknown command /{other} (type /help)"),
                }
                return Ok(true);
            }
            let reply = conv.ask(
                backend.as_mut(),
                &tokenizer,
                &info,
                line,
                &opts,
                |ev: &TokenEvent| {
                    if stdout
                        .write_all(ev.token.text.as_bytes())
                        .and_then(|_| stdout.flush())
                        .is_err()
                    {
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                },
            )?;
            let _ = writeln!(stdout);
            if let Some(w) = reply
                .prompt
                .warning("start meddr chat with `--user-text literal`")
            {
                eprintln!("meddr: warning: {w}");
            }
            eprintln!(
                "[{} tokens, stop: {}, prompt {} tokens of which {} reused from the previous turns] {DISCLAIMER}",
                reply.result.tokens.len(),
                reply.result.stop_reason.as_str(),
                reply.prompt.ids.len(),
                reply.reused_tokens
            );
            Ok(true)
        })();
        match outcome {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => eprintln!("meddr: error: {}", meddr_cli::error_message(&e)),
        }
    }
    Ok(())
}

/// The transcript as JSON, written atomically (a temporary file renamed into place).
fn save(
    path: &Path,
    a: &ChatArgs,
    image: Option<&Path>,
    conv: &Conversation,
    user_text: UserText,
) -> Result<()> {
    let turns: Vec<_> = conv
        .turns()
        .iter()
        .map(|t| json!({"question": t.question, "answer": t.answer}))
        .collect();
    let doc = json!({
        "model": a.model,
        "image": image,
        "turns": turns,
        "max_new_tokens": a.max_new_tokens,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "seed": a.seed,
        "user_text": user_text.as_str(),
        "disclaimer": DISCLAIMER,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = std::fs::write(&tmp, text)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|_| {
            std::fs::rename(&tmp, path).with_context(|| format!("saving {}", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
