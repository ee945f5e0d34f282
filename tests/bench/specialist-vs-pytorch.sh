#!/usr/bin/env bash
# Benchmark (not a test): our specialists and GSCo retrieval against PyTorch and scikit-learn, on the same CPU
# in the same run, reported as ratios (absolute numbers from different machines or days do not compare).
#
#   tests/bench/specialist-vs-pytorch.sh [all|infer|search]
#
#   infer   images/s of `meddr specialist bench` (--device cpu, and --device gpu: lavapipe where there is no
#           GPU) against timm in PyTorch, for random resnet18 / densenet121 / vit_base_patch16_224
#           specialists (224x224, 2 classes) made by tests/py/timm_to_specialist.py --random.
#   search  ms/query of `meddr gsco bench-search` (brute-force cosine top-k) against scikit-learn's
#           NearestNeighbors(metric='cosine', algorithm='brute'), with the peak RSS of building our index.
#
# Knobs (environment): BENCH_ARCHS ("resnet18 densenet121 vit_base_patch16_224"), BENCH_BATCH (8),
# BENCH_ITERS (3), BENCH_QUERIES (100), BENCH_DEVICES ("cpu gpu"), BENCH_SEARCH ("10000:512 100000:512
# 10000:25088", N:D pairs), BENCH_PIP_ARGS (extra pip arguments for the one-off venv install).
# Results (every JSON, stderr and /usr/bin/time report, and report.md) go to .cache/bench-results/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

what="${1:-all}"
case "$what" in
  all|infer|search) ;;
  *) echo "usage: $0 [all|infer|search]" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206 # the knobs are space-separated lists on purpose
archs=(${BENCH_ARCHS:-resnet18 densenet121 vit_base_patch16_224})
devices=(${BENCH_DEVICES:-cpu gpu})
searches=(${BENCH_SEARCH:-10000:512 100000:512 10000:25088})
batch="${BENCH_BATCH:-8}"
iters="${BENCH_ITERS:-3}"
queries="${BENCH_QUERIES:-100}"
# Both sides get every core: meddr's CPU backend uses them all, so PyTorch and BLAS are told the same.
threads="$(nproc)"

# A venv of its own: torch is far too big for the tests' .venv. PyPI's Linux torch wheel pulls in its CUDA
# libraries (a few GB, once); it runs on the CPU all the same.
venv=.cache/bench-venv
py="$venv/bin/python"
if ! "$py" -c "import torch, timm, safetensors, sklearn, numpy, threadpoolctl" 2>/dev/null; then
  echo "bench: installing torch, timm, safetensors, scikit-learn, numpy into $venv (PyPI; a few GB, once)" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # BENCH_PIP_ARGS is a list of words on purpose
  "$venv/bin/pip" install -q --disable-pip-version-check ${BENCH_PIP_ARGS:-} \
    torch timm safetensors scikit-learn numpy
fi

# MEDDR_BIN: measure an already built binary (e.g. target/debug/meddr, whose dependencies — burn's kernels
# included — are built at opt-level 2) instead of building the release one.
if [ -n "${MEDDR_BIN:-}" ]; then
  meddr="$MEDDR_BIN"
else
  echo "bench: cargo build --release -p meddr-cli" >&2
  cargo build --release -q -p meddr-cli
  meddr=target/release/meddr
fi
# wgpu's Vulkan loader (lavapipe included) wants a runtime dir; headless shells often have none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

out=".cache/bench-results/specialist-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
failed=0

# measure NAME CMD...: runs CMD, its stdout (one JSON object) to $out/NAME.json and stderr to $out/NAME.err,
# under `/usr/bin/time -v` where it exists so that every side's peak RSS is measured the same way (from
# outside the process). A failure is reported and recorded, and the run goes on: one missing Vulkan driver
# should not throw away the other measurements. The script exits 1 at the end if anything failed.
measure() {
  local name="$1"; shift
  local timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -v -o "$out/$name.time"); fi
  echo "bench: $name: $*" >&2
  local t0=$SECONDS
  if "${timer[@]}" "$@" >"$out/$name.json" 2>"$out/$name.err"; then
    echo "bench: $name done in $((SECONDS - t0)) s" >&2
  else
    echo "bench: FAILED: $name (exit $?); last lines of $out/$name.err:" >&2
    tail -n 5 "$out/$name.err" | sed 's/^/    /' >&2
    rm -f "$out/$name.json"
    failed=1
  fi
}

if [ "$what" != search ]; then
  mkdir -p .cache/bench-specialists
  for arch in "${archs[@]}"; do
    spec=".cache/bench-specialists/$arch"
    # Made once and reused: --random is seeded, so the folder is the same every time.
    if [ ! -s "$spec/model.safetensors" ] || [ ! -s "$spec/config.json" ]; then
      echo "bench: making a random $arch specialist in $spec" >&2
      "$py" tests/py/timm_to_specialist.py --arch "$arch" --random --seed 0 --num-classes 2 \
        --img-size 224 --task multi-class -o "$spec" --force
    fi
    measure "infer-$arch-pytorch" "$py" tests/bench/specialist_pytorch.py infer --arch "$arch" \
      --specialist "$spec" --batch "$batch" --iters "$iters" --threads "$threads"
    for dev in "${devices[@]}"; do
      measure "infer-$arch-$dev" "$meddr" specialist bench --specialist "$spec" --batch "$batch" \
        --iters "$iters" --device "$dev" --json
    done
  done
fi

if [ "$what" != infer ]; then
  for nd in "${searches[@]}"; do
    n="${nd%%:*}"; d="${nd##*:}"
    for dev in "${devices[@]}"; do
      measure "search-$n-$d-$dev" "$meddr" gsco bench-search --n-ref "$n" --dim "$d" --queries "$queries" \
        --device "$dev" --json
    done
    # scikit-learn answers the same top-k as ours: take k from our JSON when it says, else GSCo's 10.
    k=10
    for dev in "${devices[@]}"; do
      if [ -s "$out/search-$n-$d-$dev.json" ]; then
        k="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("k", 10))' \
          "$out/search-$n-$d-$dev.json")"
        break
      fi
    done
    measure "search-$n-$d-sklearn" "$py" tests/bench/specialist_pytorch.py search --n-ref "$n" --dim "$d" \
      --queries "$queries" --k "$k" --threads "$threads"
  done
fi

# The tables. Plain python3: they only read the JSON files and /usr/bin/time's reports.
python3 - "$out" "$what" "${archs[*]}" "${devices[*]}" "${searches[*]}" <<'PY' | tee "$out/report.md"
import json, os, re, sys
out, what, archs, devices, searches = sys.argv[1], sys.argv[2], *[a.split() for a in sys.argv[3:]]

def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # the measurement failed (its .err says why) or printed no JSON

def time_rss(name):
    """/usr/bin/time -v's 'Maximum resident set size' in bytes, or None."""
    try:
        text = open(os.path.join(out, name + ".time")).read()
    except OSError:
        return None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return int(m.group(1)) * 1024 if m else None

def num(x, fmt="{:.2f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "failed"

def ratio(a, b):
    return f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"

def mb(b):
    return f"{b / 1e6:.0f}" if isinstance(b, (int, float)) else "-"

def get(d, key):
    return d.get(key) if isinstance(d, dict) else None

# Our JSON may name the adapter ("device"/"adapter"); the column says lavapipe unless it is something else.
adapter = None
for name in sorted(os.listdir(out)):
    if name.endswith("-gpu.json"):
        d = load(name[:-5]) or {}
        a = d.get("adapter") or d.get("device")
        if isinstance(a, str) and a not in ("gpu", "cpu"):
            adapter = a.splitlines()[0]
            break
gpu = "lavapipe" if adapter is None or "llvmpipe" in adapter.lower() else "gpu"
has = {dev: dev in devices for dev in ("cpu", "gpu")}

if what != "search":
    print("### Specialist inference (images/s, higher is better)\n")
    print(f"| arch | ours cpu img/s | ours {gpu} img/s | PyTorch img/s | ratio cpu/pytorch | ratio {gpu}/pytorch "
          "| peak RSS MB ours cpu / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    torch_info = None
    for arch in archs:
        pt = load(f"infer-{arch}-pytorch")
        cpu = get(load(f"infer-{arch}-cpu"), "images_per_s") if has["cpu"] else None
        gp = get(load(f"infer-{arch}-gpu"), "images_per_s") if has["gpu"] else None
        ref = get(pt, "images_per_s")
        torch_info = torch_info or (pt and f"PyTorch {pt['torch']}, timm {pt['timm']}, {pt['threads']} threads")
        print(f"| {arch} | {num(cpu) if has['cpu'] else '-'} | {num(gp) if has['gpu'] else '-'} | {num(ref)} "
              f"| {ratio(cpu, ref)} | {ratio(gp, ref)} "
              f"| {mb(time_rss(f'infer-{arch}-cpu'))} / {mb(time_rss(f'infer-{arch}-pytorch'))} |")
    print(f"\n{torch_info or 'PyTorch: failed'}; same batch and iterations on both sides; PyTorch runs one untimed "
          "warm-up batch first." + (f" gpu adapter: {adapter}." if adapter else ""))

if what != "infer":
    print("\n### Retrieval: brute-force cosine top-k (ms/query, lower is better)\n")
    print(f"| N refs | dim | sklearn ms/query | ours cpu ms/query | ours {gpu} ms/query | ratio sklearn/ours cpu "
          f"| ratio sklearn/ours {gpu} | ours build peak RSS MB cpu / {gpu} | peak RSS MB (time -v) ours cpu / "
          "sklearn | sklearn fit ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    sk_info = None
    for nd in searches:
        n, d = nd.split(":")
        sk = load(f"search-{n}-{d}-sklearn")
        cpu = load(f"search-{n}-{d}-cpu") if has["cpu"] else None
        gp = load(f"search-{n}-{d}-gpu") if has["gpu"] else None
        ref = get(sk, "ms_per_query")
        c, g = get(cpu, "ms_per_query"), get(gp, "ms_per_query")
        sk_info = sk_info or (sk and f"scikit-learn {sk['sklearn']}, {sk['threads']} BLAS threads, "
                                     f"{sk['queries']} queries, k = {sk['k']}")
        print(f"| {n} | {d} | {num(ref, '{:.3f}')} | {num(c, '{:.3f}') if has['cpu'] else '-'} "
              f"| {num(g, '{:.3f}') if has['gpu'] else '-'} | {ratio(ref, c)} | {ratio(ref, g)} "
              f"| {mb(get(cpu, 'build_peak_rss_bytes'))} / {mb(get(gp, 'build_peak_rss_bytes'))} "
              f"| {mb(time_rss(f'search-{n}-{d}-cpu'))} / {mb(time_rss(f'search-{n}-{d}-sklearn'))} "
              f"| {num(get(sk, 'fit_ms'), '{:.0f}')} |")
    print(f"\n{sk_info or 'scikit-learn: failed'}; query time excludes fitting/index building. "
          "Peak RSS (time -v) is the whole process, the random features included (N x dim x 4 bytes).")
PY
echo "bench: results in $out" >&2
if [ "$failed" != 0 ]; then
  echo "bench: some measurements failed (see the .err files in $out)" >&2
  exit 1
fi
