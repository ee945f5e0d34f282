#!/usr/bin/env bash
# Installs what the tests need, idempotently: the Python venv with the independent references (gguf-py,
# numpy, sentencepiece, Pillow) and, as root on Debian, the apt packages for Vulkan on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for p in mesa-vulkan-drivers libvulkan1; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

if ! .venv/bin/python -c "import gguf, numpy, sentencepiece, PIL, safetensors" 2>/dev/null; then
  echo "setup: creating .venv (gguf-py, numpy, sentencepiece, Pillow, safetensors)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
