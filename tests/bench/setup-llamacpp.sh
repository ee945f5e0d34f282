#!/usr/bin/env bash
# Prepares llama.cpp as a benchmark peer, idempotently, on a fresh Debian machine as root: its source from the
# llama-cpp-python sdist on PyPI (the only registry route to it), a Vulkan build of the tools we compare against,
# and a venv that can run convert_hf_to_gguf.py. Nothing of llama.cpp lands in this repository.
#
# Usage: setup-llamacpp.sh [all|src|apt|build|venv]...   (default: all)
# Env:   LLAMACPP_DIR   (default /work/bench/llama.cpp-src)  llama.cpp source root; build/ goes inside it
#        LLAMACPP_VENV  (default /work/bench/venv)           venv for convert_hf_to_gguf.py
#        LLAMACPP_JOBS  (default 2)                          parallel compile jobs
#        LLAMACPP_CLI=1                                      also build llama-cli (it compiles the whole server)
set -euo pipefail

VERSION=0.3.36
DIR="${LLAMACPP_DIR:-/work/bench/llama.cpp-src}"
VENV="${LLAMACPP_VENV:-/work/bench/venv}"
JOBS="${LLAMACPP_JOBS:-2}"
DL="${DIR%/}.dl"
PY="${PYTHON:-python3}"

log() { echo "setup-llamacpp: $*" >&2; }

step_src() {
  if [ -f "$DIR/convert_hf_to_gguf.py" ] && [ -f "$DIR/ggml/src/ggml-vulkan/ggml-vulkan.cpp" ]; then
    log "source present in $DIR"
  else
    mkdir -p "$DL" "$DIR"
    local sdist="$DL/llama_cpp_python-$VERSION.tar.gz"
    if [ ! -f "$sdist" ]; then
      log "downloading llama-cpp-python==$VERSION sdist"
      "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$DL"
    fi
    log "unpacking vendor/llama.cpp into $DIR"
    tar xzf "$sdist" -C "$DIR" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
  fi
  patch_vulkan
}

# Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings; the block only configures the validation
# layer (off unless GGML_VULKAN_VALIDATE), so dropping it and its pNext link changes nothing at run time.
patch_vulkan() {
  "$PY" - "$DIR/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'EOF'
import re, sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
if "LayerSettingsCreateInfoEXT" not in src:
    print("setup-llamacpp: ggml-vulkan.cpp already patched", file=sys.stderr)
    sys.exit(0)
block = re.compile(r"\n[ \t]*VkBool32 enable_best_practice = layer_settings;\n.*?"
                   r"vk::LayerSettingsCreateInfoEXT layer_setting_info\(settings\);\n", re.S)
src, n1 = block.subn("\n", src, count=1)
src, n2 = re.subn(r"(vk::InstanceCreateInfo instance_create_info\([^;]*?extensions), &layer_setting_info\);",
                  r"\1);", src, count=1)
if n1 != 1 or n2 != 1 or "layer_setting_info" in src or "LayerSettingEXT" in src:
    sys.exit(f"setup-llamacpp: could not patch {path} (block {n1}, create-info {n2}); the upstream code changed")
open(path, "w", encoding="utf-8").write(src)
print("setup-llamacpp: removed the VK_EXT_layer_settings block from ggml-vulkan.cpp", file=sys.stderr)
EOF
}

step_apt() {
  local pkgs=(cmake glslc libvulkan-dev spirv-headers glslang-tools mesa-vulkan-drivers libvulkan1 g++ make time
              python3-venv)
  local need=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -eq 0 ]; then log "apt packages present"; return; fi
  if [ "$(id -u)" != 0 ]; then log "need root to apt-get install: ${need[*]}"; exit 1; fi
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

step_build() {
  cd "$DIR"
  if [ ! -f build/CMakeCache.txt ]; then
    log "configuring (Vulkan on)"
    cmake -B build -DGGML_VULKAN=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release >build-configure.log 2>&1 ||
      { tail -40 build-configure.log; exit 1; }
  fi
  local want=(llama-quantize llama-bench llama-simple)
  [ "${LLAMACPP_CLI:-0}" = 1 ] && want+=(llama-cli)
  local have targets=()
  have="$(cmake --build build --target help 2>/dev/null)"
  for t in "${want[@]}"; do
    if grep -qE "(^|[ .:])$t(:|$| )" <<<"$have"; then targets+=("$t"); else log "no target $t in this llama.cpp"; fi
  done
  log "building ${targets[*]} with -j$JOBS (log: $DIR/build.log)"
  cmake --build build -j"$JOBS" --target "${targets[@]}" >build.log 2>&1 || { tail -60 build.log; exit 1; }
  for t in "${targets[@]}"; do
    [ -x "build/bin/$t" ] || { log "missing build/bin/$t after build"; exit 1; }
    log "built $DIR/build/bin/$t"
  done
}

# convert_hf_to_gguf.py imports torch, transformers (AutoConfig) and the vendored gguf-py at module level, and
# numpy/sentencepiece/safetensors while converting.
step_venv() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
      "import torch, transformers, gguf, numpy, sentencepiece, safetensors; torch.zeros(1, dtype=torch.bfloat16)" \
      2>/dev/null; then
    log "venv $VENV ready"
    return
  fi
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
  local pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  "${pip[@]}" "numpy~=2.2.6" "sentencepiece>=0.1.98,<0.3.0" safetensors "protobuf>=4.21.0,<5.0.0" \
    "transformers==4.57.6" tqdm pyyaml requests
  "${pip[@]}" "$DIR/gguf-py"
  # PyPI's only Linux x86_64 torch is the CUDA build: libtorch.so links cuBLAS, cuDNN, NCCL, ... so `import torch`
  # fails without the nvidia-* wheels even on a CPU-only machine (checked: --no-deps + pure deps does not import).
  # The set is ~2.6 GB of wheels (~4.5 GB installed); they are kept in $DL/torch-wheels so a rebuilt venv
  # installs offline.
  local wheels="$DL/torch-wheels"
  if ! ls "$wheels"/torch-2.11.0-*.whl >/dev/null 2>&1; then
    log "downloading torch==2.11.0 and its CUDA runtime wheels (~2.6 GB) into $wheels"
    mkdir -p "$wheels"
    "$VENV/bin/pip" download -q --disable-pip-version-check "torch==2.11.0" -d "$wheels"
  fi
  "${pip[@]}" --no-index --find-links "$wheels" "torch==2.11.0"
  "$VENV/bin/python" -c "import torch, transformers, gguf; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'transformers', transformers.__version__); torch.zeros(4, dtype=torch.bfloat16).float().sum()"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
for s in "${steps[@]}"; do
  case "$s" in
    all) step_apt; step_src; step_build; step_venv ;;
    src) step_src ;;
    apt) step_apt ;;
    build) step_build ;;
    venv) step_venv ;;
    *) log "unknown step '$s' (all|src|apt|build|venv)"; exit 2 ;;
  esac
done
