//! JavaScript API (see `web/www/meddr.d.ts` for the worker protocol built on it).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use js_sys::{Function, Object, Reflect, Uint8Array};
use meddr_engine::{ContextOptions, GpuContext, LoadOptions};
use meddr_gguf::GgufHeader;
use meddr_runtime::openai::{self, RequestError, ResponseShape};
use meddr_runtime::{
    Conversation, GenerationOptions, SamplingParams, StopPolicy, StopReason, UserText,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use crate::check::{
    check_device_limits, check_meddr, next_header_step, pair_headers, FIRST_HEADER_SLICE,
};
use crate::error::{Result, WebError};
use crate::session::{Ask, Session};
use meddr_image::DicomOptions;

fn js_err(e: WebError) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

fn js_msg(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

fn set(obj: &Object, key: &str, v: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &v.into());
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
export interface DeviceInfo {
  name: string; backend: string; driver: string;
  /** shader-f16 enabled; false means the f32 path (f32 KV cache). */
  f16: boolean;
  /** The matvec work split, e.g. "32 rows x 1 lanes" on software adapters. */
  matvec: string;
  maxStorageBindingBytes: number; maxBufferBytes: number; summary: string;
}
export interface MemoryInfo { wasmHeapBytes: number; gpuWeightBytes: number; modelFileBytes: number; }
export interface ModelSummary {
  name: string; fileBytes: number; headerBytes: number; tensorBytes: number; nTensors: number;
  fileType: number | null; llmLayers: number; hidden: number; vocab: number; visionLayers: number;
  visionWidth: number; largestRowBytes: number; largestTensorBytes: number;
  /** Set after a full load: the engine's per-component GPU plan, its total, and the KV cache positions. */
  memoryPlan?: string; gpuBytes?: number; contextLength?: number;
}
export interface GenerateOptions {
  maxNewTokens?: number; temperature?: number; topP?: number; topK?: number; seed?: number;
  /** Keep generating past the end-of-answer token (benchmarks, fixed-length comparisons). */
  ignoreEos?: boolean;
  /** Overrides the model file's pad-to-square image preprocessing (GSCo's prompts use false, as upstream). */
  pad2square?: boolean;
  /** Control tokens typed in the question (`<|im_end|>`…): "upstream" (default) reads them as chat markup, as
   *  upstream does, and says so in `warnings`; "literal" reads them as plain text (for text from others). */
  userText?: "upstream" | "literal";
  /** The next question of the conversation the last call without it started (upstream's chat history; the
   *  image stays with the first turn; the history's keys and values are reused, not recomputed). */
  followUp?: boolean;
}
export interface GenerateStats {
  promptTokens: number; newTokens: number; imageMs: number; prefillMs: number; decodeMs: number;
  decodeTokensPerSec: number;
  /** Prompt positions kept from the conversation's earlier turns instead of being run again. */
  reusedTokens: number;
  /** Where `decodeMs` went: recording and submitting steps, awaiting tokens, the host's share per token. */
  decodeRecordMs: number; decodeWaitMs: number; decodeHostMs: number;
}
export interface GenerateResult {
  tokens: number[]; text: string; stopped: boolean; stopReason: "eos" | "max_tokens" | "cancelled";
  stats: GenerateStats;
  /** Things to show the user beside the answer (control tokens typed in the question, a clipped 16-bit image). */
  warnings: string[];
}
export type ProgressCallback = (phase: "header" | "weights" | "done", loadedBytes: number, totalBytes: number) => void;
/** Called per generated token; return false to stop. */
export type TokenCallback = (id: number, textDelta: string) => boolean;
/** Called with each `chat.completion.chunk` as JSON text (streams), and with undefined after tokens that
 *  made no chunk; return false to cancel (the call then rejects with code "aborted"). */
export type ChunkCallback = (chunkJson: string) => boolean;
/** How the browser package's worker calls `chatCompletions`: what the server takes as flags. */
export interface ChatCallOptions {
  /** The `model` field of responses (the server's is the file's stem). */
  model?: string;
  /** Control tokens typed in messages: "literal" (default, as `meddr serve`) or "upstream" (chat markup). */
  userText?: "upstream" | "literal";
  /** Overrides the model file's pad-to-square image preprocessing (GSCo's prompts use false). */
  pad2square?: boolean;
}
"#;

/// A refused or failed chat request as a JS `Error` carrying the server's error fields: `message`, `status`,
/// `type` (OpenAI's error type), `param` and `code` (the error type, or "aborted").
fn request_err(e: RequestError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    let o: &Object = err.unchecked_ref();
    set(o, "status", e.status);
    set(o, "type", e.kind);
    set(o, "code", e.kind);
    set(
        o,
        "param",
        e.param.map_or(JsValue::NULL, |p| JsValue::from_str(&p)),
    );
    err.into()
}

/// Browser-engine errors during a chat request: what the request asked for that cannot be done (an image,
/// the prompt) is 400 with `messages` as the parameter, as the server answers; the rest is 500.
fn web_request_err(e: WebError) -> RequestError {
    match e {
        WebError::Image(m) => RequestError::bad_request(Some("messages"), format!("image: {m}")),
        WebError::Tokenizer(_) => RequestError::bad_request(Some("messages"), e.to_string()),
        WebError::Interrupted { done, total } => {
            RequestError::from(meddr_runtime::RuntimeError::Interrupted {
                done: done as usize,
                total: total as usize,
            })
        }
        other => RequestError::server(other.to_string()),
    }
}

/// Current size of the wasm linear memory (it only grows, so this is also the peak).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| {
            m.buffer()
                .dyn_into::<js_sys::ArrayBuffer>()
                .map(|b| b.byte_length() as f64)
                .unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}

/// Reads `[start, start + dst.len())` of a Blob into `dst`.
async fn read_blob(blob: &Blob, start: u64, dst: &mut [u8]) -> Result<()> {
    let end = start + dst.len() as u64;
    let err = |m: String| WebError::Read {
        offset: start,
        message: m,
    };
    let part = blob
        .slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|e| err(js_msg(&e)))?;
    let buf = JsFuture::from(part.array_buffer())
        .await
        .map_err(|e| err(js_msg(&e)))?;
    let arr = Uint8Array::new(&buf);
    if arr.length() as usize != dst.len() {
        return Err(err(format!(
            "got {} bytes, wanted {}",
            arr.length(),
            dst.len()
        )));
    }
    arr.copy_to(dst);
    Ok(())
}

/// Parses the GGUF header from growing prefixes of the Blob (64 KiB first, at least doubling).
async fn read_header(blob: &Blob, file_len: u64) -> Result<GgufHeader> {
    let mut prefix = vec![0u8; FIRST_HEADER_SLICE.min(file_len) as usize];
    read_blob(blob, 0, &mut prefix).await?;
    loop {
        match next_header_step(&prefix, file_len)? {
            Ok(h) => return Ok(h),
            Err(want) => {
                let have = prefix.len();
                prefix.resize(want as usize, 0);
                read_blob(blob, have as u64, &mut prefix[have..]).await?;
            }
        }
    }
}

/// A model's bytes: one Blob, or a language model and its mmproj seen as one byte space
/// ([`pair_headers`]: the mmproj's byte 0 at `mmproj_base`).
struct ModelSource {
    model: Blob,
    mmproj: Option<(Blob, u64)>,
    header: GgufHeader,
    /// Length of the (merged) byte space.
    len: u64,
}

impl ModelSource {
    async fn read(first: Blob, second: Option<Blob>) -> Result<ModelSource> {
        let len = first.size() as u64;
        let header = read_header(&first, len).await?;
        let Some(second) = second else {
            return Ok(ModelSource {
                model: first,
                mmproj: None,
                header,
                len,
            });
        };
        let len2 = second.size() as u64;
        let header2 = read_header(&second, len2).await?;
        let name = |b: &Blob, fallback: &str| {
            b.dyn_ref::<web_sys::File>()
                .map(|f| f.name())
                .unwrap_or_else(|| fallback.to_string())
        };
        let (n1, n2) = (
            name(&first, "the first file"),
            name(&second, "the second file"),
        );
        let pair = pair_headers((&header, len, &n1), (&header2, len2, &n2))?;
        let (model, proj) = if pair.first_is_model {
            (first, second)
        } else {
            (second, first)
        };
        Ok(ModelSource {
            model,
            mmproj: Some((proj, pair.mmproj_base)),
            header: pair.header,
            len: pair.merged_len,
        })
    }

    /// The Blob holding merged offset `off`, and the offset within it.
    fn locate(&self, off: u64) -> (&Blob, u64) {
        match &self.mmproj {
            Some((b, base)) if off >= *base => (b, off - base),
            _ => (&self.model, off),
        }
    }
}

/// Throttled `onProgress(phase, loaded, total)` calls (posting a message per 16 MiB chunk is plenty).
struct Progress {
    cb: Option<Function>,
    total: u64,
    done: u64,
    last_report: u64,
}

impl Progress {
    fn report(&mut self, phase: &str, force: bool) {
        if !force && self.done - self.last_report < (8 << 20) {
            return;
        }
        self.last_report = self.done;
        if let Some(cb) = &self.cb {
            let _ = cb.call3(
                &JsValue::NULL,
                &JsValue::from_str(phase),
                &JsValue::from_f64(self.done.min(self.total) as f64),
                &JsValue::from_f64(self.total as f64),
            );
        }
    }
}

fn get_f64(o: &JsValue, key: &str) -> Option<f64> {
    Reflect::get(o, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_f64())
}

fn get_bool(o: &JsValue, key: &str) -> bool {
    Reflect::get(o, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// `GenerateOptions` from JS; absent fields take upstream's defaults (greedy, 512 tokens, stop on eos).
fn generation_options(o: &JsValue) -> Result<GenerationOptions> {
    let d = SamplingParams::default();
    let bad = |field: &str, v: f64| WebError::Other(format!("option {field} = {v} is invalid"));
    let count = |field: &str, v: Option<f64>, default: usize| -> Result<usize> {
        match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 1e9 => Ok(x as usize),
            Some(x) => Err(bad(field, x)),
        }
    };
    let max_new_tokens = count("maxNewTokens", get_f64(o, "maxNewTokens"), 512)?;
    let sampling = SamplingParams {
        temperature: get_f64(o, "temperature").map_or(d.temperature, |v| v as f32),
        top_k: count("topK", get_f64(o, "topK"), d.top_k)?,
        top_p: get_f64(o, "topP").map_or(d.top_p, |v| v as f32),
        repetition_penalty: get_f64(o, "repetitionPenalty")
            .map_or(d.repetition_penalty, |v| v as f32),
        seed: count("seed", get_f64(o, "seed"), 0)? as u64,
    };
    let stop = if get_bool(o, "ignoreEos") {
        StopPolicy::IgnoreEos
    } else {
        StopPolicy::UpstreamEos
    };
    Ok(GenerationOptions {
        max_new_tokens,
        sampling,
        stop,
        logprobs: None,
        interrupt: Default::default(),
    })
}

/// The engine as JavaScript sees it: one WebGPU device, at most one loaded model.
#[wasm_bindgen]
pub struct Engine {
    ctx: Arc<GpuContext>,
    session: RefCell<Option<Session>>,
    /// Facts of the loaded model readable while a generation holds the session.
    loaded: RefCell<Option<(crate::check::ModelSummary, u64)>>,
    busy: Cell<bool>,
    /// The `N` of the next `chatcmpl-N` id.
    next_id: Cell<u64>,
}

#[wasm_bindgen]
impl Engine {
    /// Creates the WebGPU device (the adapter's own limits, shader-f16 when offered and not `forceF32`).
    /// `cpuAdapter`: the page found a software adapter (SwiftShader, a fallback adapter). WebGPU does not tell
    /// wgpu the device type, so the kernels' CPU-driver work split is chosen from what the page sees.
    pub async fn create(
        force_f32: bool,
        cpu_adapter: bool,
    ) -> std::result::Result<Engine, JsValue> {
        console_panic_hook();
        let ctx = GpuContext::new(ContextOptions {
            force_f32,
            matvec_shape: cpu_adapter.then_some(meddr_engine::MatvecShape::ROW_PER_LANE),
            ..Default::default()
        })
        .await
        .map_err(|e| js_err(e.into()))?;
        Ok(Engine {
            ctx: Arc::new(ctx),
            session: RefCell::new(None),
            loaded: RefCell::new(None),
            busy: Cell::new(false),
            next_id: Cell::new(1),
        })
    }

    #[wasm_bindgen(js_name = deviceInfo, unchecked_return_type = "DeviceInfo")]
    pub fn device_info(&self) -> JsValue {
        let i = &self.ctx.info;
        let o = Object::new();
        set(&o, "name", i.name.as_str());
        set(&o, "backend", format!("{:?}", i.backend));
        set(&o, "driver", i.driver.as_str());
        set(&o, "f16", i.f16);
        set(
            &o,
            "matvec",
            format!(
                "{} rows x {} lanes",
                i.matvec_shape.rows_per_group, i.matvec_shape.lanes_per_row
            ),
        );
        set(
            &o,
            "maxStorageBindingBytes",
            i.limits.max_storage_buffer_binding_size as f64,
        );
        set(&o, "maxBufferBytes", i.limits.max_buffer_size as f64);
        set(&o, "summary", i.to_string());
        o.into()
    }

    #[wasm_bindgen(js_name = memoryInfo, unchecked_return_type = "MemoryInfo")]
    pub fn memory_info(&self) -> JsValue {
        let o = Object::new();
        set(&o, "wasmHeapBytes", wasm_memory_bytes());
        let (gpu, file) = match &*self.loaded.borrow() {
            Some((s, gpu)) => (*gpu as f64, s.file_bytes as f64),
            None => (0.0, 0.0),
        };
        set(&o, "gpuWeightBytes", gpu);
        set(&o, "modelFileBytes", file);
        o.into()
    }

    /// Reads and checks only the header (a few `Blob.slice`s of 64 KiB and up) of a model, or of a language
    /// model and its mmproj (llama.cpp's two-file layout; either order).
    #[wasm_bindgen(js_name = inspectBlob, unchecked_return_type = "ModelSummary")]
    pub async fn inspect_blob(
        &self,
        blob: Blob,
        mmproj: Option<Blob>,
    ) -> std::result::Result<JsValue, JsValue> {
        let src = ModelSource::read(blob, mmproj).await.map_err(js_err)?;
        let s = check_meddr(&src.header, src.len).map_err(js_err)?;
        check_device_limits(&src.header, self.ctx.max_binding_bytes()).map_err(js_err)?;
        Ok(summary_js(&s)?)
    }

    /// Loads a model from a `File`/`Blob` (and its `mmproj` file, llama.cpp's layout for the vision tower;
    /// either order): the header from growing slices, then every tensor read with `FileReaderSync` in
    /// ≤ 16 MiB slices straight into GPU buffers. Worker only (FileReaderSync).
    /// `contextLength` caps the KV cache (default: the file's, at most 4096).
    #[wasm_bindgen(js_name = loadBlob, unchecked_return_type = "ModelSummary")]
    pub async fn load_blob(
        &self,
        blob: Blob,
        #[wasm_bindgen(unchecked_param_type = "ProgressCallback | undefined")] on_progress: Option<
            Function,
        >,
        context_length: Option<u32>,
        mmproj: Option<Blob>,
    ) -> std::result::Result<JsValue, JsValue> {
        if self.busy.replace(true) {
            return Err(js_sys::Error::new("the engine is busy").into());
        }
        let r = self
            .load_inner(blob, mmproj, on_progress, context_length)
            .await;
        self.busy.set(false);
        r.map_err(js_err)
    }

    /// Answers `question` about `image` (JPEG/PNG bytes, optional), streaming through `onToken`.
    #[wasm_bindgen(unchecked_return_type = "GenerateResult")]
    pub async fn generate(
        &self,
        image: Option<Uint8Array>,
        question: String,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions")] options: JsValue,
        #[wasm_bindgen(unchecked_param_type = "TokenCallback | undefined")] on_token: Option<
            Function,
        >,
    ) -> std::result::Result<JsValue, JsValue> {
        if self.busy.replace(true) {
            return Err(js_sys::Error::new("the engine is busy").into());
        }
        let r = self
            .generate_inner(image, &question, &options, on_token)
            .await;
        self.busy.set(false);
        r.map_err(js_err)
    }
}

#[wasm_bindgen]
impl Engine {
    /// `POST /v1/chat/completions` in the browser: `body` is the request as JSON text, read by the server's
    /// own code (`meddr_runtime::openai`: the same fields, checks and messages); chunks stream through
    /// `onChunk` as JSON text when `stream` is true. Resolves to JSON text `{"response": <chat.completion>
    /// | null, "run": {tokens, stats, warnings}}`; rejects with an `Error` carrying the server's error fields.
    #[wasm_bindgen(js_name = chatCompletions)]
    pub async fn chat_completions(
        &self,
        body: String,
        #[wasm_bindgen(unchecked_param_type = "ChatCallOptions")] call: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ChunkCallback | undefined")] on_chunk: Option<
            Function,
        >,
    ) -> std::result::Result<String, JsValue> {
        if self.busy.replace(true) {
            return Err(request_err(RequestError {
                status: 429,
                kind: "rate_limit_error",
                param: None,
                message: "the engine is busy with another request; wait for it or cancel it".into(),
            }));
        }
        let r = self.chat_inner(&body, &call, on_chunk).await;
        self.busy.set(false);
        r.map_err(request_err)
    }
}

impl Engine {
    async fn chat_inner(
        &self,
        body: &str,
        call: &JsValue,
        on_chunk: Option<Function>,
    ) -> std::result::Result<String, RequestError> {
        let v: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| RequestError::bad_request(None, format!("invalid JSON body: {e}")))?;
        if !v.is_object() {
            return Err(RequestError::bad_request(
                None,
                "the JSON body must be an object",
            ));
        }
        let plan = openai::chat_plan(&v)?;
        // Per-token log-probabilities need the logits row read back every step; the browser loop reads only
        // the chosen token when greedy, so they are refused here rather than answered as null.
        if plan.logprobs.is_some() {
            return Err(RequestError::bad_request(
                Some("logprobs"),
                "logprobs are not available in the browser engine (use meddr serve)",
            ));
        }
        let user_text = match Reflect::get(call, &JsValue::from_str("userText"))
            .ok()
            .and_then(|v| v.as_string())
        {
            // The server's default: text typed in messages is text.
            None => UserText::Literal,
            Some(s) => s
                .parse::<UserText>()
                .map_err(|e| RequestError::bad_request(Some("userText"), e.to_string()))?,
        };
        let pad2square = Reflect::get(call, &JsValue::from_str("pad2square"))
            .ok()
            .and_then(|v| v.as_bool());
        let dicom = dicom_options(call).map_err(|e| RequestError::bad_request(Some("dicom"), e))?;
        let model = Reflect::get(call, &JsValue::from_str("model"))
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let mut session = self
            .session
            .borrow_mut()
            .take()
            .ok_or_else(|| RequestError {
                status: 503,
                kind: "unavailable_error",
                param: None,
                message: "no model is loaded: call load() first".into(),
            })?;
        let ask = Ask {
            pad2square,
            user_text,
            dicom,
        };
        let r = chat_with(&mut session, plan, ask, model, self.next_id(), on_chunk).await;
        *self.session.borrow_mut() = Some(session);
        r
    }

    fn next_id(&self) -> u64 {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        n
    }

    async fn load_inner(
        &self,
        blob: Blob,
        mmproj: Option<Blob>,
        on_progress: Option<Function>,
        context_length: Option<u32>,
    ) -> Result<JsValue> {
        // Free the previous model's GPU memory before allocating the next.
        self.session.borrow_mut().take();
        self.loaded.borrow_mut().take();
        let src = ModelSource::read(blob, mmproj).await?;
        let (header, len) = (&src.header, src.len);
        let summary = check_meddr(header, len)?;
        check_device_limits(header, self.ctx.max_binding_bytes())?;
        let mut progress = Progress {
            cb: on_progress,
            total: summary.tensor_bytes,
            done: 0,
            last_report: 0,
        };
        progress.report("header", true);
        let reader = web_sys::FileReaderSync::new().map_err(|e| {
            WebError::Other(format!(
                "FileReaderSync is unavailable ({}): load models from a Web Worker",
                js_msg(&e)
            ))
        })?;
        let read = |off: u64, dst: &mut [u8]| -> std::result::Result<(), String> {
            let (blob, off) = src.locate(off);
            let end = off + dst.len() as u64;
            let part = blob
                .slice_with_f64_and_f64(off as f64, end as f64)
                .map_err(|e| js_msg(&e))?;
            let buf = reader.read_as_array_buffer(&part).map_err(|e| js_msg(&e))?;
            let arr = Uint8Array::new(&buf);
            if arr.length() as usize != dst.len() {
                return Err(format!("got {} bytes, wanted {}", arr.length(), dst.len()));
            }
            arr.copy_to(dst);
            progress.done += dst.len() as u64;
            progress.report("weights", false);
            Ok(())
        };
        let cap = context_length.unwrap_or(4096);
        let opts = LoadOptions {
            context_length: Some(cap),
            ..Default::default()
        };
        let session = Session::load_from(self.ctx.clone(), header, len, &opts, read)?;
        progress.done = progress.total;
        progress.report("done", true);
        let plan = session.model.memory_plan();
        let gpu = plan.total_gpu();
        let js = summary_js(&session.summary)?;
        set(js.unchecked_ref(), "memoryPlan", plan.to_string());
        set(js.unchecked_ref(), "gpuBytes", gpu as f64);
        set(
            js.unchecked_ref(),
            "contextLength",
            session.model.capacity(),
        );
        *self.loaded.borrow_mut() = Some((session.summary.clone(), gpu));
        *self.session.borrow_mut() = Some(session);
        Ok(js)
    }

    async fn generate_inner(
        &self,
        image: Option<Uint8Array>,
        question: &str,
        options: &JsValue,
        on_token: Option<Function>,
    ) -> Result<JsValue> {
        let opts = generation_options(options)?;
        // GSCo asks with `pad2square: false`, as upstream's RAGDataset preprocesses.
        let pad2square = Reflect::get(options, &JsValue::from_str("pad2square"))
            .ok()
            .and_then(|v| v.as_bool());
        let user_text = match Reflect::get(options, &JsValue::from_str("userText"))
            .ok()
            .filter(|v| !v.is_undefined())
        {
            None => UserText::default(),
            Some(v) => v
                .as_string()
                .ok_or_else(|| {
                    WebError::Other("option userText must be \"upstream\" or \"literal\"".into())
                })?
                .parse::<UserText>()
                .map_err(|e| WebError::Other(e.to_string()))?,
        };
        let ask = Ask {
            pad2square,
            user_text,
            dicom: dicom_options(options).map_err(WebError::Other)?,
        };
        let image = image.map(|a| a.to_vec());
        // `followUp: true`: the next turn of the conversation the last plain call started.
        let follow_up = get_bool(options, "followUp");
        if follow_up && image.is_some() {
            return Err(WebError::Other(
                "a follow-up question keeps the conversation's image: ask without one, or start a new \
                 conversation (followUp: false) about the new image"
                    .into(),
            ));
        }
        // Taken out of the cell for the await points; put back whatever happens.
        let mut session = self
            .session
            .borrow_mut()
            .take()
            .ok_or_else(|| WebError::Other("no model is loaded".into()))?;
        let cb = |id: u32, text: &str| match &on_token {
            Some(cb) => cb
                .call2(
                    &JsValue::NULL,
                    &JsValue::from_f64(f64::from(id)),
                    &JsValue::from_str(text),
                )
                .map(|v| v.as_bool() != Some(false))
                .unwrap_or(false),
            None => true,
        };
        let r = if follow_up {
            session.follow_up(ask.user_text, question, &opts, cb).await
        } else {
            session
                .generate(image.as_deref(), &ask, question, &opts, cb)
                .await
        };
        *self.session.borrow_mut() = Some(session);
        let out = r?;
        let text = serde_json::to_string(&out).map_err(|e| WebError::Other(e.to_string()))?;
        js_sys::JSON::parse(&text).map_err(|e| WebError::Other(js_msg(&e)))
    }
}

/// One chat request on the loaded model: the server's `chat_job` and model-thread steps in the browser's
/// order (prompt checked before the image is decoded, then the image, then the generation loop).
/// The `dicom` option `{window?: [centre, width], frame?: n}` (`meddr run --window C,W --frame N`): how a
/// DICOM image is rendered; absent: the file's first window and the middle frame.
fn dicom_options(options: &JsValue) -> std::result::Result<DicomOptions, String> {
    let d = match Reflect::get(options, &JsValue::from_str("dicom")) {
        Ok(v) if !v.is_undefined() && !v.is_null() => v,
        _ => return Ok(DicomOptions::default()),
    };
    if !d.is_object() {
        return Err("option dicom must be an object {window?: [centre, width], frame?: n}".into());
    }
    let mut out = DicomOptions::default();
    let window = Reflect::get(&d, &JsValue::from_str("window")).unwrap_or(JsValue::UNDEFINED);
    if !window.is_undefined() && !window.is_null() {
        let pair = js_sys::Array::is_array(&window)
            .then(|| js_sys::Array::from(&window))
            .filter(|a| a.length() == 2)
            .and_then(|a| Some((a.get(0).as_f64()?, a.get(1).as_f64()?)));
        match pair {
            Some((c, w)) if c.is_finite() && w.is_finite() && w >= 1.0 => out.window = Some((c, w)),
            _ => {
                return Err(format!(
                    "option dicom.window must be [centre, width] with a width ≥ 1, got {}",
                    js_sys::JSON::stringify(&window)
                        .ok()
                        .and_then(|s| s.as_string())
                        .unwrap_or_else(|| "a non-JSON value".into())
                ))
            }
        }
    }
    let frame = Reflect::get(&d, &JsValue::from_str("frame")).unwrap_or(JsValue::UNDEFINED);
    if !frame.is_undefined() && !frame.is_null() {
        match frame.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => {
                out.frame = Some(f as u32)
            }
            _ => {
                return Err(format!(
                    "option dicom.frame must be a frame index (an integer ≥ 0), got {}",
                    js_sys::JSON::stringify(&frame)
                        .ok()
                        .and_then(|s| s.as_string())
                        .unwrap_or_else(|| "a non-JSON value".into())
                ))
            }
        }
    }
    Ok(out)
}

async fn chat_with(
    session: &mut Session,
    plan: openai::ChatPlan,
    ask: Ask,
    model: String,
    n: u64,
    on_chunk: Option<Function>,
) -> std::result::Result<String, RequestError> {
    let context = session.context_length();
    // Checks the prompt before the image is decoded: a request that cannot run costs nothing.
    let mut check = Conversation::new(ask.user_text);
    check.set_system(plan.system.clone());
    check.set_turns(plan.turns.clone());
    let prompt = check.encode(
        &session.tokenizer,
        &session.info,
        &plan.question,
        plan.image.is_some(),
        0,
        context,
    )?;
    let mut opts = plan.opts;
    if let Some(cb) = on_chunk.clone() {
        // `onChunk(undefined)` is asked between the prompt's chunks too: a stop during a long prompt ends it
        // there (the worker handles the stop message while the engine awaits each chunk).
        opts.interrupt = meddr_runtime::Interrupt::new(move || {
            cb.call1(&JsValue::NULL, &JsValue::UNDEFINED)
                .map(|r| r.as_bool() == Some(false))
                .unwrap_or(true)
        });
    }
    opts.max_new_tokens =
        openai::settle_max_tokens(plan.asked_max_tokens, prompt.ids.len(), context)?;
    let mut warnings = plan.warnings;
    let pixel_values = match &plan.image {
        Some(bytes) => {
            let (pv, notes) = session
                .pixel_values(bytes, ask.pad2square, &ask.dicom)
                .map_err(web_request_err)?;
            warnings.extend(notes.into_iter().map(|n| format!("image: {n}")));
            Some(pv)
        }
        None => None,
    };
    warnings.extend(prompt.warning("set the request option userText: \"literal\""));
    let shape = ResponseShape {
        chat: true,
        stream: plan.stream,
        include_usage: plan.include_usage,
        logprobs: false,
        id: format!("chatcmpl-{n}"),
        warnings,
        model,
        created: openai::now(),
    };
    let mut cancelled = false;
    let emit = |v: &serde_json::Value, cancelled: &mut bool| {
        if let Some(cb) = &on_chunk {
            let go = cb
                .call1(&JsValue::NULL, &JsValue::from_str(&v.to_string()))
                .map(|r| r.as_bool() != Some(false))
                .unwrap_or(false);
            if !go {
                *cancelled = true;
            }
        }
    };
    // Between chunks (not streaming, or a token whose text is held back), `onChunk(undefined)` asks the
    // caller whether to go on: cancellation works the same with and without `stream`.
    let poll = |cancelled: &mut bool| {
        if let Some(cb) = &on_chunk {
            let go = cb
                .call1(&JsValue::NULL, &JsValue::UNDEFINED)
                .map(|r| r.as_bool() != Some(false))
                .unwrap_or(false);
            if !go {
                *cancelled = true;
            }
        }
    };
    if shape.stream {
        if let Some(c) = shape.started_chunk() {
            emit(&c, &mut cancelled);
        }
    }
    let mut stop = plan.stop;
    let mut text = String::new();
    let mut offset = 0usize;
    let out = session
        .chat(
            plan.system,
            plan.turns,
            &plan.question,
            pixel_values,
            ask.user_text,
            &opts,
            |_id, delta| {
                if cancelled {
                    return false;
                }
                // Stop strings are cut from the streamed text as the server cuts them.
                let piece = stop.push(delta);
                if !piece.is_empty() {
                    text.push_str(&piece);
                    if shape.stream {
                        emit(
                            &shape.token_chunk(&piece, None, &mut offset),
                            &mut cancelled,
                        );
                    }
                }
                if !shape.stream || piece.is_empty() {
                    poll(&mut cancelled);
                }
                !cancelled && !stop.stopped()
            },
        )
        .await
        .map_err(web_request_err)?;
    if cancelled {
        return Err(RequestError {
            status: 499,
            kind: "aborted",
            param: None,
            message: "the request was cancelled".into(),
        });
    }
    let rest = stop.finish();
    if !rest.is_empty() {
        text.push_str(&rest);
        if shape.stream {
            emit(&shape.token_chunk(&rest, None, &mut offset), &mut cancelled);
        }
    }
    let reason = match out.stop_reason {
        "max_tokens" => StopReason::MaxTokens,
        "eos" => StopReason::Eos,
        _ => StopReason::Cancelled,
    };
    let finish = openai::finish_reason(reason, stop.stopped());
    let (prompt_tokens, completion_tokens) = (out.stats.prompt_tokens, out.tokens.len());
    let response = if shape.stream {
        for c in shape.done_chunks(finish, prompt_tokens, completion_tokens) {
            emit(&c, &mut cancelled);
        }
        serde_json::Value::Null
    } else {
        shape.response(&text, &[], finish, prompt_tokens, completion_tokens)
    };
    let run = serde_json::json!({
        "tokens": out.tokens,
        "stats": out.stats,
        "warnings": shape.warnings,
    });
    Ok(serde_json::json!({"response": response, "run": run}).to_string())
}

fn summary_js(s: &crate::check::ModelSummary) -> std::result::Result<JsValue, WebError> {
    let text = serde_json::to_string(s).map_err(|e| WebError::Other(e.to_string()))?;
    js_sys::JSON::parse(&text).map_err(|e| WebError::Other(js_msg(&e)))
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> JsValue {
        js_err(e)
    }
}

fn console_panic_hook() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&JsValue::from_str(&format!("meddr panic: {info}")));
        }));
    });
}
