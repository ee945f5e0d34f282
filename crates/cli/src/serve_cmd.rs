//! `meddr serve`: the OpenAI-compatible local server (`meddr_server`) on one model file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meddr_cli::{GpuOptions, VisionLoad};
use meddr_runtime::tokenizer_from_gguf_header;
use meddr_server::{Model, ServerOptions};

use crate::{load_backend, open_model, Device, UserTextArg};

pub(crate) const HELP: &str = "\
Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (text and data: image URLs, streaming),
POST /v1/completions. Requests run one at a time in arrival order; --queue more may wait (then 429).

Examples:
  meddr serve -m meddr-q4_k_m.gguf
  meddr serve -m meddr-q4_k_m.gguf --port 8080 --api-key \"$(openssl rand -hex 16)\"
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"What does a pleural effusion look like?\"}]}'

Defaults differ from OpenAI's in one place: temperature is 0 (greedy, upstream's setting) unless given.
Research aid, not a medical device: do not use for diagnosis.";

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// The vision tower's mmproj GGUF (llama.cpp's split). Default: `<model>.mmproj.gguf` or
    /// `mmproj-<model>.gguf` beside the model, when there is one.
    #[arg(long, value_name = "PATH")]
    mmproj: Option<PathBuf>,
    /// Address to listen on. The default keeps the server on this machine; anything else exposes
    /// patient data to the network (use --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require this key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) on the completion endpoints.
    #[arg(long, env = "MEDDR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browser pages from this one origin (e.g. http://localhost:5173) to call the server. Off by default.
    #[arg(long)]
    cors_origin: Option<String>,
    /// Requests that may wait behind the running one; more are answered 429.
    #[arg(long, default_value_t = ServerOptions::DEFAULT_QUEUE)]
    queue: usize,
    /// Largest request body in MiB (base64 images are 4/3 of their file size).
    #[arg(long, default_value_t = (ServerOptions::DEFAULT_MAX_BODY_BYTES >> 20) as u64)]
    max_body_mb: u64,
    /// Largest image accepted, in units of 2^20 pixels (64 = 8192 x 8192), read from its header before decoding.
    #[arg(long, default_value_t = ServerOptions::DEFAULT_MAX_IMAGE_PIXELS >> 20)]
    max_image_mpixels: u64,
    /// Seconds between SSE keep-alive comments on a waiting stream.
    #[arg(long, default_value_t = 5.0)]
    keep_alive_secs: f64,
    /// Seconds a client has to send a request's headers (also how long an idle connection stays open);
    /// slower connections are closed.
    #[arg(long, default_value_t = ServerOptions::DEFAULT_HEADER_READ_TIMEOUT.as_secs_f64())]
    header_timeout_secs: f64,
    /// How control tokens typed in messages are read: `literal` (plain text, the default for a server whose
    /// messages come from other programs) or `upstream` (chat markup, as upstream parses them).
    #[arg(long, value_enum, default_value_t = UserTextArg::Literal)]
    user_text: UserTextArg,
    /// Where to run: the wgpu engine, or the f32 CPU reference.
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// GPU: KV-cache positions (default: the model's context length).
    #[arg(long)]
    context_length: Option<u32>,
    /// GPU: prompt tokens run per submit (llama.cpp's physical batch). A client that hangs up during a long
    /// prompt is noticed after the chunk running then; smaller chunks also take less activation memory.
    #[arg(long, value_name = "N", default_value_t = meddr_engine::LoadOptions::default().prefill_chunk)]
    ubatch_size: u32,
}

pub(crate) fn serve(a: ServeArgs) -> Result<()> {
    if a.queue == 0 || a.queue > 4096 {
        bail!("--queue {} is outside 1..=4096", a.queue);
    }
    if a.max_body_mb == 0 || a.max_body_mb > 1024 {
        bail!("--max-body-mb {} is outside 1..=1024", a.max_body_mb);
    }
    if !(a.keep_alive_secs.is_finite() && (0.01..=3600.0).contains(&a.keep_alive_secs)) {
        bail!(
            "--keep-alive-secs {} is outside 0.01..=3600",
            a.keep_alive_secs
        );
    }
    if !(a.header_timeout_secs.is_finite() && (0.1..=3600.0).contains(&a.header_timeout_secs)) {
        bail!(
            "--header-timeout-secs {} is outside 0.1..=3600",
            a.header_timeout_secs
        );
    }
    if a.max_image_mpixels == 0 || a.max_image_mpixels > meddr_image::MAX_PIXELS >> 20 {
        bail!(
            "--max-image-mpixels {} is outside 1..={}",
            a.max_image_mpixels,
            meddr_image::MAX_PIXELS >> 20
        );
    }
    if a.ubatch_size == 0 || a.ubatch_size > meddr_engine::MAX_PREFILL_CHUNK {
        bail!(
            "--ubatch-size {} is outside 1..={}",
            a.ubatch_size,
            meddr_engine::MAX_PREFILL_CHUNK
        );
    }
    if a.api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key is empty");
    }
    let (file, info) = open_model(&a.model, a.mmproj.as_deref())?;
    let tokenizer = tokenizer_from_gguf_header(&file.header).context("tokenizer in the GGUF")?;
    let model_id = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "meddr".into());
    let opts = ServerOptions {
        model_id,
        api_key: a.api_key.clone(),
        cors_origin: a.cors_origin.clone(),
        queue_capacity: a.queue,
        max_body_bytes: (a.max_body_mb << 20) as usize,
        keep_alive: Duration::from_secs_f64(a.keep_alive_secs),
        user_text: a.user_text.into(),
        max_image_pixels: a.max_image_mpixels << 20,
        header_read_timeout: Duration::from_secs_f64(a.header_timeout_secs),
    };
    if let Some(o) = &a.cors_origin {
        if axum_header_ok(o).is_none() {
            bail!("--cors-origin {o:?} is not a valid origin (e.g. http://localhost:5173)");
        }
    }
    let gopts = GpuOptions {
        force_f32: false,
        context_length: a.context_length,
        vision: VisionLoad::Resident,
        prefill_chunk: Some(a.ubatch_size),
    };
    let (path, device) = (a.model.clone(), a.device);
    let load: meddr_server::BackendLoader = Box::new(move || {
        load_backend(&path, file, device, &gopts).map_err(|e| meddr_cli::error_message(&e))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr().context("listening address")?;
        let loopback = addr.ip().is_loopback();
        eprintln!(
            "meddr serve: listening on http://{addr} (loading {} …)",
            a.model.display()
        );
        if !loopback {
            eprintln!(
                "meddr serve: warning: listening on {} — reachable from the network{}",
                addr.ip(),
                if a.api_key.is_none() {
                    " WITHOUT an API key (--api-key)"
                } else {
                    ""
                }
            );
        }
        meddr_server::serve(listener, opts, Model { tokenizer, info }, load)
            .await
            .map_err(anyhow::Error::msg)
    })
}

/// Whether `o` can be sent as an `Access-Control-Allow-Origin` value.
fn axum_header_ok(o: &str) -> Option<()> {
    (o.starts_with("http://") || o.starts_with("https://"))
        .then_some(())
        .filter(|_| o.bytes().all(|b| b.is_ascii_graphic()))
}
