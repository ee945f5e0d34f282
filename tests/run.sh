#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export MEDDR_PYTHON="$root/.venv/bin/python"
export MEDDR_SHARED="${MEDDR_SHARED:-$root/../shared}"
cargo test --workspace --locked "$@"
