// The engine's Web Worker, started by index.js (`new URL('./worker.js', import.meta.url)`): it owns the
// WebGPU device and the wasm module, so the page stays responsive while weights stream and tokens decode,
// and it keeps the OPFS model cache (downloads resumed with HTTP Range, keyed by URL). The messages it takes
// and sends are private to this package (index.js is their only other end).
import init, { Engine, wasmMemoryBytes } from './pkg/meddr_web.js';

let engine = null;
/** The id of the request being answered, and whether its caller asked to stop. */
let current = null;
let stopRequested = false;
/** The `model` field of responses: the loaded file's stem, as `meddr serve` names its model. */
let modelName = 'meddr';

const post = (msg) => self.postMessage(msg);
/** An error as plain fields (Errors lose their own properties through postMessage). */
const errorFields = (e) => ({
  message: e && e.message ? e.message : String(e),
  code: (e && e.code) || 'engine_error',
  type: (e && e.type) || 'server_error',
  param: (e && e.param) ?? null,
  status: (e && e.status) || 500,
});

function memory() {
  return engine ? engine.memoryInfo() : { wasmHeapBytes: wasmMemoryBytes(), gpuWeightBytes: 0, modelFileBytes: 0 };
}

async function start(forceF32) {
  await init();
  if (!self.navigator.gpu) {
    return { code: 'no_webgpu', message: 'WebGPU is not available in this browser. Use a recent Chrome, Edge or another browser with WebGPU enabled (on Linux: chrome://flags/#enable-unsafe-webgpu).' };
  }
  const adapter = await self.navigator.gpu.requestAdapter();
  if (!adapter) {
    return { code: 'no_adapter', message: 'WebGPU is present but no GPU adapter is available (blocklisted GPU or GPU process crashed).' };
  }
  const hasF16 = adapter.features.has('shader-f16');
  const ai = adapter.info || {};
  // Software adapters run compute on the CPU, where the kernels use a different work split (see Engine.create).
  const cpuAdapter = !!(ai.isFallbackAdapter || adapter.isFallbackAdapter ||
    /swiftshader|llvmpipe|lavapipe|software/i.test([ai.vendor, ai.architecture, ai.description].join(' ')));
  try {
    engine = await Engine.create(!!forceF32, cpuAdapter);
  } catch (e) {
    return { code: 'device', message: 'Could not create the WebGPU device: ' + (e.message || e) };
  }
  const device = engine.deviceInfo();
  device.adapterHasF16 = hasF16;
  device.cpuAdapter = cpuAdapter;
  // wgpu's WebGPU backend leaves the adapter name empty; the browser's adapter info is what users recognise.
  device.adapterName = [ai.vendor, ai.architecture, ai.description].filter(Boolean).join(' ');
  post({ type: 'ready', device, memory: memory() });
  return null;
}

// ---- OPFS cache for URL loads: resumable, keyed by URL ------------------------------------------------
async function sha256hex(text) {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('').slice(0, 32);
}

async function readMeta(handle) {
  const f = await handle.getFile();
  if (f.size === 0) return {};
  try { return JSON.parse(await f.text()); } catch { return {}; }
}

async function writeMeta(handle, meta) {
  const h = await handle.createSyncAccessHandle();
  try {
    const bytes = new TextEncoder().encode(JSON.stringify(meta));
    h.truncate(0);
    h.write(bytes, { at: 0 });
    h.flush();
  } finally { h.close(); }
}

/** Returns a File for `url`, downloading into OPFS (resuming a partial download) unless already cached. */
async function cachedFile(url, onProgress) {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle('meddr-models', { create: true });
  const key = await sha256hex(url);
  const dataH = await dir.getFileHandle(key + '.gguf', { create: true });
  const metaH = await dir.getFileHandle(key + '.json', { create: true });
  const meta = await readMeta(metaH);
  const existing = await dataH.getFile();
  if (meta.url === url && meta.complete && existing.size === meta.size) {
    return { file: existing, source: 'cache', downloaded: 0 };
  }
  const access = await dataH.createSyncAccessHandle();
  let downloaded = 0;
  try {
    let have = meta.url === url ? access.getSize() : 0;
    if (have === 0) access.truncate(0);
    const headers = {};
    if (have > 0) {
      headers['Range'] = `bytes=${have}-`;
      // The server sends the whole file (200) instead when the file changed since the partial download.
      if (meta.etag) headers['If-Range'] = meta.etag;
    }
    const resp = await fetch(url, { headers, cache: 'no-store' });
    let total;
    if (resp.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(resp.headers.get('Content-Range') || '');
      if (!m || Number(m[1]) !== have) throw new Error(`server answered the resume request with Content-Range ${resp.headers.get('Content-Range')}`);
      total = Number(m[3]);
    } else if (resp.status === 200) {
      have = 0;
      access.truncate(0);
      total = Number(resp.headers.get('Content-Length') || 0);
    } else {
      throw new Error(`downloading ${url}: HTTP ${resp.status} ${resp.statusText}`);
    }
    const resumedFrom = have;
    await writeMeta(metaH, { url, size: total, etag: resp.headers.get('ETag') || null, complete: false });
    const reader = resp.body.getReader();
    let sinceFlush = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        access.write(value, { at: have });
        have += value.byteLength;
        downloaded += value.byteLength;
        sinceFlush += value.byteLength;
        // Flushed every 8 MiB: an interruption loses at most that much of what was received.
        if (sinceFlush >= 8 << 20) { access.flush(); sinceFlush = 0; }
        onProgress('download', have, total);
      }
    } catch (e) {
      access.flush();
      throw new Error(`download interrupted at ${have} of ${total} bytes (${e.message || e}); load the URL again to resume`);
    }
    access.flush();
    if (total && have !== total) throw new Error(`download ended at ${have} of ${total} bytes; load the URL again to resume`);
    await writeMeta(metaH, { url, size: have, etag: resp.headers.get('ETag') || null, complete: true });
    access.close();
    return { file: await dataH.getFile(), source: resumedFrom > 0 ? 'resumed' : 'network', downloaded, resumedFrom };
  } catch (e) {
    try { access.close(); } catch {}
    throw e;
  }
}

/** The mmproj file beside a model URL (`x.gguf` → `x.mmproj.gguf`), through the same cache; none on a 404. */
async function mmprojBeside(url, onProgress) {
  const u = new URL(url);
  if (!u.pathname.endsWith('.gguf') || u.pathname.endsWith('.mmproj.gguf')) return undefined;
  u.pathname = u.pathname.slice(0, -'.gguf'.length) + '.mmproj.gguf';
  const head = await fetch(u.href, { method: 'HEAD', cache: 'no-store' }).catch(() => null);
  if (head && (head.status === 404 || head.status === 410)) return undefined;
  try {
    return await cachedFile(u.href, onProgress);
  } catch (e) {
    if (!head) return undefined; // offline and not cached: the model alone (its own check then explains)
    throw e;
  }
}

/** A file name or URL path's stem: `…/dev-f32.gguf` → `dev-f32`. */
const stem = (name) => (name.split('/').pop() || 'meddr').replace(/\.gguf$/i, '') || 'meddr';

async function load(msg) {
  const progress = (phase, loaded, total) => post({ type: 'progress', id: msg.id, phase, loaded, total });
  const t0 = performance.now();
  let file = msg.file, mmproj = msg.mmproj, extra = { source: 'file' }, name;
  if (msg.url) {
    const got = await cachedFile(msg.url, progress);
    // llama.cpp's layout: the vision tower in <stem>.mmproj.gguf beside the model (none: a text model).
    const mm = await mmprojBeside(msg.url, progress);
    file = got.file; mmproj = mm?.file;
    extra = { source: got.source, downloaded: got.downloaded, resumedFrom: got.resumedFrom, mmprojSource: mm?.source };
    name = stem(new URL(msg.url).pathname);
  } else {
    name = stem(file.name || 'meddr');
  }
  const model = await engine.loadBlob(file, progress, msg.contextLength, mmproj);
  // The engine tells a language model from its mmproj by their headers: name the model after the former.
  if (!msg.url && mmproj && /\.mmproj\.gguf$/i.test(file.name || '')) name = stem(mmproj.name || name);
  modelName = name;
  return { model, memory: memory(), loadMs: performance.now() - t0, name, ...extra };
}

async function chat(msg) {
  const call = { model: modelName, ...msg.call };
  const out = await engine.chatCompletions(msg.body, call, (chunk) => {
    if (chunk !== undefined) post({ type: 'chunk', id: msg.id, chunk });
    return !stopRequested;
  });
  const value = JSON.parse(out);
  value.run.memory = memory();
  return value;
}

let started = null;
self.onmessage = async (ev) => {
  const msg = ev.data;
  if (msg.type === 'stop') { if (current === msg.id || msg.id === undefined) stopRequested = true; return; }
  if (msg.type === 'init') {
    try {
      started = await start(msg.forceF32);
      if (started) post({ type: 'fatal', ...started });
    } catch (e) { post({ type: 'fatal', code: 'init', message: e.message || String(e) }); }
    return;
  }
  if (msg.type === 'memory') { post({ type: 'result', id: msg.id, value: memory() }); return; }
  if (!engine) { post({ type: 'error', id: msg.id, error: errorFields({ message: 'the engine is not ready', code: 'not_ready' }) }); return; }
  if (current !== null) {
    post({ type: 'error', id: msg.id, error: errorFields({ message: 'the engine is busy with another request; wait for it or cancel it', code: 'busy', type: 'rate_limit_error', status: 429 }) });
    return;
  }
  current = msg.id;
  stopRequested = false;
  try {
    let value;
    if (msg.type === 'load') value = await load(msg);
    else if (msg.type === 'chat') value = await chat(msg);
    else throw new Error('unknown request ' + msg.type);
    post({ type: 'result', id: msg.id, value });
  } catch (e) {
    const f = errorFields(e);
    if (msg.type === 'load' && !e.code) { f.code = 'load_error'; f.type = 'invalid_request_error'; f.status = 400; }
    post({ type: 'error', id: msg.id, error: f });
  } finally {
    current = null;
  }
};
