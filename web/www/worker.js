// The engine's Web Worker: owns the WebGPU device and the wasm module, so the page stays responsive while
// weights stream and tokens decode. Protocol: see meddr.d.ts (WorkerRequest / WorkerEvent).
import init, { Engine, wasmMemoryBytes } from './pkg/meddr_web.js';

let engine = null;
let stopRequested = false;
let busy = false;

const post = (msg) => self.postMessage(msg);
const fail = (where, e) => post({ type: 'error', where, message: e && e.message ? e.message : String(e) });

function memory() {
  return engine ? engine.memoryInfo() : { wasmHeapBytes: wasmMemoryBytes(), gpuWeightBytes: 0, modelFileBytes: 0 };
}

async function start(forceF32) {
  await init();
  if (!self.navigator.gpu) {
    post({ type: 'fatal', code: 'no-webgpu', message: 'WebGPU is not available in this browser. Use a recent Chrome, Edge or another browser with WebGPU enabled (on Linux: chrome://flags/#enable-unsafe-webgpu).' });
    return;
  }
  const adapter = await self.navigator.gpu.requestAdapter();
  if (!adapter) {
    post({ type: 'fatal', code: 'no-adapter', message: 'WebGPU is present but no GPU adapter is available (blocklisted GPU or GPU process crashed).' });
    return;
  }
  const hasF16 = adapter.features.has('shader-f16');
  const ai = adapter.info || {};
  // Software adapters run compute on the CPU, where the kernels use a different work split (see Engine.create).
  const cpuAdapter = !!(ai.isFallbackAdapter || adapter.isFallbackAdapter ||
    /swiftshader|llvmpipe|lavapipe|software/i.test([ai.vendor, ai.architecture, ai.description].join(' ')));
  try {
    engine = await Engine.create(!!forceF32, cpuAdapter);
  } catch (e) {
    post({ type: 'fatal', code: 'device', message: 'Could not create the WebGPU device: ' + (e.message || e) });
    return;
  }
  const device = engine.deviceInfo();
  device.adapterHasF16 = hasF16;
  // wgpu's WebGPU backend leaves the adapter name empty; the browser's adapter info is what users recognise.
  device.cpuAdapter = cpuAdapter;
  device.adapterName = [ai.vendor, ai.architecture, ai.description].filter(Boolean).join(' ');
  post({ type: 'ready', device, memory: memory() });
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

async function loadBlob(blob, mmproj, extra) {
  const t0 = performance.now();
  const progress = (phase, loaded, total) => post({ type: 'progress', phase, loaded, total });
  const model = await engine.loadBlob(blob, progress, undefined, mmproj);
  const ms = performance.now() - t0;
  post({ type: 'loaded', model, memory: memory(), loadMs: ms, ...extra });
}

async function generate(msg) {
  stopRequested = false;
  const opts = msg.options || {};
  const image = msg.image ? new Uint8Array(msg.image) : undefined;
  const result = await engine.generate(image, msg.question, opts, (id, text) => {
    post({ type: 'token', id, text });
    return !stopRequested;
  });
  post({ type: 'done', ...result, memory: memory() });
}

self.onmessage = async (ev) => {
  const msg = ev.data;
  if (msg.type === 'stop') { stopRequested = true; return; }
  if (msg.type === 'init') {
    try { await start(msg.forceF32); } catch (e) { post({ type: 'fatal', code: 'init', message: e.message || String(e) }); }
    return;
  }
  if (!engine) { fail(msg.type, new Error('the engine is not ready')); return; }
  if (busy) { fail(msg.type, new Error('the engine is busy; press Stop or wait')); return; }
  busy = true;
  try {
    if (msg.type === 'loadFile') {
      await loadBlob(msg.file, msg.mmproj, { source: 'file' });
    } else if (msg.type === 'loadUrl') {
      const progress = (phase, loaded, total) => post({ type: 'progress', phase, loaded, total });
      const { file, source, downloaded, resumedFrom } = await cachedFile(msg.url, progress);
      // llama.cpp's layout: the vision tower in <stem>.mmproj.gguf beside the model (none: a text model).
      const mmproj = await mmprojBeside(msg.url, progress);
      await loadBlob(file, mmproj?.file, { source, downloaded, resumedFrom, mmprojSource: mmproj?.source });
    } else if (msg.type === 'generate') {
      await generate(msg);
    } else if (msg.type === 'memory') {
      post({ type: 'memory', memory: memory() });
    } else {
      throw new Error('unknown request ' + msg.type);
    }
  } catch (e) {
    fail(msg.type, e);
  } finally {
    busy = false;
  }
};
