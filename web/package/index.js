// @meddr/edge: MedDr on WebGPU in the browser with an OpenAI-style API. The engine runs in a Web Worker this
// module starts itself; requests are read by the same Rust code as `meddr serve` (crates/runtime's openai
// module, compiled to wasm), so options, messages, errors and chunk objects are the server's.
// Research aid, not a cleared medical device: answers are not diagnoses.

/** The notice shown with every answer (the server's `meta.notice`). */
export const NOTICE = 'Research aid, not a medical device: do not use for diagnosis.';

/** A refused or failed request: the server's error fields (`type`, `param`, `status`) plus a `code`. */
export class MedDrError extends Error {
  constructor(fields) {
    super(fields.message);
    this.name = 'MedDrError';
    this.code = fields.code;
    this.type = fields.type ?? null;
    this.param = fields.param ?? null;
    this.status = fields.status ?? null;
  }
}

// The engine's message when it has one (a stop during a long prompt says how much of it ran).
const abortError = (message = 'the request was cancelled') => new MedDrError({ message, code: 'aborted', type: 'aborted', status: 499 });

/** The media type of image bytes for a data: URL: the Blob's own type, else sniffed (DICOM's `DICM` at 128,
 *  PNG, JPEG), so a dropped .dcm file without a type still reaches the DICOM decoder. */
async function imageType(blob) {
  if (blob.type && blob.type !== 'application/octet-stream') return blob.type;
  const head = new Uint8Array(await blob.slice(0, 132).arrayBuffer());
  const ascii = (a, b) => String.fromCharCode(...head.subarray(a, b));
  if (head.length >= 132 && ascii(128, 132) === 'DICM') return 'application/dicom';
  if (head[0] === 0x89 && ascii(1, 4) === 'PNG') return 'image/png';
  if (head[0] === 0xff && head[1] === 0xd8) return 'image/jpeg';
  if (/\.(dcm|dicom)$/i.test(blob.name || '')) return 'application/dicom';
  return blob.type || 'application/octet-stream';
}

async function blobToDataUrl(blob) {
  const type = await imageType(blob);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let bin = '';
  // In slices: String.fromCharCode takes a bounded number of arguments.
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:${type};base64,${btoa(bin)}`;
}

/** The request with Blob image URLs turned into data: URLs (what the shared request reader takes); the
 *  caller's object is not changed. */
async function withDataUrls(body) {
  if (!body || !Array.isArray(body.messages)) return body;
  const messages = await Promise.all(body.messages.map(async (m) => {
    if (!m || !Array.isArray(m.content)) return m;
    const content = await Promise.all(m.content.map(async (p) => {
      const url = p && p.type === 'image_url' && p.image_url ? p.image_url.url : undefined;
      return typeof Blob !== 'undefined' && url instanceof Blob
        ? { ...p, image_url: { ...p.image_url, url: await blobToDataUrl(url) } } : p;
    }));
    return { ...m, content };
  }));
  return { ...body, messages };
}

/** The chunks of one streamed answer: an async iterable of `chat.completion.chunk` objects. */
export class ChatCompletionStream {
  constructor(medDr, id) {
    this._medDr = medDr;
    this._id = id;
    this._queue = [];
    this._waiting = null;
    this._done = false;
    this._error = null;
  }
  _push(chunk) { this._queue.push(chunk); this._wake(); }
  _end(error) { this._done = true; this._error = error || null; this._wake(); }
  _wake() { if (this._waiting) { const w = this._waiting; this._waiting = null; w(); } }
  /** Stops generating; the iteration then ends with a MedDrError whose code is "aborted". */
  abort() { this._medDr._stop(this._id); }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this._queue.length) { yield this._queue.shift(); continue; }
      if (this._done) { if (this._error) throw this._error; return; }
      await new Promise((r) => { this._waiting = r; });
    }
  }
}

/** MedDr in this page: one engine worker, one WebGPU device, at most one loaded model. */
export class MedDr {
  /** Starts the engine worker and its WebGPU device. Rejects with a MedDrError (code "no_webgpu",
   *  "no_adapter", "device" or "init") when the browser cannot run it. */
  static async create(options = {}) {
    const worker = new Worker(options.workerUrl || new URL('./worker.js', import.meta.url), { type: 'module' });
    const medDr = new MedDr(worker, options);
    await medDr._ready;
    return medDr;
  }

  constructor(worker, options) {
    this._worker = worker;
    this._options = options;
    this._nextId = 1;
    this._pending = new Map();
    this.device = null;
    this.lastRun = null;
    this.model = null;
    this._ready = new Promise((resolve, reject) => { this._started = { resolve, reject }; });
    worker.onmessage = (ev) => this._onMessage(ev.data);
    worker.onerror = (e) => {
      const err = new MedDrError({ message: 'the engine worker failed: ' + (e.message || e), code: 'worker' });
      this._started.reject(err);
      for (const p of this._pending.values()) p.reject(err);
      this._pending.clear();
    };
    worker.postMessage({ type: 'init', forceF32: !!options.forceF32 });
    const self = this;
    /** OpenAI's client shape: `medDr.chat.completions.create(body, options)`. */
    this.chat = { completions: { create: (body, opts) => self._create(body, opts) } };
  }

  _onMessage(m) {
    if (m.type === 'ready') { this.device = m.device; this._started.resolve(); return; }
    if (m.type === 'fatal') { this._started.reject(new MedDrError({ message: m.message, code: m.code })); return; }
    const p = this._pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') p.onProgress?.(m.phase, m.loaded, m.total);
    else if (m.type === 'chunk') p.onChunk?.(JSON.parse(m.chunk));
    else if (m.type === 'result') { this._pending.delete(m.id); p.resolve(m.value); }
    else if (m.type === 'error') {
      this._pending.delete(m.id);
      p.reject(m.error.code === 'aborted' ? abortError(m.error.message) : new MedDrError(m.error));
    }
  }

  _request(msg, handlers = {}) {
    const id = this._nextId++;
    return { id, done: new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject, ...handlers });
      this._worker.postMessage({ ...msg, id });
    }) };
  }

  _stop(id) { this._worker.postMessage({ type: 'stop', id }); }

  /** Loads a model: `{ url }` (downloaded into the origin's private file system, resumed after an
   *  interruption, read from there next time; a `<stem>.mmproj.gguf` beside it is fetched too) or
   *  `{ file, mmproj? }` (local files; either order). */
  async load(source, options = {}) {
    const msg = source && source.url !== undefined
      ? { type: 'load', url: new URL(source.url, globalThis.location?.href).href }
      : { type: 'load', file: source?.file, mmproj: source?.mmproj };
    if (!msg.url && !(msg.file instanceof Blob)) {
      throw new MedDrError({ message: 'load() takes { url } or { file, mmproj? } with File/Blob values', code: 'load_error', type: 'invalid_request_error', status: 400 });
    }
    if (options.contextLength !== undefined) msg.contextLength = options.contextLength;
    const { done } = this._request(msg, { onProgress: options.onProgress });
    const info = await done;
    this.model = info;
    return info;
  }

  /** The engine's memory: wasm heap, GPU bytes of the loaded model, its file size. */
  async memory() { return this._request({ type: 'memory' }).done; }

  /** Cancels the request being answered (as an AbortSignal would). */
  stop() { this._stop(undefined); }

  /** Ends the worker and frees its GPU memory. */
  terminate() { this._worker.terminate(); }

  async _create(body, opts = {}) {
    if (opts.signal?.aborted) throw abortError();
    const text = JSON.stringify(await withDataUrls(body));
    const call = {};
    const userText = opts.userText ?? this._options.userText;
    if (userText !== undefined) call.userText = userText;
    if (opts.pad2square !== undefined) call.pad2square = opts.pad2square;
    if (opts.dicom !== undefined) call.dicom = opts.dicom;
    const stream = !!(body && body.stream === true);
    let s = null, first = null;
    // Resolved by the first chunk (a request that passed the checks) or by the end: options the server
    // refuses reject the create() call itself, as the OpenAI client's does.
    const started = new Promise((r) => { first = r; });
    const req = this._request({ type: 'chat', body: text, call }, {
      onChunk: (c) => { s?._push(c); first(); },
    });
    if (stream) s = new ChatCompletionStream(this, req.id);
    const onAbort = () => this._stop(req.id);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const finished = req.done.then((v) => { this.lastRun = v.run; return v; })
      .finally(() => opts.signal?.removeEventListener('abort', onAbort));
    if (!stream) return (await finished).response;
    finished.then(() => s._end(), (e) => s._end(e));
    await Promise.race([started, finished]);
    return s;
  }
}

export default MedDr;
