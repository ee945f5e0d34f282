#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted bytes with libFuzzer, on the stable toolchain.
#
#   tests/fuzz/run.sh                         # every target for 60 s (the CI smoke run)
#   tests/fuzz/run.sh --seconds 600 jpeg gguf # chosen targets, longer
#   tests/fuzz/run.sh --runs 10000000         # each target until 10 million executions (README figures)
#   tests/fuzz/run.sh --jobs 2                # targets two at a time (each still gets its full time)
#
# Instrumentation: SanitizerCoverage through stable `-C` flags (`-Cpasses=sancov-module` and its LLVM options,
# what cargo-fuzz passes), libFuzzer itself from the libfuzzer-sys crate; no nightly, no cargo-fuzz needed.
# Debug assertions and overflow checks are on, panics abort, so any panic, overflow or out-of-bounds index
# is a crash; -rss_limit_mb=2048 makes an uncapped allocation one too, -timeout=10 a hang.
# Inputs: the committed seeds in corpus/<target> (tests/fuzz/make_seeds.py) and every past crash in
# regressions/<target> (each replayed first: they must pass); the grown corpus goes to work/<target>/corpus.
# Output: one line per target, and work/summary.json {target: {execs, cov, ft, corpus, crashes, seconds}}.
# Exit status: 0 when no target crashed.
set -euo pipefail
FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL=(gguf safetensors jpeg image dicom tokenizer_json sentencepiece)
seconds=60; runs=""; jobs=1; targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "run.sh: unknown target $t (targets: ${ALL[*]})" >&2; exit 2; }
done
command -v c++ >/dev/null || { echo "run.sh: a C++ compiler is needed to build libFuzzer (apt install g++)" >&2; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${MEDDR_FUZZ_TARGET_DIR:-$FUZZ/target}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
tb=$SECONDS
echo "fuzz: building ${#targets[@]} targets with coverage instrumentation"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (they would not link without libFuzzer).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
cargo build -q --release --target "$HOST" --manifest-path "$FUZZ/Cargo.toml" $(printf -- '--bin %s ' "${targets[@]}")
echo "fuzz: built in $((SECONDS - tb)) s"
BIN="$CARGO_TARGET_DIR/$HOST/release"

run_one() {
  local t="$1" w="$FUZZ/work/$1"
  mkdir -p "$w/corpus" "$w/artifacts"
  rm -f "$w/artifacts"/*
  local common=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "-artifact_prefix=$w/artifacts/")
  if [ -d "$FUZZ/regressions/$t" ] && [ -n "$(ls -A "$FUZZ/regressions/$t")" ]; then
    if ! "$BIN/$t" "${common[@]}" "$FUZZ/regressions/$t"/* > "$w/regressions.log" 2>&1; then
      echo "$t: a regression input fails again (see $w/regressions.log)"; return 1
    fi
  fi
  local limit=(-max_total_time="$seconds")
  [ -n "$runs" ] && limit=(-runs="$runs")
  local t0=$SECONDS rc=0
  "$BIN/$t" "${common[@]}" "${limit[@]}" "$w/corpus" "$FUZZ/corpus/$t" > "$w/fuzz.log" 2>&1 || rc=$?
  local secs=$((SECONDS - t0))
  local execs cov ft corpus crashes
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/fuzz.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$w/fuzz.log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$w/fuzz.log" | tail -1 | cut -d' ' -f2)
  corpus=$(ls "$w/corpus" | wc -l)
  crashes=$(ls "$w/artifacts" | wc -l)
  printf '{"execs": %s, "cov": %s, "ft": %s, "corpus": %s, "crashes": %s, "seconds": %s, "exit": %s}\n' \
    "${execs:-0}" "${cov:-0}" "${ft:-0}" "$corpus" "$crashes" "$secs" "$rc" > "$w/result.json"
  printf '%-15s %12s execs  cov %6s  ft %7s  corpus %5s  crashes %s  (%s s)\n' \
    "$t" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$corpus" "$crashes" "$secs"
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    echo "$t: libFuzzer exit $rc; crash inputs in $w/artifacts; the log's end:"; tail -30 "$w/fuzz.log"
    return 1
  fi
}

fail=0
pids=(); names=()
for t in "${targets[@]}"; do
  run_one "$t" & pids+=($!); names+=("$t")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || fail=1
    pids=("${pids[@]:1}"); names=("${names[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
python3 - "$FUZZ/work" "${targets[@]}" <<'PY'
import json, os, sys
w, ts = sys.argv[1], sys.argv[2:]
out = {t: json.load(open(os.path.join(w, t, "result.json"))) for t in ts if os.path.exists(os.path.join(w, t, "result.json"))}
json.dump(out, open(os.path.join(w, "summary.json"), "w"), indent=1)
PY
[ "$fail" = 0 ] && echo "fuzz: no crashes" || echo "fuzz: CRASHES or failures above"
exit "$fail"
