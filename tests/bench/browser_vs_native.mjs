// The browser side of tests/bench/browser-vs-native.sh (issue 12.1): headless Chromium on SwiftShader runs
// the @meddr/edge package from web/dist (release wasm) in one page: one warm-up generation, then --runs
// measured ones, each greedy with --max-new-tokens tokens and EOS ignored, and prints every run's stats
// (decode tok/s and where the decode time went) as one JSON object on stdout.
// Usage: node browser_vs_native.mjs --dist web/dist --model m.gguf --image img.jpg --question "…"
//        --max-new-tokens 128 --runs 5
import { createServer } from 'node:http';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';

// web/chromium.mjs (and its playwright-core, web/'s dev dependency) starts the browser as the CI test does.
import { launchChromium } from '../../web/chromium.mjs';

const args = { runs: 5, maxNewTokens: 128, timeout: 1800 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
  switch (a) {
    case '--dist': args.dist = resolve(val()); break;
    case '--model': args.model = resolve(val()); break;
    case '--image': args.image = resolve(val()); break;
    case '--question': args.question = val(); break;
    case '--max-new-tokens': args.maxNewTokens = Number(val()); break;
    case '--runs': args.runs = Number(val()); break;
    case '--timeout': args.timeout = Number(val()); break;
    default: throw new Error(`unknown argument ${a}`);
  }
}
for (const k of ['dist', 'model', 'image', 'question']) if (args[k] === undefined) throw new Error(`--${k} is required`);
if (!existsSync(join(args.dist, 'package/index.js'))) throw new Error(`${args.dist}/package/index.js is missing: run web/build.sh`);
const log = (...m) => process.stderr.write(m.join(' ') + '\n');

const page = `<!doctype html><meta charset="utf-8"><title>bench</title><script type="module">
import { MedDr } from '/package/index.js';
window.__runs = [];
try {
  const medDr = await MedDr.create();
  window.__device = medDr.device;
  await medDr.load({ url: '/models/${basename(args.model)}' });
  const image = 'data:image/jpeg;base64,${readFileSync(args.image).toString('base64')}';
  for (let i = 0; i <= ${args.runs}; i++) {
    const r = await medDr.chat.completions.create({
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } },
                                           { type: 'text', text: ${JSON.stringify(args.question)} }] }],
      max_tokens: ${args.maxNewTokens}, temperature: 0, ignore_eos: true,
    });
    window.__runs.push({ warmUp: i === 0, tokens: medDr.lastRun.tokens, stats: medDr.lastRun.stats,
                         text: r.choices[0].message.content });
  }
  window.__done = true;
} catch (e) { window.__error = String(e && e.stack || e); }
</script>`;

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/') { res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(page); return; }
  let file;
  if (url.pathname.startsWith('/models/')) {
    const name = decodeURIComponent(url.pathname.slice('/models/'.length));
    file = name.includes('/') ? '' : join(dirname(args.model), name);
  } else {
    file = join(args.dist, decodeURIComponent(url.pathname));
    if (!file.startsWith(args.dist)) file = '';
  }
  if (!file || !existsSync(file) || statSync(file).isDirectory()) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'Content-Type': MIME[extname(file)] || 'application/octet-stream',
    'Content-Length': statSync(file).size, 'Cache-Control': 'no-store' });
  if (req.method === 'HEAD') { res.end(); return; }
  createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}/`;

// WebGPU on Chromium's SwiftShader (the native side runs on the same ICD).
const browser = await launchChromium();
let code = 0;
try {
  const p = await (await browser.newContext()).newPage();
  p.on('pageerror', (e) => log('[page error]', e.message));
  p.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') log('[worker]', m.text()); }));
  await p.goto(base);
  await p.waitForFunction(() => window.__done || window.__error, null, { timeout: args.timeout * 1000, polling: 500 });
  const error = await p.evaluate(() => window.__error);
  if (error) throw new Error(error);
  console.log(JSON.stringify({ device: await p.evaluate(() => window.__device), runs: await p.evaluate(() => window.__runs) }));
} catch (e) {
  log('browser_vs_native.mjs:', e.stack || e);
  code = 3;
} finally {
  await browser.close();
  server.close();
}
process.exit(code);
