// Types of the app's own worker protocol. The engine's API is the package @meddr/edge (web/package/index.d.ts),
// which the app imports from ./package/index.js like any other page would.

// GSCo panel worker (gsco-panel.js <-> gsco-worker.js), started the first time the panel is opened. Its wasm
// API types (GscoPanel, SpecialistSummary, IndexSummary, Collaboration) are in gsco/meddr_web_gsco.d.ts.
// Every request carries an `id`; the answer is {type: 'result', id, value} or {type: 'error', id, message}.
import type { SpecialistSummary, IndexSummary, Collaboration } from './gsco/meddr_web_gsco';

export type GscoRequest = { id: number } & (
  | { type: 'init' }
  | { type: 'addSpecialist'; name: string; config: Blob; weights: Blob; imgSize?: number; task?: 'multi-class' | 'multi-label' }
  | { type: 'removeSpecialist'; name: string }
  | { type: 'setIndex'; name: string; file: Blob }
  /** `templateText` null: the built-in template `templateName` (pcam200). */
  | { type: 'collaborate'; image: ArrayBuffer; templateName: string; templateText: string | null; topN: number });

export type GscoEvent =
  | { type: 'result'; id: number; value: { adapter: string } | SpecialistSummary | IndexSummary | number | (Collaboration & { ms: number }) }
  | { type: 'error'; id: number; message: string };
