#!/usr/bin/env bash
# The GPU benchmark a machine with a real GPU runs in one go (issue 12.2): a synthetic MedDr at full width (all
# 45 InternViT-6B layers, 8 of Yi-34B's 60 layers, a 64000-row vocabulary, Q4_K_M) → ViT ms per image, prefill
# tok/s at 512, decode tok/s, weight bytes per token, effective GB/s and its fraction of the device's measured
# streaming-read bandwidth (and of the datasheet peak when given); the same language model in llama.cpp's
# Vulkan backend (llama-bench) when its binaries are at hand; and, first, the engine's kernel and end-to-end
# tests on this GPU when their binaries are given (every kernel against the CPU reference, the dev model
# against upstream PyTorch's numbers).
#
# Usage: tests/bench/gpu.sh [options]
#   --bin DIR        meddr, meddr-quantize, meddr-synth-checkpoint (default: cargo build --release here)
#   --tests DIR      engine test binaries to run first (from tests/bench/gpu-pack.sh); needs --fixtures
#   --fixtures DIR   the folder holding fixtures/ (MEDDR_SHARED for the tests)
#   --llama DIR      llama.cpp's build/bin (llama-bench and its libraries) for the peer row
#   --gguf-py DIR    accepted and ignored (was needed before the quantizer wrote llama.cpp's two-file layout)
#   --out DIR        results (default: ./gpu-bench-out)
#   --work DIR       scratch for the checkpoint and GGUFs (default: a temp dir; ~32 GB at full size)
#   --vit-layers N --llm-layers N --vocab N --type T   model shape (default 45, 8, 64000, q4_k_m)
#   --preset P       full (MedDr's widths, default) or dev (the fixture's tiny widths: a smoke test on CPU drivers)
#   --prompt N --decode N                               prefill and decode tokens (default 512, 256)
#   --peak-gb-s X    the device's datasheet bandwidth (e.g. 4800 for an H200)
#   --budget S       stop starting new steps after S seconds (default 420: the whole run stays under 8 minutes)
#   --profile        time every kernel on the GPU (meddr bench --profile) in the main run
#   --matvec-shapes "2x32 2x32s 4x32s 8x32s2 8x32s4"   also time decode (text only) with each decode matvec
#                    work split (ROWSxLANES; a trailing s = subgroup reduction, the default where the GPU has
#                    subgroups; sN = N rows per subgroup at once, x read once for them; default: the workgroup
#                    kernel against the subgroup ones; "" skips)
#   --skip STEPS     comma list of steps to leave out: tests, llama, f32
# Output (8 files at most): summary.md, bench.json, bench-f32.json, llama-bench.json, shapes.jsonl, tests.txt,
# machine.txt, log.txt (with `meddr info` of the model).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BIN="" TESTS="" FIXTURES="" LLAMA="" GGUFPY="" OUTD="$PWD/gpu-bench-out" WORK=""
PRESET=full VIT=45 LLM=8 VOCAB=64000 TYPE=q4_k_m PROMPT=512 DECODE=256 PEAK="" BUDGET=420 PROFILE=() SHAPES="2x32 2x32s 4x32s 8x32s2 8x32s4" SKIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --tests) TESTS="$2"; shift 2 ;;
    --fixtures) FIXTURES="$2"; shift 2 ;;
    --llama) LLAMA="$2"; shift 2 ;;
    --gguf-py) GGUFPY="$2"; shift 2 ;;
    --out) OUTD="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --vit-layers) VIT="$2"; shift 2 ;;
    --llm-layers) LLM="$2"; shift 2 ;;
    --vocab) VOCAB="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --prompt) PROMPT="$2"; shift 2 ;;
    --decode) DECODE="$2"; shift 2 ;;
    --peak-gb-s) PEAK="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --profile) PROFILE=(--profile); shift ;;
    --matvec-shapes) SHAPES="$2"; shift 2 ;;
    --skip) SKIP=",$2,"; shift 2 ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$VIT" "$LLM" "$VOCAB" "$PROMPT" "$DECODE" "$BUDGET"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || { echo "gpu.sh: '$n' is not a positive whole number" >&2; exit 2; }
done

mkdir -p "$OUTD"
LOG="$OUTD/log.txt"; : >"$LOG"
START=$(date +%s)
log() { echo "[gpu.sh $(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# Runs a step under a time limit (its own and the run's budget), output into the log.
step() {
  local name="$1" limit="$2"; shift 2
  local l; l=$(left)
  if [ "$l" -lt 20 ]; then log "SKIP $name: the budget is spent"; return 99; fi
  [ "$limit" -gt "$l" ] && limit=$l
  log "START $name (limit ${limit}s)"
  local t0; t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  log "END $name rc=$rc in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b-a}')s"
  return $rc
}

if [ -z "$WORK" ]; then WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK"
if [ -z "$BIN" ]; then
  log "building meddr, meddr-quantize and meddr-synth-checkpoint (release)"
  (cd "$root" && cargo build -q --release -p meddr-cli -p meddr-quantize) || exit 1
  BIN="${CARGO_TARGET_DIR:-$root/target}/release"
fi
for b in meddr meddr-quantize meddr-synth-checkpoint; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.mem --format=csv,noheader
  command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverInfo|apiVersion" | head -6
} >"$OUTD/machine.txt" 2>&1
cat "$OUTD/machine.txt" >>"$LOG"

# 1. Correctness on this GPU before any speed figure.
if [ -n "$TESTS" ] && [[ "$SKIP" != *,tests,* ]]; then
  [ -n "$FIXTURES" ] || { log "--tests needs --fixtures"; exit 2; }
  : >"$OUTD/tests.txt"
  for t in "$TESTS"/*; do
    [ -x "$t" ] || continue
    n="$(basename "$t")"
    # The SmolLM2 comparison needs the 90 MB .cache file, which does not travel to a lent machine.
    step "test $n" 120 env MEDDR_SHARED="$FIXTURES" "$t" --skip smollm2 --test-threads 4
    echo "$n rc=$?" >>"$OUTD/tests.txt"
  done
  grep -E "^test result|FAILED|panicked" "$LOG" >>"$OUTD/tests.txt"
fi

# 2. The model: a synthetic checkpoint in upstream's layout, through our quantizer.
M="$WORK/meddr-v$VIT-l$LLM.$TYPE.gguf"
step "synthetic checkpoint (ViT $VIT, LLM $LLM, vocab $VOCAB)" 150 \
  "$BIN/meddr-synth-checkpoint" -o "$WORK/ckpt" --preset "$PRESET" --vit-layers "$VIT" --llm-layers "$LLM" \
  --vocab "$VOCAB" --lora-rank 0 --force || { log "no checkpoint"; exit 1; }
step "quantize $TYPE" 200 "$BIN/meddr-quantize" "$WORK/ckpt" -o "$M" --type "$TYPE" --force --quiet ||
  { log "quantize failed"; exit 1; }
rm -rf "$WORK/ckpt"
"$BIN/meddr" info "$M" >>"$LOG" 2>&1  # in the log: a lent machine returns at most 8 files

# 3. Ours.
# Runs "$@" with its stdout into file $1, kept only when the command succeeds (no half-written JSON).
to_file() { local out="$1"; shift; if "$@" >"$out.tmp"; then mv "$out.tmp" "$out"; else rm -f "$out.tmp"; return 1; fi; }
export -f to_file
peak=(); [ -n "$PEAK" ] && peak=(--peak-gb-s "$PEAK")
step "meddr bench" 150 bash -c 'to_file "$@"' _ "$OUTD/bench.json" \
  "$BIN/meddr" bench -m "$M" --prompt-tokens "$PROMPT" --decode-tokens "$DECODE" "${peak[@]}" "${PROFILE[@]}" --json
[ -f "$OUTD/bench.json" ] && cat "$OUTD/bench.json" >>"$LOG"

# 3b. Decode matvec work splits (text only, one line each in shapes.jsonl).
for shape in $SHAPES; do
  step "meddr bench --matvec-shape $shape" 60 bash -c 'to_file "$@"' _ "$WORK/shape.json" \
    "$BIN/meddr" bench -m "$M" --text-only --prompt-tokens 64 --decode-tokens "$(( DECODE < 128 ? DECODE : 128 ))" --read-bandwidth-mib 0 \
    --matvec-shape "$shape" --json && { tr -d '\n' <"$WORK/shape.json"; echo; } >>"$OUTD/shapes.jsonl"
done

# 4. The peer: llama.cpp's Vulkan backend on the same language model (our quantizer writes llama.cpp's
#    layout: the language model in $M, the vision tower in its .mmproj.gguf, which llama-bench ignores).
if [ -n "$LLAMA" ] && [[ "$SKIP" != *,llama,* ]]; then
  T="$M"
  step "llama-bench Vulkan" 150 env LD_LIBRARY_PATH="$LLAMA:${LD_LIBRARY_PATH:-}" bash -c 'to_file "$@"' _ \
      "$OUTD/llama-bench.json" "$LLAMA/llama-bench" -m "$T" -p "$PROMPT" -n "$(( DECODE < 128 ? DECODE : 128 ))" \
      -ngl 99 -r 3 -o json
  [ -f "$OUTD/llama-bench.json" ] && cat "$OUTD/llama-bench.json" >>"$LOG"
fi

# 5. The f32 path on the same model (what WebGPU without shader-f16 runs), if time is left.
[[ "$SKIP" == *,f32,* ]] ||
  step "meddr bench --force-f32" 120 bash -c 'to_file "$@"' _ "$OUTD/bench-f32.json" \
  "$BIN/meddr" bench -m "$M" --prompt-tokens "$PROMPT" --decode-tokens "$DECODE" --force-f32 --json

python3 "$here/gpu_summary.py" "$OUTD" >"$OUTD/summary.md" 2>>"$LOG" || log "summary failed"
cat "$OUTD/summary.md" >&2
log "done in $(( $(date +%s) - START )) s"
