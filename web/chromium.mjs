// Headless Debian Chromium with WebGPU on its own SwiftShader, as every real-browser script here starts it
// (web/e2e.mjs, web/e2e-package.mjs, tests/bench/browser_vs_native.mjs). The background-networking flags keep
// Chromium from dialling out, which this machine's closed network refuses; --disable-dev-shm-usage avoids a
// small /dev/shm in containers. MEDDR_CHROMIUM names another binary.
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
