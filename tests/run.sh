#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test of the workspace, then the
# fuzz smoke run (60 s per parser), then the real-browser test (headless Chromium, WebGPU on SwiftShader).
# MEDDR_SKIP_FUZZ=1 / MEDDR_SKIP_BROWSER=1 skip those parts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
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
if [ "${MEDDR_SKIP_FUZZ:-0}" != 1 ]; then
  # 60 s of coverage-guided fuzzing per parser of untrusted bytes, three at a time (tests/fuzz/run.sh).
  t3=$SECONDS
  bash tests/fuzz/run.sh --seconds 60 --jobs 3
  echo "run.sh: fuzz smoke took $((SECONDS - t3)) s"
fi
if [ "${MEDDR_SKIP_BROWSER:-0}" != 1 ]; then
  t2=$SECONDS
  bash web/e2e-test.sh
  echo "run.sh: browser tests took $((SECONDS - t2)) s"
fi
echo "run.sh: all tests passed in $((SECONDS - t0)) s"
