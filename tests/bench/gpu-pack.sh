#!/usr/bin/env bash
# Packs what tests/bench/gpu.sh needs on a machine with a GPU but no Rust toolchain (the lent device machine):
# release builds of meddr, meddr-quantize and meddr-synth-checkpoint, the engine's test binaries (release, so
# they run in seconds), the fixtures those tests read, and — when tests/bench/setup-llamacpp.sh has built it —
# llama.cpp's llama-bench with its libraries and gguf-py. Everything is stripped and put in one xz tarball.
#
# Usage: tests/bench/gpu-pack.sh [OUT_TARBALL]   (default: .devcarry/pack.tar.xz, git-ignored via .git/info/exclude)
# Env: MEDDR_SHARED (default ../shared), LLAMACPP_DIR (default /work/bench/llama.cpp-src), CARGO_TARGET_DIR.
# On the GPU machine: tar xJf pack.tar.xz -C /tmp/p && tests/bench/gpu.sh --bin /tmp/p/bin --tests /tmp/p/tests \
#   --fixtures /tmp/p/shared --llama /tmp/p/llama --gguf-py /tmp/p/gguf-py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
OUT="${1:-$root/.devcarry/pack.tar.xz}"
SHARED="${MEDDR_SHARED:-$root/../shared}"
LDIR="${LLAMACPP_DIR:-/work/bench/llama.cpp-src}"
TARGET="${CARGO_TARGET_DIR:-$root/target}"
log() { echo "gpu-pack: $*" >&2; }

[ -d "$SHARED/fixtures/checkpoints/dev" ] || { log "no fixtures in $SHARED (set MEDDR_SHARED)"; exit 1; }
cd "$root"
log "building release binaries"
cargo build -q --release -p meddr-cli -p meddr-quantize
log "building the engine's test binaries (release)"
mapfile -t tests < <(cargo test -q --release -p meddr-engine --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"].get("test"):
        print(m["executable"])')
[ ${#tests[@]} -gt 0 ] || { log "no test binaries found"; exit 1; }

stage="$(mktemp -d)"; trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/tests" "$stage/shared/fixtures"
cp "$TARGET/release/meddr" "$TARGET/release/meddr-quantize" "$TARGET/release/meddr-synth-checkpoint" "$stage/bin/"
for t in "${tests[@]}"; do
  b="$(basename "$t")"; cp "$t" "$stage/tests/${b%-*}"
done
strip "$stage"/bin/* "$stage"/tests/*
cp -r "$SHARED/fixtures/checkpoints" "$SHARED/fixtures/expected" "$SHARED/fixtures/images" \
  "$SHARED/fixtures/transforms" "$stage/shared/fixtures/"
if [ -x "$LDIR/build/bin/llama-bench" ]; then
  log "adding llama-bench and gguf-py from $LDIR"
  mkdir -p "$stage/llama"
  cp "$LDIR/build/bin/llama-bench" "$stage/llama/"
  find "$LDIR/build/bin" -maxdepth 1 -name '*.so*' -exec cp -P {} "$stage/llama/" \;
  strip "$stage/llama/llama-bench" "$stage"/llama/*.so* 2>/dev/null || true
  # System libraries a CUDA image may lack (OpenMP runtime, OpenSSL), from this machine: found on
  # LD_LIBRARY_PATH there, and never newer than this machine's C library.
  for lib in libgomp.so.1 libssl.so.3 libcrypto.so.3; do
    p="$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')"
    [ -n "$p" ] && cp -L "$p" "$stage/llama/$lib"
  done
  cp -r "$LDIR/gguf-py" "$stage/gguf-py"
else
  log "no llama.cpp build in $LDIR: the pack has no peer (run tests/bench/setup-llamacpp.sh apt src build)"
fi
mkdir -p "$(dirname "$OUT")"
tar -C "$stage" -cf - . | xz -T0 -6 >"$OUT.partial"
mv "$OUT.partial" "$OUT"
log "wrote $OUT ($(du -h "$OUT" | cut -f1)): $(cd "$stage" && find . -type f | wc -l) files"
