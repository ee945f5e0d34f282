#!/usr/bin/env bash
# Times our quantizer against llama.cpp's pipeline (convert_hf_to_gguf.py --outtype bf16, then llama-quantize
# Q4_K_M) on synthetic MedDr checkpoints of growing size, and prints a markdown table.
#
# Usage: quantize-vs-llamacpp.sh [VIT_LAYERS:LLM_LAYERS]...   (default: 1:3 4:12, about 4 GB and 15 GB)
#   Each size uses MedDr's full shapes (InternViT-6B + Yi-34B widths, --preset full) with fewer layers.
# Env: BENCH_DIR (scratch, default /work/bench/quantize-run), BENCH_MD (default /work/bench/quantize-bench.md),
#      LLAMACPP_DIR, LLAMACPP_VENV (see setup-llamacpp.sh, which must have run), CARGO_TARGET_DIR,
#      BENCH_THREADS (default nproc), BENCH_PRESET (default full; dev = tiny shapes, a smoke test),
#      KEEP=1 keeps the per-size files.
#
# Like for like: llama.cpp only converts a plain Llama checkpoint, so it gets the language model extracted
# byte for byte (extract_llm.py); ours reads the whole MedDr checkpoint (it needs the InternVL layout), so its
# row also carries the ViT and projector. Both GB/s columns are given: "GB/s (LM)" divides only the
# language-model bytes by the time, which understates ours (its time includes the vision tower).
# Each timed step reads its input once beforehand (cat > /dev/null), so runs are warm-cache when it fits in RAM.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
W="${BENCH_DIR:-/work/bench/quantize-run}"
MD="${BENCH_MD:-/work/bench/quantize-bench.md}"
LDIR="${LLAMACPP_DIR:-/work/bench/llama.cpp-src}"
LVENV="${LLAMACPP_VENV:-/work/bench/venv}"
TARGET="${CARGO_TARGET_DIR:-$root/target}"
THREADS="${BENCH_THREADS:-$(nproc)}"
PRESET="${BENCH_PRESET:-full}"
specs=("$@")
[ ${#specs[@]} -eq 0 ] && specs=(1:3 4:12)

log() { echo "bench: $*" >&2; }

[ -x /usr/bin/time ] || { log "installing GNU time"; apt-get install -y -qq time >/dev/null; }
for f in "$LDIR/build/bin/llama-quantize" "$LDIR/convert_hf_to_gguf.py" "$LVENV/bin/python"; do
  [ -e "$f" ] || { log "missing $f: run tests/bench/setup-llamacpp.sh first"; exit 1; }
done

log "building meddr-quantize (release) in $TARGET"
(cd "$root" && CARGO_TARGET_DIR="$TARGET" cargo build -q --release -p meddr-quantize)
OURS="$TARGET/release/meddr-quantize"
SYNTH="$TARGET/release/meddr-synth-checkpoint"

bytes_of() { find "$@" \( -name '*.safetensors' -o -name '*.gguf' \) -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
warm() { find "$@" \( -name '*.safetensors' -o -name '*.gguf' \) -exec cat {} + >/dev/null; }

# Runs a command under /usr/bin/time -v; sets T_WALL (s), T_CPU (user+sys s), T_RSS (kB).
timed() {
  local tf="$W/time.txt"
  /usr/bin/time -v -o "$tf" "$@" >"$W/last.log" 2>&1 || { tail -30 "$W/last.log"; log "failed: $*"; exit 1; }
  T_WALL="$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$tf")"
  T_CPU="$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$tf")"
  T_RSS="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")"
}

rows=()
row() { # size tool seconds cpu in_bytes lm_bytes rss_kb out_bytes load
  rows+=("$(awk -v sz="$1" -v tool="$2" -v s="$3" -v c="$4" -v ib="$5" -v lb="$6" -v r="$7" -v ob="$8" -v ld="$9" \
    'BEGIN {printf "| %s | %s | %.1f | %.1f | %.2f | %.3f | %.3f | %.2f | %.2f | %s |", sz, tool, s, c, ib/1e9, ib/1e9/s, lb/1e9/s, r/1048576, ob/1e9, ld}')")
}
load() { cut -d' ' -f1 /proc/loadavg; }

mkdir -p "$W"
summary=()
for spec in "${specs[@]}"; do
  v="${spec%%:*}"; l="${spec##*:}"
  [[ "$v" =~ ^[0-9]+$ && "$l" =~ ^[0-9]+$ && "$v" -ge 1 && "$l" -ge 1 ]] || { log "bad size '$spec': want V:L"; exit 2; }
  # A checkpoint left by an earlier KEEP=1 run is reused (the writer renames it into place only when complete).
  d="$W/$PRESET-v$v-l$l"; mkdir -p "$d"; rm -rf "$d/lm" "$d"/*.gguf
  need=$(( (v * 246 + 286 + l * 1116) * 3 + 2000 ))  # MB: checkpoint, LM copy, bf16 GGUF, outputs (rough)
  avail=$(df -Pm "$W" | awk 'NR==2 {print $4}')
  [ "$avail" -gt "$need" ] || { log "need ~${need} MB free in $W, have ${avail} MB"; exit 1; }

  if [ ! -f "$d/ckpt/config.json" ]; then
    log "[$spec] writing synthetic checkpoint"
    "$SYNTH" -o "$d/ckpt" --preset "$PRESET" --vit-layers "$v" --llm-layers "$l" --lora-rank 0 >/dev/null 2>&1
  fi
  log "[$spec] extracting the language model"
  python3 "$here/extract_llm.py" "$d/ckpt" "$d/lm" 2>/dev/null
  in_all=$(bytes_of "$d/ckpt"); in_lm=$(bytes_of "$d/lm")
  size="$(awk -v b="$in_all" 'BEGIN {printf "%.1f GB", b/1e9}') (V$v L$l)"

  log "[$spec] ours: meddr-quantize q4_k_m on the whole checkpoint"
  warm "$d/ckpt"; ld=$(load)
  timed "$OURS" "$d/ckpt" -o "$d/ours.gguf" --type q4_k_m --threads "$THREADS" --force --quiet
  ours_s=$T_WALL
  row "$size" "ours (whole MedDr ckpt)" "$T_WALL" "$T_CPU" "$in_all" "$in_lm" "$T_RSS" "$(bytes_of "$d/ours.gguf")" "$ld"
  rm -f "$d/ours.gguf"

  log "[$spec] llama.cpp: convert_hf_to_gguf.py --outtype bf16 on the language model"
  warm "$d/lm"; "$LVENV/bin/python" -c "import torch, transformers, gguf" # libraries into the page cache too
  ld=$(load)
  timed "$LVENV/bin/python" "$LDIR/convert_hf_to_gguf.py" "$d/lm" --outtype bf16 --outfile "$d/lm-bf16.gguf"
  c_s=$T_WALL c_cpu=$T_CPU c_rss=$T_RSS
  row "$size" "llama.cpp convert (bf16)" "$T_WALL" "$T_CPU" "$in_lm" "$in_lm" "$T_RSS" "$(bytes_of "$d/lm-bf16.gguf")" "$ld"
  rm -rf "$d/lm"

  log "[$spec] llama.cpp: llama-quantize Q4_K_M $THREADS"
  warm "$d/lm-bf16.gguf"; ld=$(load)
  timed "$LDIR/build/bin/llama-quantize" "$d/lm-bf16.gguf" "$d/lm-q4_k_m.gguf" Q4_K_M "$THREADS"
  q_s=$T_WALL
  row "$size" "llama.cpp llama-quantize" "$T_WALL" "$T_CPU" "$in_lm" "$in_lm" "$T_RSS" "$(bytes_of "$d/lm-q4_k_m.gguf")" "$ld"
  tot=$(awk -v a="$c_s" -v b="$q_s" 'BEGIN {print a+b}')
  totc=$(awk -v a="$c_cpu" -v b="$T_CPU" 'BEGIN {print a+b}')
  rss=$(( c_rss > T_RSS ? c_rss : T_RSS ))
  row "$size" "**llama.cpp total**" "$tot" "$totc" "$in_lm" "$in_lm" "$rss" "$(bytes_of "$d/lm-q4_k_m.gguf")" "-"
  summary+=("$(awk -v sz="$size" -v o="$ours_s" -v t="$tot" -v ia="$in_all" -v il="$in_lm" 'BEGIN {
    printf "- %s: ours %.1f s for %.2f GB (%.3f GB/s), llama.cpp %.1f s for %.2f GB (%.3f GB/s); input GB/s ours/llama.cpp = %.2fx, wall-time ratio llama.cpp/ours = %.2fx", sz, o, ia/1e9, ia/1e9/o, t, il/1e9, il/1e9/t, (ia/o)/(il/t), t/o}')")
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
done

{
  echo "## Quantizer benchmark: meddr-quantize vs llama.cpp (Q4_K_M)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, threads $THREADS, $(awk '/MemTotal/ {printf "%.0f GB RAM", $2/1048576}' /proc/meminfo); inputs pre-read (warm cache when they fit)."
  echo
  echo "| size | tool | wall s | CPU s | input GB | GB/s (input) | GB/s (LM) | peak RSS GiB | output GB | load 1m |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  printf '%s\n' "${summary[@]}"
} | tee "$MD"
