// The GSCo panel's Web Worker: its own wasm module (burn on WebGPU) and GPU device, started only when the
// panel is first opened. Requests carry an id; each gets one {type: 'result' | 'error', id} answer.
import init, { GscoPanel } from './gsco/meddr_web_gsco.js';

let panel = null;
const post = (msg) => self.postMessage(msg);
const bytes = async (blob) => new Uint8Array(await blob.arrayBuffer());

async function handle(m) {
  switch (m.type) {
    case 'init': {
      await init();
      if (!self.navigator.gpu) throw new Error('WebGPU is not available in this browser, so the specialists cannot run.');
      panel = await GscoPanel.create();
      return { adapter: panel.adapter };
    }
    case 'addSpecialist':
      return panel.addSpecialist(m.name, await bytes(m.config), await bytes(m.weights), m.imgSize ?? undefined, m.task ?? undefined);
    case 'removeSpecialist':
      return panel.removeSpecialist(m.name);
    case 'setIndex':
      return panel.setIndex(m.name, await bytes(m.file));
    case 'collaborate': {
      const t0 = performance.now();
      const r = await panel.collaborate(new Uint8Array(m.image), m.templateName, m.templateText ?? undefined, m.topN);
      r.ms = performance.now() - t0;
      return r;
    }
    default:
      throw new Error('unknown request ' + m.type);
  }
}

// One request at a time, in order: the panel's state changes must not interleave with a running image.
let queue = Promise.resolve();
self.onmessage = (ev) => {
  const m = ev.data;
  queue = queue.then(async () => {
    try {
      if (!panel && m.type !== 'init') throw new Error('the GSCo panel is not ready');
      post({ type: 'result', id: m.id, value: await handle(m) });
    } catch (e) {
      post({ type: 'error', id: m.id, message: e && e.message ? e.message : String(e) });
    }
  });
};
