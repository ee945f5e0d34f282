#!/usr/bin/env bash
# Benchmark (not a test): peak memory of `meddr gsco index` as the reference set grows. Index building streams
# (images read from the .npz in batches, features written as they come), so the peak must not grow with N.
#
#   tests/bench/index-memory.sh [N ...]        (default: 1000 10000 100000)
#
# Specialist: a random timm resnet18 (tests/py/timm_to_specialist.py --random) with a small input (INPUT_PX, config
# edited), so that 10^5 images take minutes on a CPU rather than hours; everything that scales with N (the .npz
# stream, the labels, the index writer) is the same as for a 224-px specialist. Data: a MedMNIST-format .npz of N
# random images of min(28, INPUT_PX) px (np.savez_compressed). Unpooled features (512 values per image here).
# Needs /usr/bin/time and the bench venv (made by tests/bench/specialist-vs-pytorch.sh, or here).
# MEDDR_BIN: use an already built binary instead of building the release one. INPUT_PX (32): the network's input
# side (ResNet-18 takes any side >= 16; smaller is faster and changes nothing that scales with N).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 100000)
[ -x /usr/bin/time ] || { echo "index-memory: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
venv=.cache/bench-venv
py="$venv/bin/python"
if ! "$py" -c "import torch, timm, safetensors, numpy" 2>/dev/null; then
  echo "index-memory: installing torch, timm, safetensors, numpy into $venv (PyPI; a few GB, once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch timm safetensors numpy
fi
if [ -n "${MEDDR_BIN:-}" ]; then meddr="$MEDDR_BIN"; else cargo build --release -q -p meddr-cli; meddr=target/release/meddr; fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
out=".cache/bench-results/index-memory-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
px="${INPUT_PX:-32}"
side=$(( px < 28 ? px : 28 ))   # the images' side (MedMNIST's smallest is 28), at most the input's
spec=.cache/bench-specialists/resnet18_${px}px
if [ ! -f "$spec/config.json" ]; then
  "$py" tests/py/timm_to_specialist.py --arch resnet18 --random --seed 0 --num-classes 2 --labels normal,tumor \
    --img-size "$side" -o "$spec" --force >&2
  "$py" - "$spec/config.json" "$px" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["pretrained_cfg"]["input_size"] = [3, int(sys.argv[2]), int(sys.argv[2])]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
fi
echo "| images | index MB | wall s | images/s | peak RSS MB (/usr/bin/time -v) |" > "$out/report.md"
echo "| ---: | ---: | ---: | ---: | ---: |" >> "$out/report.md"
for n in "${sizes[@]}"; do
  npz="$out/train-$n.npz"
  "$py" - "$npz" "$n" "$side" <<'PY'
import sys, numpy as np
n, s = int(sys.argv[2]), int(sys.argv[3]); rng = np.random.default_rng(0)
np.savez_compressed(sys.argv[1], train_images=rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
                    train_labels=rng.integers(0, 2, (n, 1), dtype=np.uint8))
PY
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$out/index-$n.time" "$meddr" gsco index --specialist "$spec" --medmnist "$npz" --split train \
    -o "$out/index-$n.gscoidx" --device cpu --force --json > "$out/index-$n.json"
  t1=$(date +%s.%N)
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out/index-$n.time")
  python3 - "$n" "$t0" "$t1" "$rss" "$(stat -c %s "$out/index-$n.gscoidx")" >> "$out/report.md" <<'PY'
import sys
n, t0, t1, rss, size = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"| {n} | {size/1e6:.0f} | {t1-t0:.1f} | {n/(t1-t0):.0f} | {rss/1024:.0f} |")
PY
  rm -f "$npz" "$out/index-$n.gscoidx"
done
cat "$out/report.md"
