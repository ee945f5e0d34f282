// Page logic: UI state only. The engine is the package @meddr/edge (web/package, built into ./package/):
// the page uses its public API (MedDr.create, load, chat.completions.create), as any other page would.
import { MedDr } from './package/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let medDr = null;
let ready = false, modelLoaded = false, generating = false;
let imageBytes = null, imageFile = null;
// The finished exchanges of the current conversation ({question, answer}); the image belongs to its first
// question, and the whole history goes with every request (the package reuses the cached turns).
let conversation = [], conversationImage = null;
let controller = null;
window.meddr = { events: [], result: null, model: null, device: null, memory: null, errors: [], conversation };
function setState(s) { document.body.dataset.state = s; }
function mb(n) { return (n / (1 << 20)).toFixed(1) + ' MiB'; }
function message(kind, text, code) {
  const div = document.createElement('div');
  div.className = 'msg ' + kind;
  if (code) div.dataset.code = code;
  div.textContent = text;
  $('messages').appendChild(div);
}
function refreshButtons() {
  $('ask').disabled = !(ready && modelLoaded) || generating;
  $('follow-up').disabled = !(ready && modelLoaded) || generating || conversation.length === 0;
  $('stop').disabled = !generating;
  $('model-file').disabled = !ready || generating;
  $('load-url').disabled = !ready || generating;
}
function showMemory(m) {
  if (!m) return;
  window.meddr.memory = m;
  $('memory-info').textContent = `wasm heap ${mb(m.wasmHeapBytes)} · GPU (weights, KV cache, activations) ${mb(m.gpuWeightBytes)} · model file ${mb(m.modelFileBytes)}`;
}

function showDevice(d) {
  window.meddr.device = d;
  $('device-info').textContent = `GPU: ${d.adapterName || d.name || 'unknown'} (${d.backend}) · shader-f16 ${d.f16 ? 'yes' : 'no'} · max binding ${mb(d.maxStorageBindingBytes)}`;
  if (!d.f16) {
    // Kept next to the device line: the message area is cleared on every load.
    const note = document.createElement('div');
    note.className = 'msg warn';
    note.dataset.code = 'no-f16';
    note.textContent = d.adapterHasF16
      ? 'shader-f16 disabled (?f32=1): the engine uses its f32 path.'
      : 'This GPU does not offer shader-f16: the engine uses its f32 path (same answers, f32 KV cache: more GPU memory, slower).';
    $('device-info').after(note);
  }
}

function showProgress(phase, loaded, total) {
  const frac = total ? loaded / total : 0;
  $('load-progress').value = frac;
  const what = phase === 'download' ? 'Downloading' : phase === 'header' ? 'Reading header' : 'Uploading weights to the GPU';
  $('load-status').textContent = `${what}: ${mb(loaded)} / ${mb(total)} (${(frac * 100).toFixed(0)} %)`;
}

function failed(where, e) {
  const err = { where, message: e.message || String(e), code: e.code };
  window.meddr.errors.push(err);
  message('error', err.message, where);
  setState('error');
}

/** Loads a model through the package (`{ file, mmproj }` or `{ url }`). */
async function load(source) {
  $('messages').textContent = '';
  modelLoaded = false;
  setState('loading');
  refreshButtons();
  try {
    const m = await medDr.load(source, { onProgress: showProgress });
    window.meddr.events.push('loaded');
    modelLoaded = true;
    conversation = []; conversationImage = null; window.meddr.conversation = conversation; showHistory();
    window.meddr.model = { ...m.model, loadMs: m.loadMs, source: m.source, downloaded: m.downloaded, resumedFrom: m.resumedFrom };
    $('load-progress').value = 1;
    const src = m.source === 'cache' ? ' from the browser cache' : m.source === 'resumed' ? ` (download resumed at ${mb(m.resumedFrom)})` : '';
    $('load-status').textContent = `Loaded ${m.model.name || 'model'}${src}: ${m.model.nTensors} tensors, ${mb(m.model.tensorBytes)} in ${(m.loadMs / 1000).toFixed(1)} s`;
    showMemory(m.memory);
    setState('loaded');
  } catch (e) {
    $('load-status').textContent = 'Load failed.';
    failed(source.url ? 'loadUrl' : 'loadFile', e);
  }
  refreshButtons();
}

$('model-file').addEventListener('change', () => {
  const files = [...$('model-file').files];
  if (!files.length) return;
  $('messages').textContent = '';
  if (files.length > 2) {
    const e = { message: 'Choose one model file, or a model and its .mmproj.gguf (two files).', where: 'loadFile' };
    window.meddr.errors.push(e);
    message('error', e.message, e.where);
    return;
  }
  $('load-status').textContent = `Reading ${files.map((f) => f.name).join(' + ')}…`;
  // The engine tells the language model from the mmproj by their headers, so the order does not matter.
  load({ file: files[0], mmproj: files[1] });
});
$('load-url').addEventListener('click', () => {
  const url = $('model-url').value.trim();
  if (!url) return;
  load({ url: new URL(url, location.href).href });
});

/** DICOM: `DICM` after the 128-byte preamble, or a .dcm name / application/dicom type (files without the
 * preamble are still recognised by the decoder). */
function isDicom(file, bytes) {
  const magic = bytes.byteLength >= 132 && new TextDecoder().decode(new Uint8Array(bytes, 128, 4)) === 'DICM';
  return magic || file.type === 'application/dicom' || /\.(dcm|dicom)$/i.test(file.name);
}

async function takeImage(file) {
  if (!file) return;
  const bytes = await file.arrayBuffer();
  const dicom = isDicom(file, bytes);
  if (!dicom && !/^image\/(jpeg|png)$/.test(file.type) && !/\.(jpe?g|png)$/i.test(file.name)) {
    message('error', `${file.name} is not a JPEG, PNG or DICOM image.`, 'image-type');
    return;
  }
  imageBytes = bytes;
  imageFile = file;
  const img = $('image-preview');
  // The browser cannot show a DICOM file; the model sees it rendered with the file's own window and, for
  // several frames, the middle one (as `meddr run` without --window / --frame).
  img.hidden = dicom;
  if (!dicom) img.src = URL.createObjectURL(file);
  const kind = dicom ? 'DICOM, its own window and middle frame, no preview' : `${(file.size / 1024).toFixed(0)} KiB`;
  $('image-hint').textContent = `${file.name} (${kind}) — drop another to replace`;
}
$('image-file').addEventListener('change', () => takeImage($('image-file').files[0]));
const drop = $('image-drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); takeImage(e.dataTransfer.files[0]); });

/** Earlier exchanges of the conversation shown above the answer being written. */
function showHistory() {
  const ol = $('history');
  ol.textContent = '';
  for (const t of conversation) {
    const li = document.createElement('li');
    li.textContent = `Q: ${t.question} — A: ${t.answer}`;
    ol.appendChild(li);
  }
}

/** The request's messages: the conversation so far (its image with the first question) and `question`. */
function messages(question, image) {
  const user = (text, img) => img
    ? { role: 'user', content: [{ type: 'text', text }, { type: 'image_url', image_url: { url: img } }] }
    : { role: 'user', content: text };
  const out = [];
  conversation.forEach((t, i) => {
    out.push(user(t.question, i === 0 ? image : null));
    out.push({ role: 'assistant', content: t.answer });
  });
  out.push(user(question, conversation.length === 0 ? image : null));
  return out;
}

/** The Advanced DICOM fields as the package's `dicom` option (the engine checks the values and names a bad
 *  one in its error). */
function dicomOptions() {
  const dicom = {};
  const w = $('dicom-window').value.trim();
  if (w) dicom.window = w.split(',').map((x) => Number(x.trim()));
  const f = $('dicom-frame').value.trim();
  if (f) dicom.frame = Number(f);
  return Object.keys(dicom).length ? { dicom } : {};
}

/** Asks MedDr `question` about the current image (a new conversation), or as the next question of the current
 *  conversation with `followUp`; `extra` adds request options (GSCo: pad2square). Streams the answer. */
async function ask(question, extra, followUp = false) {
  if (!followUp) { conversation = []; conversationImage = imageFile; }
  showHistory();
  let text = '';
  $('answer').textContent = ''; delete $('answer').dataset.tokens; $('stats').textContent = '';
  generating = true;
  setState('generating');
  refreshButtons();
  controller = new AbortController();
  const body = {
    messages: messages(question, conversationImage),
    stream: true,
    max_tokens: Number($('max-tokens').value) || 256,
    temperature: Number($('temperature').value) || 0,
    ignore_eos: $('ignore-eos').checked,
    seed: Number($('seed').value) || 0,
  };
  const options = { signal: controller.signal, userText: $('literal-text').checked ? 'literal' : 'upstream', ...dicomOptions(), ...extra };
  let stopped = false;
  try {
    const stream = await medDr.chat.completions.create(body, options);
    for await (const chunk of stream) {
      window.meddr.events.push('chunk');
      for (const w of chunk.meta?.warnings || []) message('warn', w, 'answer-warning');
      text += chunk.choices[0]?.delta.content ?? '';
      $('answer').textContent = text;
    }
  } catch (e) {
    if (e.code !== 'aborted') { generating = false; failed('generate', e); refreshButtons(); return; }
    stopped = true;
  }
  generating = false;
  const run = stopped ? { tokens: [], stats: {}, warnings: [] } : medDr.lastRun;
  window.meddr.result = { tokens: run.tokens, text, stats: run.stats, stopped, warnings: run.warnings || [] };
  conversation.push({ question, answer: text });
  window.meddr.conversation = conversation;
  $('answer').textContent = text;
  $('answer').dataset.tokens = JSON.stringify(run.tokens);
  const s = run.stats || {};
  $('stats').textContent = `${run.tokens.length} tokens · prompt ${s.promptTokens} tokens in ${(s.prefillMs / 1000).toFixed(2)} s · decode ${s.decodeTokensPerSec ? s.decodeTokensPerSec.toFixed(2) : '–'} tokens/s${stopped ? ' · stopped' : ''}`;
  if (run.memory) showMemory(run.memory);
  setState('done');
  refreshButtons();
}
$('ask').addEventListener('click', () => {
  const question = $('question').value.trim();
  if (!question) { message('warn', 'Type a question first.', 'no-question'); return; }
  ask(question);
});
$('follow-up').addEventListener('click', () => {
  const question = $('question').value.trim();
  if (!question) { message('warn', 'Type a question first.', 'no-question'); return; }
  ask(question, {}, true);
});
$('stop').addEventListener('click', () => controller?.abort());

// The GSCo panel's code (and its 25 MB of wasm, burn inside) loads the first time the panel is opened.
let gscoStarted = false;
$('gsco').addEventListener('toggle', async () => {
  if (!$('gsco').open || gscoStarted) return;
  gscoStarted = true;
  try {
    const panel = await import('./gsco-panel.js');
    await panel.start({ getImage: () => imageBytes, ask, canAsk: () => ready && modelLoaded && !generating, message });
  } catch (e) {
    message('error', 'The GSCo panel failed to load: ' + (e.message || e), 'gsco-load');
  }
});

refreshButtons();
try {
  medDr = await MedDr.create({ forceF32: params.get('f32') === '1' });
  ready = true;
  window.meddr.events.push('ready');
  showDevice(medDr.device);
  showMemory(await medDr.memory());
  setState('ready');
} catch (e) {
  window.meddr.errors.push({ where: 'init', message: e.message, code: e.code });
  message('error', e.message, e.code);
  setState('error');
}
refreshButtons();
