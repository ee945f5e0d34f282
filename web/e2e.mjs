// Drives the real web app in headless Debian Chromium (WebGPU on SwiftShader) through its UI.
// Usage: node e2e.mjs --model m.gguf [--image img.jpg] --question "…" [--follow-up "…"] --max-new-tokens N [--ignore-eos] [--literal]
//        [--temperature T] [--screenshot out.png] [--load-only] [--url-test] [--dist dir] [--timeout s]
//        [--gsco-specialist DIR --gsco-index FILE [--gsco-name NAME] [--gsco-top-n N] [--gsco-bad-index FILE]]
// Prints one JSON object on stdout: {"tokens": [...], "text": "...", ...}; with --gsco-*, the GSCo panel is
// opened, fed the specialist folder's two files and the index, and run on --image: adds "gsco" (the panel's
// result) and "gscoLazy" (requests for the panel's code before it was opened: must be none).
import { existsSync, statSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';
import { sendFile, startServer } from './static-server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = { dist: join(here, 'dist'), timeout: 900, temperature: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
  switch (a) {
    case '--model': args.model = resolve(val()); break;
    case '--image': args.image = resolve(val()); break;
    case '--question': args.question = val(); break;
    case '--follow-up': args.followUp = val(); break;
    case '--max-new-tokens': args.maxNewTokens = Number(val()); break;
    case '--ignore-eos': args.ignoreEos = true; break;
    case '--literal': args.literal = true; break;
    case '--temperature': args.temperature = Number(val()); break;
    case '--screenshot': args.screenshot = resolve(val()); break;
    case '--load-only': args.loadOnly = true; break;
    case '--url-test': args.urlTest = true; break;
    case '--dist': args.dist = resolve(val()); break;
    case '--timeout': args.timeout = Number(val()); break;
    case '--f32': args.forceF32 = true; break;
    case '--gsco-specialist': args.gscoSpecialist = resolve(val()); break;
    case '--gsco-index': args.gscoIndex = resolve(val()); break;
    case '--gsco-name': args.gscoName = val(); break;
    case '--gsco-top-n': args.gscoTopN = Number(val()); break;
    case '--gsco-bad-index': args.gscoBadIndex = resolve(val()); break;
    default: throw new Error(`unknown argument ${a}`);
  }
}
if (!args.model) throw new Error('--model is required');
if (!existsSync(join(args.dist, 'index.html'))) throw new Error(`${args.dist}/index.html missing: run web/build.sh first`);
const log = (...m) => process.stderr.write(m.join(' ') + '\n');

// ---- static server on 127.0.0.1 (web/static-server.mjs): the app, and the model by URL with Range support
// (for the resumable URL download) and a cut first download -------------------------------------------
const mmprojOf = (p) => p.replace(/\.gguf$/, '') + '.mmproj.gguf';
const modelStat = statSync(args.model);
const served = { modelBytes: 0, modelRequests: 0, interruptNext: 0, paths: [] };
const { server, base } = await startServer(args.dist, (req, res, url) => {
  served.paths.push(url.pathname);
  if (url.pathname === '/__model.mmproj.gguf') {
    // The vision tower beside the model (llama.cpp's layout); counted apart from the model's bytes.
    served.mmprojRequests = (served.mmprojRequests || 0) + 1;
    sendFile(req, res, mmprojOf(args.model));
    return true;
  }
  if (url.pathname === '/__model.gguf') {
    served.modelRequests++;
    const cutAfter = served.interruptNext; served.interruptNext = 0;
    sendFile(req, res, args.model, { cutAfter, onBytes: (n) => { served.modelBytes += n; } });
    return true;
  }
  return false;
});

const browser = await launchChromium();
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 1300 } });
  const page = await context.newPage();
  page.on('console', (m) => log('[page]', m.type(), m.text()));
  page.on('pageerror', (e) => log('[page error]', e.message));
  page.on('worker', (w) => w.on('console', (m) => log('[worker]', m.type(), m.text())));
  const ms = args.timeout * 1000;
  const waitState = async (states) => {
    await page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout: ms, polling: 200 });
    return page.evaluate(() => document.body.dataset.state);
  };
  const meddr = () => page.evaluate(() => window.meddr);
  const open = async () => {
    await page.goto(base + (args.forceF32 ? '?f32=1' : ''));
    if ((await waitState(['ready', 'error'])) === 'error') throw new Error('engine failed to start: ' + JSON.stringify((await meddr()).errors));
  };
  const waitGsco = async (pred, arg) => page.waitForFunction(pred, arg, { timeout: ms, polling: 200 });
  let gscoLazy = null;
  // The GSCo panel through its UI: open it (its code loads now), load the specialist and the index, run.
  const runGsco = async () => {
    gscoLazy = served.paths.filter((p) => /gsco/.test(p));
    await page.click('#gsco summary');
    await waitGsco(() => ['ready', 'error'].includes(document.body.dataset.gsco));
    const errs = () => page.evaluate(() => window.meddr.gsco.errors.length);
    const fail = async () => { throw new Error('GSCo panel: ' + JSON.stringify((await meddr()).gsco.errors)); };
    if (await errs()) await fail();
    if (args.gscoName) await page.fill('#gsco-specialist-name', args.gscoName);
    await page.setInputFiles('#gsco-specialist', [join(args.gscoSpecialist, 'config.json'), join(args.gscoSpecialist, 'model.safetensors')]);
    await waitGsco(() => window.meddr.gsco.specialists.length > 0 || window.meddr.gsco.errors.length > 0);
    if (await errs()) await fail();
    await page.setInputFiles('#gsco-index', args.gscoIndex);
    await waitGsco(() => window.meddr.gsco.index || window.meddr.gsco.errors.length > 0);
    if (await errs()) await fail();
    if (args.gscoTopN) await page.fill('#gsco-top-n', String(args.gscoTopN));
    await page.click('#gsco-run');
    await waitGsco(() => ['done', 'error'].includes(document.body.dataset.gsco));
    if (await errs()) await fail();
  };
  // A file that is not an index, given to the panel: its message (the panel keeps working).
  const badIndex = async () => {
    const n = await page.evaluate(() => window.meddr.gsco.errors.length);
    await page.setInputFiles('#gsco-index', args.gscoBadIndex);
    await waitGsco((k) => window.meddr.gsco.errors.length > k, n);
    return (await meddr()).gsco.errors.at(-1).message;
  };
  await open();
  const device = (await meddr()).device;
  log('device:', device.summary, '| adapter:', device.adapterName, '| cpu adapter:', device.cpuAdapter, '| matvec:', device.matvec);

  if (args.urlTest) {
    const loadUrl = async () => {
      await page.fill('#model-url', base + '__model.gguf');
      await page.click('#load-url');
      const st = await waitState(['loaded', 'error']);
      const m = await meddr();
      return { state: st, model: m.model, errors: m.errors.map((e) => e.message) };
    };
    served.interruptNext = Math.floor(modelStat.size / 3);
    const before1 = served.modelBytes;
    const first = await loadUrl();
    const bytes1 = served.modelBytes - before1;
    await open();
    const before2 = served.modelBytes;
    const second = await loadUrl();
    const bytes2 = served.modelBytes - before2;
    await open();
    const before3 = served.modelBytes;
    const third = await loadUrl();
    const bytes3 = served.modelBytes - before3;
    const out = { modelBytes: modelStat.size,
      interrupted: { state: first.state, servedBytes: bytes1, error: first.errors.at(-1) },
      resumed: { state: second.state, servedBytes: bytes2, source: second.model?.source, resumedFrom: second.model?.resumedFrom },
      cached: { state: third.state, servedBytes: bytes3, source: third.model?.source },
      memory: (await meddr()).memory };
    console.log(JSON.stringify(out));
    const ok = first.state === 'error' && second.state === 'loaded' && second.model.source === 'resumed'
      && second.model.resumedFrom > 0 && second.model.resumedFrom <= bytes1
      && bytes2 === modelStat.size - second.model.resumedFrom && third.state === 'loaded' && third.model.source === 'cache' && bytes3 === 0;
    if (!ok) { log('URL cache/resume test FAILED'); exitCode = 1; }
  } else {
    // A MedDr model is two files (llama.cpp's layout): the language model and its .mmproj.gguf.
    const mm = mmprojOf(args.model);
    await page.setInputFiles('#model-file', existsSync(mm) ? [args.model, mm] : args.model);
    if ((await waitState(['loaded', 'error'])) === 'error') {
      const m = await meddr();
      console.log(JSON.stringify({ error: m.errors.at(-1)?.message, device }));
      exitCode = 2;
    } else if (args.loadOnly) {
      const m = await meddr();
      console.log(JSON.stringify({ model: m.model, memory: m.memory, device }));
    } else {
      if (args.image) await page.setInputFiles('#image-file', args.image);
      await page.fill('#question', args.question ?? '');
      if (args.maxNewTokens) await page.fill('#max-tokens', String(args.maxNewTokens));
      await page.fill('#temperature', String(args.temperature));
      if (args.ignoreEos || args.literal) await page.evaluate(() => { document.querySelector('.row details').open = true; });
      if (args.ignoreEos) await page.check('#ignore-eos');
      if (args.literal) await page.check('#literal-text');
      if (args.gscoSpecialist) {
        await runGsco();
      } else {
        await page.click('#ask');
      }
      const st = await waitState(['done', 'error']);
      const m = await meddr();
      if (st === 'error') { console.log(JSON.stringify({ error: m.errors.at(-1)?.message, gsco: m.gsco })); exitCode = 2; }
      else {
        const shown = await page.$$eval('.msg.warn[data-code="answer-warning"]', (els) => els.map((e) => e.textContent));
        const out = { tokens: m.result.tokens, text: m.result.text, stats: m.result.stats, memory: m.memory, model: m.model, device,
          warnings: m.result.warnings, shownWarnings: shown };
        if (args.followUp !== undefined) {
          // The next question of the same conversation, through the page's Follow up button.
          await page.fill('#question', args.followUp);
          await page.click('#follow-up');
          const st2 = await waitState(['done', 'error']);
          const m2 = await meddr();
          out.followUp = st2 === 'error' ? { error: m2.errors.at(-1)?.message }
            : { tokens: m2.result.tokens, text: m2.result.text, stats: m2.result.stats };
          out.conversation = m2.conversation;
          if (st2 === 'error') exitCode = 2;
        }
        if (args.gscoSpecialist) {
          out.gsco = m.gsco.result;
          out.gscoLazy = gscoLazy;
          if (args.gscoBadIndex) out.gscoBadIndex = await badIndex();
        }
        console.log(JSON.stringify(out));
      }
    }
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
} catch (e) {
  log('e2e failed:', e.stack || e);
  exitCode = 3;
} finally {
  await browser.close();
  server.close();
}
process.exit(exitCode);
