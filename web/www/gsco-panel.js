// The GSCo panel (loaded by app.js the first time the panel is opened): picks specialists, an index and a
// task prompt, runs the specialists and the retrieval in gsco-worker.js, shows MoED, RAD and the composed
// prompt, then asks MedDr through the engine's worker with that prompt (pad2square off, as upstream).
const $ = (id) => document.getElementById(id);
const state = { specialists: [], index: null, result: null, errors: [], state: 'loading' };
let worker = null, nextId = 1, api = null, templateText = null, busy = false;
const pending = new Map();

function setGsco(s) { state.state = s; document.body.dataset.gsco = s; }
function status(text) { $('gsco-status').textContent = text; }
function request(msg, transfer) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...msg, id }, transfer || []);
  });
}
function fail(where, e) {
  const message = e && e.message ? e.message : String(e);
  state.errors.push({ where, message });
  api.message('error', `GSCo (${where}): ${message}`, 'gsco-' + where);
  status(`Failed: ${message}`);
  setGsco('error');
}
function refresh() {
  $('gsco-run').disabled = busy || !state.index || state.specialists.length === 0 || state.state === 'loading';
}
const pct = (p) => (100 * p).toFixed(1) + ' %';
function cell(tr, text) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); }

function renderSpecialists() {
  const ul = $('gsco-specialists');
  ul.textContent = '';
  for (const s of state.specialists) {
    const li = document.createElement('li');
    li.textContent = `${s.name}: ${s.architecture}, ${s.task}, ${s.labels.length} labels, images ${s.imgSize} px `;
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.textContent = 'remove';
    rm.addEventListener('click', async () => {
      try {
        await request({ type: 'removeSpecialist', name: s.name });
        state.specialists = state.specialists.filter((x) => x.name !== s.name);
        renderSpecialists();
      } catch (e) { fail('removeSpecialist', e); }
      refresh();
    });
    li.appendChild(rm);
    ul.appendChild(li);
  }
}

function renderResult(r) {
  const moed = $('gsco-moed').tBodies[0], rad = $('gsco-rad').tBodies[0];
  moed.textContent = ''; rad.textContent = '';
  for (const m of r.moed) {
    const spec = state.specialists.find((s) => s.name === m.specialist);
    const names = spec ? spec.labels : m.probabilities.map((_, i) => String(i));
    const tr = document.createElement('tr');
    cell(tr, `${m.specialist} (${m.architecture})`);
    cell(tr, m.predicted.join(', ') || 'none');
    cell(tr, m.probabilities.map((p, i) => `${names[i]} ${pct(p)}`).join(' · '));
    moed.appendChild(tr);
  }
  r.rad.forEach((c, i) => {
    const tr = document.createElement('tr');
    cell(tr, String(i + 1)); cell(tr, String(c.index)); cell(tr, c.label); cell(tr, c.distance.toFixed(6));
    rad.appendChild(tr);
  });
  $('gsco-prompt').textContent = r.prompt;
  $('gsco-result').hidden = false;
}

async function addSpecialist() {
  const files = [...$('gsco-specialist').files];
  const config = files.find((f) => /\.json$/i.test(f.name));
  const weights = files.find((f) => /\.safetensors$/i.test(f.name));
  if (!config || !weights) {
    fail('addSpecialist', new Error(`pick both files of a specialist folder, config.json and model.safetensors (got ${files.map((f) => f.name).join(', ') || 'nothing'})`));
    return;
  }
  const folder = (weights.webkitRelativePath || '').split('/').slice(-2, -1)[0];
  const name = $('gsco-specialist-name').value.trim() || folder || weights.name.replace(/\.safetensors$/i, '');
  busy = true; refresh(); setGsco('busy');
  status(`Loading specialist ${name} (${(weights.size / 2 ** 20).toFixed(1)} MiB)…`);
  try {
    const s = await request({ type: 'addSpecialist', name, config, weights });
    state.specialists = state.specialists.filter((x) => x.sha256 !== s.sha256);
    state.specialists.push(s);
    renderSpecialists();
    status(`Specialist ${s.name} loaded.`);
    setGsco('ready');
  } catch (e) { fail('addSpecialist', e); }
  busy = false; refresh();
  $('gsco-specialist').value = '';
}

async function setIndex() {
  const file = $('gsco-index').files[0];
  if (!file) return;
  busy = true; refresh(); setGsco('busy');
  status(`Reading index ${file.name} (${(file.size / 2 ** 20).toFixed(1)} MiB)…`);
  try {
    const i = await request({ type: 'setIndex', name: file.name, file });
    state.index = i;
    $('gsco-index-info').textContent = `${i.name}: ${i.cases} cases, ${i.featureMode} features of ${i.featureDim} (${i.dtype}), built by ${i.specialist} (${i.architecture}) from ${i.source || 'unknown data'}`;
    status('Index loaded.');
    setGsco('ready');
  } catch (e) { fail('setIndex', e); }  // the panel keeps the index it had (if any)
  busy = false; refresh();
}

async function run() {
  const image = api.getImage();
  if (!image) { fail('collaborate', new Error('choose an image in step 2 first')); return; }
  const templateName = $('gsco-template').value === 'file' ? ($('gsco-template-file').files[0]?.name || '') : 'pcam200';
  if ($('gsco-template').value === 'file' && templateText === null) { fail('collaborate', new Error('choose a template file')); return; }
  const topN = Number($('gsco-top-n').value);
  busy = true; refresh(); setGsco('busy');
  status('Running the specialists and the retrieval…');
  try {
    const r = await request({ type: 'collaborate', image: image.slice(0), templateName,
      templateText: $('gsco-template').value === 'file' ? templateText : null, topN });
    state.result = r;
    renderResult(r);
    status(`Specialists and retrieval took ${(r.ms / 1000).toFixed(2)} s.`);
    setGsco('done');
    if (api.canAsk()) api.ask(r.prompt, { pad2square: false });
    else api.message('info', 'Load a MedDr model (step 1) to get its answer to this prompt.', 'gsco-no-model');
  } catch (e) { fail('collaborate', e); }
  busy = false; refresh();
}

/** Starts the panel; `app` gives the page's image, MedDr's ask and the message area. */
export async function start(app) {
  api = app;
  window.meddr.gsco = state;
  setGsco('loading');
  status('Starting the specialists’ GPU device…');
  worker = new Worker(new URL('./gsco-worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (ev) => {
    const m = ev.data, p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.type === 'result') p.resolve(m.value); else p.reject(new Error(m.message));
  };
  worker.onerror = (e) => fail('worker', new Error(e.message || 'the GSCo worker failed to start'));
  $('gsco-specialist').addEventListener('change', addSpecialist);
  $('gsco-index').addEventListener('change', setIndex);
  $('gsco-template').addEventListener('change', () => { $('gsco-template-file').hidden = $('gsco-template').value !== 'file'; });
  $('gsco-template-file').addEventListener('change', async () => {
    const f = $('gsco-template-file').files[0];
    templateText = f ? await f.text() : null;
  });
  $('gsco-run').addEventListener('click', run);
  try {
    const r = await request({ type: 'init' });
    status(`Ready on ${r.adapter || 'the GPU'}. Pick a specialist and an index.`);
    setGsco('ready');
  } catch (e) { fail('init', e); }
  refresh();
}
