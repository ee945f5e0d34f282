#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test of the workspace, then the
# fuzz smoke run (60 s per parser), then the real-browser test (headless Chromium, WebGPU on SwiftShader).
# MEDDR_SKIP_FUZZ=1 / MEDDR_SKIP_BROWSER=1 skip those parts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
# Free disk at each phase: a full disk shows up as a linker "Bus error" (lld writes through mmap), which
# says nothing of its cause; these lines do. A clean run needs about 15 GB (Cargo registry and target/,
# the fuzz build, the wasm build, apt packages).
disk() { echo "run.sh: $1: $(df -h --output=avail . | tail -1 | tr -d ' ') free on $(df --output=target . | tail -1)"; }
disk "start"
bash tests/setup.sh
echo "run.sh: setup took $((SECONDS - t0)) s"
export MEDDR_PYTHON="$root/.venv/bin/python"
export MEDDR_SHARED="${MEDDR_SHARED:-$root/../shared}"
# Headless machines: libwayland (probed by the Vulkan loader) warns on stderr without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# A one-shot build gains nothing from incremental state (2.9 GB under target/ here); CI's disk is finite.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
t1=$SECONDS
cargo test --workspace --locked "$@"
echo "run.sh: cargo test took $((SECONDS - t1)) s"
disk "after cargo test"
# The tests' scratch files (quantized models, shard files…) are not needed by the later phases.
if [ "${CI:-}" = true ]; then rm -rf "${CARGO_TARGET_DIR:-target}/tmp"; fi
if [ "${MEDDR_SKIP_FUZZ:-0}" != 1 ]; then
  # 60 s of coverage-guided fuzzing per parser of untrusted bytes, four at a time (tests/fuzz/run.sh).
  t3=$SECONDS
  bash tests/fuzz/run.sh --seconds 60 --jobs 4
  echo "run.sh: fuzz smoke took $((SECONDS - t3)) s"
  disk "after the fuzz smoke run"
  # Its instrumented build (~2 GB) is not used again; CI's disk is finite.
  if [ "${CI:-}" = true ]; then rm -rf "${MEDDR_FUZZ_TARGET_DIR:-tests/fuzz/target}"; fi
fi
if [ "${MEDDR_SKIP_BROWSER:-0}" != 1 ]; then
  t2=$SECONDS
  bash web/e2e-test.sh
  echo "run.sh: browser tests took $((SECONDS - t2)) s"
  disk "after the browser tests"
fi
echo "run.sh: all tests passed in $((SECONDS - t0)) s"
