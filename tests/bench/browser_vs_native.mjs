// The browser side of tests/bench/browser-vs-native.sh (issue 12.1) and tests/bench/browser-large.sh (issue
// 12.5): headless Chromium on SwiftShader runs the @meddr/edge package from web/dist (release wasm) in one
// page: --warm-up generations (default 1), then --runs measured ones, each greedy with --max-new-tokens
// tokens and EOS ignored, and prints every run's stats (image, prefill and decode times, where the decode
// time went) as one JSON object on stdout, with the load time, the engine's memory() after the load and
// at the end, and the Chromium processes' resident memory (web/chromium.mjs's chromiumMemory).
// Every run after the first is preceded by a one-token text-only request: a request without an image starts
// the engine's conversation over, so the run encodes its image and prefills its whole prompt again (as each
// native_generate run does) instead of reusing the cached keys and values of the same question.
// The model comes over HTTP (`load({ url })`, copied into the origin's private file system) or, with
// --local-files, as local File objects from an <input type="file"> (`load({ file, mmproj })`: nothing is
// copied; the way a multi-GB model is loaded).
// Usage: node browser_vs_native.mjs --dist web/dist --model m.gguf [--mmproj m.mmproj.gguf] [--local-files]
//        --image img.jpg --question "…" --max-new-tokens 128 --runs 5 [--warm-up 1] [--timeout 1800]
//        (--runs 0 --warm-up 0: load only)
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';

// web/chromium.mjs (and its playwright-core, web/'s dev dependency) starts the browser as the CI test does.
import { chromiumMemory, launchChromium } from '../../web/chromium.mjs';
import { modelPath, sendFile, startServer } from '../../web/static-server.mjs';

const args = { runs: 5, warmUp: 1, maxNewTokens: 128, timeout: 1800, localFiles: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
  switch (a) {
    case '--dist': args.dist = resolve(val()); break;
    case '--model': args.model = resolve(val()); break;
    case '--mmproj': args.mmproj = resolve(val()); break;
    case '--local-files': args.localFiles = true; break;
    case '--warm-up': args.warmUp = Number(val()); break;
    case '--image': args.image = resolve(val()); break;
    case '--question': args.question = val(); break;
    case '--max-new-tokens': args.maxNewTokens = Number(val()); break;
    case '--runs': args.runs = Number(val()); break;
    case '--timeout': args.timeout = Number(val()); break;
    default: throw new Error(`unknown argument ${a}`);
  }
}
for (const k of ['dist', 'model', 'image', 'question']) if (args[k] === undefined) throw new Error(`--${k} is required`);
// --runs 0 --warm-up 0: load only (the load's time and memory figures).
if (!(Number.isInteger(args.runs) && args.runs >= 0 && Number.isInteger(args.warmUp) && args.warmUp >= 0)) {
  throw new Error('--runs and --warm-up must be integers >= 0');
}
if (args.mmproj && !args.localFiles) throw new Error('--mmproj needs --local-files (a URL load finds <stem>.mmproj.gguf itself)');
if (!existsSync(join(args.dist, 'package/index.js'))) throw new Error(`${args.dist}/package/index.js is missing: run web/build.sh`);
const log = (...m) => process.stderr.write(m.join(' ') + '\n');

const imageType = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg' }[extname(args.image).toLowerCase()] || 'image/jpeg';
const page = `<!doctype html><meta charset="utf-8"><title>bench</title>
<input type="file" id="files" multiple>
<script type="module">
import { MedDr } from '/package/index.js';
window.__runs = [];
try {
  const medDr = await MedDr.create();
  window.__device = medDr.device;
  let source = { url: '/models/${basename(args.model)}' };
  if (${args.localFiles}) {
    // The files the driver sets on the input (DOM.setFileInputFiles): Files backed by the local paths.
    const input = document.getElementById('files');
    const picked = new Promise((r) => input.addEventListener('change', r, { once: true }));
    window.__wantFiles = true;
    await picked;
    source = { file: input.files[0], mmproj: input.files[1] };
  }
  let last = -1;
  const t0 = performance.now();
  window.__model = await medDr.load(source, { onProgress: (phase, loaded, total) => {
    const pct = total ? Math.floor(loaded / total * 10) : 0;
    if (pct !== last) { last = pct; console.log('[progress]', phase, loaded, total); }
  } });
  window.__loadMs = performance.now() - t0;
  window.__memoryAfterLoad = await medDr.memory();
  window.__loaded = true;
  const image = 'data:${imageType};base64,${readFileSync(args.image).toString('base64')}';
  const runs = ${args.warmUp + args.runs};
  for (let i = 0; i < runs; i++) {
    // A request without an image starts the conversation over: the next run encodes and prefills again.
    if (i > 0) await medDr.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 1, temperature: 0 });
    const r = await medDr.chat.completions.create({
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } },
                                           { type: 'text', text: ${JSON.stringify(args.question)} }] }],
      max_tokens: ${args.maxNewTokens}, temperature: 0, ignore_eos: true,
    });
    window.__runs.push({ warmUp: i < ${args.warmUp}, tokens: medDr.lastRun.tokens, stats: medDr.lastRun.stats,
                         text: r.choices[0].message.content });
    console.log('[progress] run', i + 1, 'of', runs, JSON.stringify(medDr.lastRun.stats));
  }
  window.__memoryAtEnd = await medDr.memory();
  window.__done = true;
} catch (e) { window.__error = String(e && e.stack || e); }
</script>`;

// The page, the app's files and /models/ (web/static-server.mjs).
const { server, base } = await startServer(args.dist, (req, res, url) => {
  if (url.pathname === '/') { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(page); return true; }
  if (!url.pathname.startsWith('/models/')) return false;
  sendFile(req, res, modelPath(dirname(args.model), url));
  return true;
});

// WebGPU on Chromium's SwiftShader (the native side runs on the same ICD).
const browser = await launchChromium();
let code = 0;
let p = null;
try {
  p = await (await browser.newContext()).newPage();
  p.on('pageerror', (e) => log('[page error]', e.message));
  p.on('console', (m) => { if (m.text().startsWith('[progress]')) log(m.text()); });
  p.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') log('[worker]', m.text()); }));
  const deadline = Date.now() + args.timeout * 1000;
  const until = async (fn) => {
    await p.waitForFunction(fn, null, { timeout: Math.max(deadline - Date.now(), 1), polling: 500 });
    const error = await p.evaluate(() => window.__error);
    if (error) throw new Error(error);
  };
  await p.goto(base);
  if (args.localFiles) {
    await until(() => window.__wantFiles || window.__error);
    await p.setInputFiles('#files', args.mmproj ? [args.model, args.mmproj] : [args.model]);
  }
  await until(() => window.__loaded || window.__error);
  const processesAfterLoad = chromiumMemory();
  await until(() => window.__done || window.__error);
  const got = await p.evaluate(() => ({ device: window.__device, model: window.__model, loadMs: window.__loadMs,
    memoryAfterLoad: window.__memoryAfterLoad, memoryAtEnd: window.__memoryAtEnd, runs: window.__runs }));
  console.log(JSON.stringify({ ...got, processesAfterLoad, processesAtEnd: chromiumMemory() }));
} catch (e) {
  log('browser_vs_native.mjs:', e.stack || e);
  // What was measured before the failure (a timeout after a multi-GB load still shows the load's figures).
  const partial = await p?.evaluate(() => ({ model: window.__model, loadMs: window.__loadMs,
    memoryAfterLoad: window.__memoryAfterLoad, runs: window.__runs })).catch(() => null);
  if (partial) log('browser_vs_native.mjs: measured before the failure:', JSON.stringify({ ...partial, processes: chromiumMemory() }));
  code = 3;
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
