// Headless Debian Chromium with WebGPU on its own SwiftShader, as every real-browser script here starts it
// (web/e2e.mjs, web/e2e-package.mjs, tests/bench/browser_vs_native.mjs). The background-networking flags keep
// Chromium from dialling out, which this machine's closed network refuses; --disable-dev-shm-usage avoids a
// small /dev/shm in containers. MEDDR_CHROMIUM names another binary.
import { readdirSync, readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.MEDDR_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
      '--use-webgpu-adapter=swiftshader', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic', '--disable-dev-shm-usage'],
  });
}

/** Memory of the Chromium processes this Node process started (Linux /proc), by process type: for each of
 *  "browser", "gpu-process", "renderer", "utility"…, the summed resident set now (`rssBytes`), the summed
 *  peak resident sets (`peakRssBytes`, VmHWM) and the process count. Only this process's descendants count,
 *  so other Chromiums on the machine (a concurrent test) do not. Empty where /proc is absent. */
export function chromiumMemory() {
  const root = process.pid;
  const out = {};
  const parent = new Map();
  let pids = [];
  try { pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number); } catch { return out; }
  for (const pid of pids) {
    try {
      // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      parent.set(pid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited */ }
  }
  const within = (pid) => { for (let p = pid, n = 0; p > 1 && n < 64; p = parent.get(p), n++) if (p === root) return true; return false; };
  for (const pid of pids) {
    if (pid === root || !within(pid)) continue;
    try {
      // Chromium's children rewrite their command line as one space-separated string.
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!/^\S*chrom/i.test(cmd)) continue;
      const type = (/--type=([\w-]+)/.exec(cmd) || [0, 'browser'])[1];
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (key) => Number((new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status) || [0, 0])[1]) * 1024;
      const t = out[type] || (out[type] = { processes: 0, rssBytes: 0, peakRssBytes: 0 });
      t.processes += 1;
      t.rssBytes += kb('VmRSS');
      t.peakRssBytes += kb('VmHWM');
    } catch { /* exited */ }
  }
  return out;
}
