#!/usr/bin/env bash
# Drives the real page in headless Chromium and prints {"tokens": [...], "text": ...}.
#   web/e2e.sh --model <model.gguf> [--image <img>] --question <text> --max-new-tokens N [--ignore-eos]
# Needs web/dist (web/build.sh), /usr/bin/chromium and web/node_modules (installed here when missing).
set -euo pipefail
WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi
[ -d "$WEB/node_modules/playwright-core" ] || (cd "$WEB" && npm ci --no-audit --no-fund >&2)
[ -f "$WEB/dist/index.html" ] || "$WEB/build.sh"
exec node "$WEB/e2e.mjs" "$@"
