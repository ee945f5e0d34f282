#!/usr/bin/env bash
# Builds greedy.c against llama.cpp's CPU backend (static, no tools or examples: ~2/3 of a full build's time)
# for crates/engine/tests/llamacpp_loader.rs. llama.cpp's source comes from the llama-cpp-python sdist on
# PyPI that tests/setup.sh already fetches for the tokenizer vectors; nothing of it lands in this repository.
#
# usage: build.sh SDIST.tar.gz OUT_DIR     (writes OUT_DIR/greedy; idempotent)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sdist="$1"
out="$2"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [ -x "$out/greedy" ] && [ "$out/greedy" -nt "$here/greedy.c" ]; then
  exit 0
fi
src="$out/src"
if [ ! -f "$src/include/llama.h" ]; then
  rm -rf "$src.part" && mkdir -p "$src.part"
  top="$(basename "$sdist" .tar.gz)"
  tar xzf "$sdist" -C "$src.part" --strip-components=3 "$top/vendor/llama.cpp"
  rm -rf "$src" && mv "$src.part" "$src"
fi
bld="$out/build"
if [ ! -f "$bld/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$out/configure.log" 2>&1 ||
    { tail -40 "$out/configure.log"; exit 1; }
fi
cmake --build "$bld" -j"${LLAMACPP_JOBS:-$(nproc)}" --target llama >"$out/build.log" 2>&1 ||
  { tail -60 "$out/build.log"; exit 1; }
libs=()
for l in libllama.a libggml.a libggml-cpu.a libggml-base.a; do
  f="$(find "$bld" -name "$l" | head -1)"
  [ -n "$f" ] || { echo "build.sh: $l not found under $bld" >&2; exit 1; }
  libs+=("$f")
done
g++ -O2 -x c "$here/greedy.c" -x none -I"$src/include" -I"$src/ggml/include" "${libs[@]}" -lpthread -lm \
  -o "$out/greedy.part"
mv "$out/greedy.part" "$out/greedy"
echo "build.sh: built $out/greedy"
