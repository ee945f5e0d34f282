#!/usr/bin/env bash
# Builds the browser app and the JS package into web/dist (web/dist/package: @meddr/edge): wasm (Debian rustc-web + build-std, no rustup target needed),
# JS bindings with the pinned wasm-bindgen CLI, and the static files of web/www.
# Installs the toolchain of docs/toolchain.md when missing (needs root for apt).
set -euo pipefail
WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$WEB")"
WB_VERSION=0.2.130   # must equal the wasm-bindgen crate version pinned in web/Cargo.toml
PROFILE="${MEDDR_WEB_PROFILE:-release}"
TARGET_DIR="${MEDDR_WASM_TARGET_DIR:-$WEB/target-wasm}"
export PATH="$HOME/.cargo/bin:$PATH"

need_apt=()
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need_apt+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library/std ] || need_apt+=(rust-web-src)
command -v wasm-ld-14 >/dev/null || need_apt+=(lld)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "build.sh: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web cargo-web rust-web-src lld >&2
fi

WB=""
for cand in "$(command -v wasm-bindgen || true)" "$HOME/.cargo/bin/wasm-bindgen"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" --version 2>/dev/null | grep -q " $WB_VERSION\$"; then WB="$cand"; break; fi
done
if [ -z "$WB" ]; then
  echo "build.sh: installing wasm-bindgen-cli $WB_VERSION (a few minutes)" >&2
  INSTALL_CARGO="$(command -v cargo || echo /usr/bin/cargo)"
  # --force: cargo's install record (~/.cargo/.crates.toml) can list the CLI while its binary is gone,
  # and then a plain install does nothing and the build fails later with "No such file".
  CARGO_TARGET_DIR="${TMPDIR:-/tmp}/wasm-bindgen-cli-build" "$INSTALL_CARGO" install --force wasm-bindgen-cli --version "$WB_VERSION" >&2
  WB="$HOME/.cargo/bin/wasm-bindgen"
  [ -x "$WB" ] || { echo "build.sh: wasm-bindgen-cli install left no $WB" >&2; exit 1; }
fi

cd "$ROOT"
flag=(--release); [ "$PROFILE" = release ] || flag=()
# /usr/bin first: Debian's cargo/rustc 1.96 with its std sources; RUSTC_BOOTSTRAP allows -Zbuild-std.
PATH=/usr/bin:$PATH CARGO_TARGET_DIR="$TARGET_DIR" \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-14 RUSTC_BOOTSTRAP=1 \
  /usr/bin/cargo build "${flag[@]}" --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  -p meddr-web -p meddr-web-gsco >&2
WASM_DIR="$TARGET_DIR/wasm32-unknown-unknown/$PROFILE"

rm -rf "$WEB/dist"
mkdir -p "$WEB/dist/package/pkg" "$WEB/dist/gsco"
# The engine, as the JS package @meddr/edge (web/package + the wasm-bindgen output in its pkg/): the form
# `npm pack web/dist/package` packs, and what the app imports (./package/index.js). The GSCo panel's
# module (burn) is the app's own, loaded only when the panel is opened.
# No name section: it is half of the GSCo module (25 of 50 MB); panics still print their message.
"$WB" --target web --remove-name-section --out-dir "$WEB/dist/package/pkg" "$WASM_DIR/meddr_web.wasm"
"$WB" --target web --remove-name-section --out-dir "$WEB/dist/gsco" "$WASM_DIR/meddr_web_gsco.wasm"
cp "$WEB"/package/{package.json,README.md,index.js,index.d.ts,worker.js} "$WEB/dist/package/"
cp -r "$WEB/www/." "$WEB/dist/"
for w in package/pkg/meddr_web_bg.wasm gsco/meddr_web_gsco_bg.wasm; do
  size=$(stat -c %s "$WEB/dist/$w")
  gz=$(gzip -9c "$WEB/dist/$w" | wc -c)
  echo "build.sh: $w $size bytes ($gz gzipped)" >&2
done
echo "build.sh: web/dist ready" >&2
