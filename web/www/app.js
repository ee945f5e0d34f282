// Page logic: UI state and messages; all engine work happens in worker.js.
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const params = new URLSearchParams(location.search);

let ready = false, modelLoaded = false, generating = false;
let imageBytes = null;
let tokens = [], text = '', tStart = 0, tFirst = 0;
// The finished exchanges of the current conversation ({question, answer}), and the question being answered.
let conversation = [], pendingQuestion = '';
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

worker.onmessage = (ev) => {
  const m = ev.data;
  window.meddr.events.push(m.type);
  switch (m.type) {
    case 'ready': {
      ready = true;
      window.meddr.device = m.device;
      const d = m.device;
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
      showMemory(m.memory);
      setState('ready');
      break;
    }
    case 'fatal':
      message('error', m.message, m.code);
      window.meddr.errors.push(m);
      setState('error');
      break;
    case 'progress': {
      const frac = m.total ? m.loaded / m.total : 0;
      $('load-progress').value = frac;
      const what = m.phase === 'download' ? 'Downloading' : m.phase === 'header' ? 'Reading header' : 'Uploading weights to the GPU';
      $('load-status').textContent = `${what}: ${mb(m.loaded)} / ${mb(m.total)} (${(frac * 100).toFixed(0)} %)`;
      break;
    }
    case 'loaded': {
      modelLoaded = true;
      conversation = []; window.meddr.conversation = conversation; showHistory();
      window.meddr.model = { ...m.model, loadMs: m.loadMs, source: m.source, downloaded: m.downloaded, resumedFrom: m.resumedFrom };
      $('load-progress').value = 1;
      const src = m.source === 'cache' ? ' from the browser cache' : m.source === 'resumed' ? ` (download resumed at ${mb(m.resumedFrom)})` : '';
      $('load-status').textContent = `Loaded ${m.model.name || 'model'}${src}: ${m.model.nTensors} tensors, ${mb(m.model.tensorBytes)} in ${(m.loadMs / 1000).toFixed(1)} s`;
      showMemory(m.memory);
      setState('loaded');
      break;
    }
    case 'token':
      if (!tFirst) tFirst = performance.now();
      tokens.push(m.id);
      text += m.text;
      $('answer').textContent = text;
      break;
    case 'done': {
      generating = false;
      window.meddr.result = { tokens: m.tokens, text: m.text, stats: m.stats, stopped: m.stopped, warnings: m.warnings || [] };
      conversation.push({ question: pendingQuestion, answer: m.text });
      window.meddr.conversation = conversation;
      for (const w of m.warnings || []) message('warn', w, 'answer-warning');
      $('answer').textContent = m.text;
      $('answer').dataset.tokens = JSON.stringify(m.tokens);
      const s = m.stats || {};
      $('stats').textContent = `${m.tokens.length} tokens · prompt ${s.promptTokens} tokens in ${(s.prefillMs / 1000).toFixed(2)} s · decode ${s.decodeTokensPerSec ? s.decodeTokensPerSec.toFixed(2) : '–'} tokens/s${m.stopped ? ' · stopped' : ''}`;
      showMemory(m.memory);
      setState('done');
      break;
    }
    case 'memory': showMemory(m.memory); break;
    case 'error':
      window.meddr.errors.push(m);
      message('error', m.message, m.where);
      if (m.where === 'generate') generating = false;
      if (m.where === 'loadFile' || m.where === 'loadUrl') { $('load-status').textContent = 'Load failed.'; modelLoaded = false; }
      setState('error');
      break;
  }
  refreshButtons();
};

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
  modelLoaded = false;
  setState('loading');
  $('load-status').textContent = `Reading ${files.map((f) => f.name).join(' + ')}…`;
  // The worker tells the language model from the mmproj by their headers, so the order does not matter.
  worker.postMessage({ type: 'loadFile', file: files[0], mmproj: files[1] });
  refreshButtons();
});
$('load-url').addEventListener('click', () => {
  const url = $('model-url').value.trim();
  if (!url) return;
  $('messages').textContent = '';
  modelLoaded = false;
  setState('loading');
  worker.postMessage({ type: 'loadUrl', url: new URL(url, location.href).href });
  refreshButtons();
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

/** Asks MedDr `question` about the current image (a new conversation), or as the next question of the current
 *  conversation with `followUp`; `extra` adds generation options (GSCo: pad2square). */
function ask(question, extra, followUp = false) {
  if (!followUp) conversation = [];
  pendingQuestion = question;
  showHistory();
  tokens = []; text = ''; tFirst = 0; tStart = performance.now();
  $('answer').textContent = ''; delete $('answer').dataset.tokens; $('stats').textContent = '';
  generating = true;
  setState('generating');
  const options = {
    maxNewTokens: Number($('max-tokens').value) || 256,
    temperature: Number($('temperature').value) || 0,
    ignoreEos: $('ignore-eos').checked,
    seed: Number($('seed').value) || 0,
    userText: $('literal-text').checked ? 'literal' : 'upstream',
    followUp,
    ...extra,
  };
  // Copy: the image stays available for the next question. A follow-up keeps the conversation's image.
  const image = !followUp && imageBytes ? imageBytes.slice(0) : null;
  worker.postMessage({ type: 'generate', image, question, options });
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
$('stop').addEventListener('click', () => worker.postMessage({ type: 'stop' }));

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

worker.onerror = (e) => { message('error', 'The engine worker failed: ' + (e.message || e), 'worker'); setState('error'); };
worker.postMessage({ type: 'init', forceF32: params.get('f32') === '1' });
refreshButtons();
