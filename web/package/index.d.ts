/**
 * `@meddr/edge`: MedDr (a medical vision-language model, InternVL-Chat-V1-2) on WebGPU in the browser, with
 * the OpenAI Chat Completions API of `meddr serve`: the same request fields, checks, error messages and
 * `chat.completion` / `chat.completion.chunk` objects (one Rust implementation, compiled to wasm here).
 *
 * **Research aid, not a cleared medical device: answers are not diagnoses.**
 *
 * @packageDocumentation
 */

/** "Research aid, not a medical device: do not use for diagnosis." (the server's `meta.notice`). */
export declare const NOTICE: string;

/** How control tokens typed in messages (`<|im_end|>`…) are read: "literal" (the default, as `meddr serve`)
 *  reads them as plain text; "upstream" as chat markup, as upstream's demo does, with a warning. */
export type UserText = "upstream" | "literal";

export interface MedDrOptions {
  /** Use the f32 path even where the GPU offers shader-f16. */
  forceF32?: boolean;
  /** Default for requests that do not set it (see {@link UserText}). */
  userText?: UserText;
  /** Where the engine worker is (default: `new URL('./worker.js', import.meta.url)`). */
  workerUrl?: string | URL;
}

export interface DeviceInfo {
  name: string; backend: string; driver: string;
  /** shader-f16 enabled; false means the f32 path (f32 KV cache). */
  f16: boolean;
  matvec: string;
  maxStorageBindingBytes: number; maxBufferBytes: number; summary: string;
  /** The adapter offers shader-f16 (even if `forceF32` turned it off). */
  adapterHasF16: boolean;
  /** The browser's adapter description (vendor, architecture). */
  adapterName: string;
  /** A software adapter (SwiftShader, a fallback adapter). */
  cpuAdapter: boolean;
}

export interface MemoryInfo { wasmHeapBytes: number; gpuWeightBytes: number; modelFileBytes: number; }

export interface ModelSummary {
  name: string; fileBytes: number; headerBytes: number; tensorBytes: number; nTensors: number;
  fileType: number | null; llmLayers: number; hidden: number; vocab: number; visionLayers: number;
  visionWidth: number; largestRowBytes: number; largestTensorBytes: number;
  memoryPlan?: string; gpuBytes?: number; contextLength?: number;
}

/** Where the weights came from: local files, the network, a resumed download, or the OPFS cache. */
export type LoadSource = "file" | "network" | "resumed" | "cache";

export type LoadPhase = "download" | "header" | "weights" | "done";

export interface LoadOptions {
  /** Called as bytes arrive (`download`) and as weights reach the GPU (`header`, `weights`, `done`). */
  onProgress?: (phase: LoadPhase, loadedBytes: number, totalBytes: number) => void;
  /** Caps the KV cache (default: the file's, at most 4096 positions). */
  contextLength?: number;
}

export interface LoadResult {
  model: ModelSummary;
  memory: MemoryInfo;
  loadMs: number;
  /** The `model` field of responses: the file's stem. */
  name: string;
  source: LoadSource;
  /** Bytes fetched from the network by this load (URL loads). */
  downloaded?: number;
  /** Where a resumed download started. */
  resumedFrom?: number;
  mmprojSource?: LoadSource;
}

/** A model from a URL (cached in the origin's private file system; `<stem>.mmproj.gguf` beside it is
 *  fetched too) or local files (a MedDr GGUF, or a language model and its mmproj in either order). */
export type ModelSource = { url: string | URL } | { file: Blob; mmproj?: Blob };

export interface ChatCompletionContentPartText { type: "text"; text: string; }
export interface ChatCompletionContentPartImage {
  type: "image_url";
  /** A `data:` URL (image/jpeg, png, bmp, tiff, webp or application/dicom, base64) or a Blob/File (sent
   *  as one). Remote URLs are refused, as by the server: nothing leaves the page. */
  image_url: { url: string | Blob; detail?: "auto" | "low" | "high" };
}
export type ChatCompletionContentPart = ChatCompletionContentPartText | ChatCompletionContentPartImage;

/** System (or developer) messages first, then user and assistant messages alternating, ending with a user
 *  message; at most one image, in a user message (MedDr takes one image per conversation). */
export type ChatCompletionMessageParam =
  | { role: "system" | "developer"; content: string | ChatCompletionContentPartText[]; name?: string }
  | { role: "user"; content: string | ChatCompletionContentPart[]; name?: string }
  | { role: "assistant"; content?: string | ChatCompletionContentPartText[] | null; name?: string };

/** The request fields `meddr serve` reads, with its names and defaults. */
export interface ChatCompletionCreateParamsBase {
  messages: ChatCompletionMessageParam[];
  model?: string;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  /** Default: what the context has left. */
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  /** 0..=2; default 0 (greedy, as upstream's demo). */
  temperature?: number | null;
  /** (0, 1]; default 1. */
  top_p?: number | null;
  seed?: number | null;
  /** Up to 4 strings; the answer ends before the first one. */
  stop?: string | string[] | null;
  /** Only 1. */
  n?: number | null;
  /** llama-server's extensions. */
  top_k?: number | null;
  repetition_penalty?: number | null;
  /** Never stop on the end-of-turn token (always `max_tokens`). */
  ignore_eos?: boolean;
  /** Refused in the browser engine (the server answers them). */
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}
export interface ChatCompletionCreateParamsStreaming extends ChatCompletionCreateParamsBase { stream: true; }
export interface ChatCompletionCreateParamsNonStreaming extends ChatCompletionCreateParamsBase { stream?: false | null; }
export type ChatCompletionCreateParams = ChatCompletionCreateParamsStreaming | ChatCompletionCreateParamsNonStreaming;

/** Per-request options beside the body (what the server takes as flags). */
export interface RequestOptions {
  /** Aborting cancels generation; the call (or the stream's iteration) rejects with code "aborted". */
  signal?: AbortSignal;
  userText?: UserText;
  /** Overrides the model file's pad-to-square image preprocessing (GSCo's prompts use false, as upstream). */
  pad2square?: boolean;
  /** How a DICOM image (`data:application/dicom;base64,…` or a Blob) is rendered, as `meddr run --window C,W
   *  --frame N`; default: the file's first VOI window and the middle frame. */
  dicom?: DicomOptions;
}

/** A DICOM image's rendering (PS3.3 C.11.2.1.2.1's linear VOI function on the modality values). */
export interface DicomOptions {
  /** `[centre, width]` of the window, replacing the file's (greyscale images; width ≥ 1). */
  window?: [centre: number, width: number];
  /** Frame index counted from 0 (multi-frame files); default ⌊frames / 2⌋. */
  frame?: number;
}

export interface CompletionUsage { prompt_tokens: number; completion_tokens: number; total_tokens: number; }

/** `"stop"`: the end-of-turn token or a stop string; `"length"`: `max_tokens` ran out. */
export type FinishReason = "stop" | "length";

/** Beside every answer: the notice and what the user should know (ignored fields, image conversion,
 *  control tokens read as markup). */
export interface ResponseMeta { notice: string; warnings: string[]; }

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: Array<{
    index: number;
    message: { role: "assistant"; content: string };
    logprobs: null;
    finish_reason: FinishReason;
  }>;
  usage: CompletionUsage;
  system_fingerprint: null;
  meta: ResponseMeta;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** One choice; none in the last chunk of a stream with `stream_options.include_usage`. */
  choices: Array<{
    index: number;
    delta: { role?: "assistant"; content?: string };
    logprobs: null;
    finish_reason: FinishReason | null;
  }>;
  /** With `stream_options.include_usage`: null, except in the last chunk. */
  usage?: CompletionUsage | null;
  system_fingerprint: null;
  /** On the first chunk only. */
  meta?: ResponseMeta;
}

/** The engine's account of the last answer (not part of the OpenAI objects). */
export interface RunInfo {
  /** Generated token ids, the stop token included when generation ended on it. */
  tokens: number[];
  stats: {
    promptTokens: number; reusedTokens: number; newTokens: number; imageMs: number; prefillMs: number;
    decodeMs: number; decodeTokensPerSec: number;
    /** Where `decodeMs` went: recording and submitting steps, awaiting tokens (GPU time not hidden behind
     *  queued steps + readback latency), and the host's share (sampling, stop rules, detokenizing, the
     *  token callback). */
    decodeRecordMs: number; decodeWaitMs: number; decodeHostMs: number;
  };
  warnings: string[];
  memory: MemoryInfo;
}

/** What went wrong: `invalid_request_error` (the server's 400s: the message names the field, `param` it),
 *  `server_error`, `aborted`, a busy engine (`rate_limit_error`, `busy`), no model (`unavailable_error`),
 *  a failed load (`load_error`), or an engine that cannot start. */
export type MedDrErrorCode =
  | "invalid_request_error" | "server_error" | "unavailable_error" | "rate_limit_error" | "aborted" | "busy"
  | "load_error" | "not_ready" | "engine_error" | "no_webgpu" | "no_adapter" | "device" | "init" | "worker";

export declare class MedDrError extends Error {
  readonly code: MedDrErrorCode;
  /** OpenAI's error type, as the server's error body has it. */
  readonly type: string | null;
  /** The offending request field (`temperature`, `messages[1].role`…). */
  readonly param: string | null;
  /** The HTTP status the server answers with. */
  readonly status: number | null;
}

/** A streamed answer: iterate with `for await`; `abort()` cancels. */
export declare class ChatCompletionStream implements AsyncIterable<ChatCompletionChunk> {
  abort(): void;
  [Symbol.asyncIterator](): AsyncIterator<ChatCompletionChunk>;
}

/**
 * MedDr in this page: one engine worker, one WebGPU device, at most one loaded model.
 * Research aid, not a cleared medical device: answers are not diagnoses.
 */
export declare class MedDr {
  /** Starts the engine worker and its WebGPU device (rejects with a {@link MedDrError} when it cannot). */
  static create(options?: MedDrOptions): Promise<MedDr>;
  readonly device: DeviceInfo;
  /** The last load's result (null before one). */
  readonly model: LoadResult | null;
  /** The engine's account of the last finished answer. */
  readonly lastRun: RunInfo | null;
  load(source: ModelSource, options?: LoadOptions): Promise<LoadResult>;
  memory(): Promise<MemoryInfo>;
  readonly chat: {
    readonly completions: {
      create(body: ChatCompletionCreateParamsStreaming, options?: RequestOptions): Promise<ChatCompletionStream>;
      create(body: ChatCompletionCreateParamsNonStreaming, options?: RequestOptions): Promise<ChatCompletion>;
      create(body: ChatCompletionCreateParams, options?: RequestOptions): Promise<ChatCompletionStream | ChatCompletion>;
    };
  };
  /** Cancels the request being answered. */
  stop(): void;
  /** Ends the worker and frees its GPU memory. */
  terminate(): void;
}

export default MedDr;
