// Real-browser test of the npm package @meddr/edge as a user installs it: `--app DIR` holds the tarball
// `npm pack` made, installed (DIR/node_modules/@meddr/edge). A page there imports the package through an
// import map (no bundler) and runs the README's example: its code block, verbatim but for the model URL, the
// image, the question and max_tokens (the fixture's, so the answer can be compared with the native
// reference). The model is served over HTTP with Range support and its first download cut at a third, so
// the example's first run fails and the reload resumes into OPFS. Then, in the same page: the same request
// without `stream` with the image as a Blob, options the server refuses, and a cancelled stream.
// Usage: node e2e-package.mjs --app DIR --model m.gguf --image img.jpg --question "…" --max-new-tokens N
// Prints one JSON object (the runs, the chunks, the errors); the checks are e2e-test.sh's.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { launchChromium } from './chromium.mjs';
import { modelPath, sendFile, startServer } from './static-server.mjs';

const args = { timeout: 900 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
  switch (a) {
    case '--app': args.app = resolve(val()); break;
    case '--model': args.model = resolve(val()); break;
    case '--image': args.image = resolve(val()); break;
    case '--question': args.question = val(); break;
    case '--max-new-tokens': args.maxNewTokens = Number(val()); break;
    case '--timeout': args.timeout = Number(val()); break;
    default: throw new Error(`unknown argument ${a}`);
  }
}
for (const k of ['app', 'model', 'image', 'question', 'maxNewTokens']) if (args[k] === undefined) throw new Error(`--${k} is required`);
const log = (...m) => process.stderr.write(m.join(' ') + '\n');

// ---- the README's example, as a module the page runs -------------------------------------------------
const readme = readFileSync(join(args.app, 'node_modules/@meddr/edge/README.md'), 'utf8');
const block = /```ts\n([\s\S]*?)```/.exec(readme);
if (!block) throw new Error('no ```ts block in the package README');
const example = block[1];
writeFileSync(join(args.app, 'example.ts'), example); // for `tsc --strict --noEmit` (e2e-test.sh)
const modelName = basename(args.model);
const imageUrl = `data:image/jpeg;base64,${readFileSync(args.image).toString('base64')}`;
const subst = (code, from, to) => {
  if (!code.includes(from)) throw new Error(`the README example no longer contains ${from}`);
  return code.replace(from, to);
};
let code = example;
code = subst(code, "'/models/meddr-q4_k_m.gguf'", JSON.stringify('/models/' + modelName));
code = subst(code, "'data:image/jpeg;base64,...'", JSON.stringify(imageUrl));
code = subst(code, "'Describe this image.'", JSON.stringify(args.question));
code = subst(code, 'max_tokens: 128', `max_tokens: ${args.maxNewTokens}`);
// Before the example: every chunk the example's loop reads is recorded (the loop itself is untouched).
const prelude = `import { ChatCompletionStream } from '@meddr/edge';
window.__chunks = [];
const __iter = ChatCompletionStream.prototype[Symbol.asyncIterator];
ChatCompletionStream.prototype[Symbol.asyncIterator] = async function* () {
  for await (const c of __iter.call(this)) { window.__chunks.push(c); yield c; }
};
`;
// After it: the non-streamed twin (image as a Blob), refused options, a cancelled stream.
const epilogue = `
const __err = (e) => ({ name: e.name, isMedDrError: e instanceof MedDrError, message: e.message, code: e.code, type: e.type, param: e.param, status: e.status });
const __out = { answer, chunks: window.__chunks.slice(), run: medDr.lastRun, load: medDr.model };
const __bytes = await (await fetch(image)).arrayBuffer();
const __blob = new Blob([__bytes]); // no type: the package sniffs JPEG
const __msgs = (img) => [{ role: 'user', content: [{ type: 'text', text: ${JSON.stringify(args.question)} }, { type: 'image_url', image_url: { url: img } }] }];
__out.nonStreamed = await medDr.chat.completions.create({ messages: __msgs(__blob), max_tokens: ${args.maxNewTokens}, temperature: 0 });
__out.nonStreamedRun = medDr.lastRun;
__out.refused = {};
for (const [name, body] of Object.entries({
  temperature: { messages: __msgs(image), temperature: -1 },
  role: { messages: [{ role: 'tool', content: 'hi' }] },
  remoteImage: { messages: __msgs('https://example.com/x.png') },
  maxTokens: { messages: __msgs(image), max_tokens: 0 },
})) {
  try { await medDr.chat.completions.create(body); __out.refused[name] = null; } catch (e) { __out.refused[name] = __err(e); }
}
// A per-request option the engine checks: a DICOM window of width 0.
try { await medDr.chat.completions.create({ messages: __msgs(image), max_tokens: 1 }, { dicom: { window: [40, 0] } }); __out.refused.dicomWindow = null; }
catch (e) { __out.refused.dicomWindow = __err(e); }
const __ctl = new AbortController();
let __n = 0;
try {
  const s = await medDr.chat.completions.create({ messages: __msgs(image), stream: true, max_tokens: ${args.maxNewTokens} }, { signal: __ctl.signal });
  for await (const c of s) { if (c.choices[0]?.delta.content) { __n++; __ctl.abort(); } }
  __out.aborted = { chunksAfterAbort: __n, error: null };
} catch (e) { __out.aborted = { contentChunks: __n, error: __err(e) }; }
// Aborted as soon as it starts, during a prompt of three 512-token chunks: the engine stops between chunks
// (its message says after how many tokens), not after the whole prompt.
const __ctl2 = new AbortController();
try {
  const s = await medDr.chat.completions.create({ messages: [{ role: 'user', content: 'Summarise: ' + 'the lungs are clear '.repeat(260) }], stream: true, max_tokens: 4 }, { signal: __ctl2.signal });
  for await (const c of s) { __ctl2.abort(); }
  __out.abortedInPrompt = { error: null };
} catch (e) { __out.abortedInPrompt = { error: __err(e) }; }
const __after = await medDr.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 });
__out.afterAbort = __after.choices[0].finish_reason;
window.__result = __out;
`;
const page = `<!doctype html><meta charset="utf-8"><title>@meddr/edge README example</title>
<script type="importmap">{"imports": {"@meddr/edge": "./node_modules/@meddr/edge/index.js"}}</script>
<script>
window.__errors = [];
addEventListener('error', (e) => window.__errors.push(e.message || String(e.error)));
addEventListener('unhandledrejection', (e) => window.__errors.push(e.reason && e.reason.message || String(e.reason)));
</script>
<script type="module" src="example.js"></script>`;
writeFileSync(join(args.app, 'example.js'), prelude + code + epilogue);
writeFileSync(join(args.app, 'index.html'), page);

// ---- static server on 127.0.0.1 (web/static-server.mjs): the app dir, and /models/ with Range (resume) and a
// cut first download of the model
const served = { modelBytes: 0, interruptNext: 0 };
const { server, base } = await startServer(args.app, (req, res, url) => {
  if (!url.pathname.startsWith('/models/')) return false;
  const file = modelPath(dirname(args.model), url);
  if (basename(file) !== modelName) { sendFile(req, res, file); return true; }
  const cutAfter = served.interruptNext; served.interruptNext = 0;
  sendFile(req, res, file, { cutAfter, onBytes: (n) => { served.modelBytes += n; } });
  return true;
});

const browser = await launchChromium();
let exitCode = 0;
try {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => log('[page]', m.type(), m.text().slice(0, 300)));
  page.on('pageerror', (e) => log('[page error]', e.message));
  page.on('worker', (w) => w.on('console', (m) => log('[worker]', m.type(), m.text())));
  const ms = args.timeout * 1000;
  const size = statSync(args.model).size;
  // 1. The first download is cut at a third: the example's load() rejects.
  served.interruptNext = Math.floor(size / 3);
  await page.goto(base);
  await page.waitForFunction(() => window.__errors.length > 0 || window.__result, null, { timeout: ms, polling: 200 });
  const first = { servedBytes: served.modelBytes, errors: await page.evaluate(() => window.__errors) };
  // 2. Reload: the example runs again, resuming the download from OPFS.
  const before = served.modelBytes;
  await page.goto(base);
  await page.waitForFunction(() => window.__errors.length > 0 || window.__result, null, { timeout: ms, polling: 200 });
  const errors = await page.evaluate(() => window.__errors);
  const result = await page.evaluate(() => window.__result);
  if (!result) throw new Error('the README example failed: ' + JSON.stringify(errors));
  console.log(JSON.stringify({ ...result, modelBytes: size,
    interrupted: first, resumedServedBytes: served.modelBytes - before, errors }));
} catch (e) {
  log('e2e-package failed:', e.stack || e);
  exitCode = 3;
} finally {
  await browser.close();
  server.close();
}
process.exit(exitCode);
