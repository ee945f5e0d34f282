#!/usr/bin/env bash
# Browser vs native decode speed on the same device (issue 12.1): Chromium's SwiftShader, which headless
# Chromium's WebGPU uses and which the native side loads as its Vulkan ICD. Both sides are release builds
# and run the same `Session` code (web/src/session.rs): the browser through the @meddr/edge package in one
# page (tests/bench/browser_vs_native.mjs), natively through web/examples/native_generate.rs. For each model
# type: one warm-up generation, then RUNS measured ones of TOKENS greedy tokens (EOS ignored) on the dev
# fixture's image question; the medians, their ratio, and per decoded token where the time went (recording
# and submitting steps, awaiting tokens, the host's share). Each measured run also encodes the image and
# prefills its whole prompt afresh on both sides (issue 12.4: the browser page starts the conversation over
# before each run instead of reusing the cached prompt), so the table has prefill tok/s after warm-up too.
# The machine's load (uptime) is recorded with the results: a build sharing the cores slows native more.
#
#   tests/bench/browser-vs-native.sh [--runs 5] [--tokens 128] [--types "f32 q4_k_m"] [--no-build]
#                                    [--dist DIR --native BIN --label NAME]   # another build (an A/B)
#
# Output: a Markdown table on stdout and tests/bench/results/browser-vs-native-<date>.{md,json}.
# Needs what web/e2e-test.sh installs (Debian chromium, the wasm toolchain, web/node_modules).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs=5; tokens=128; types="f32 q4_k_m"; build=1; dist=""; native=""; label=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --dist) dist="$(realpath "$2")"; build=0; shift 2 ;;
    --native) native="$(realpath "$2")"; build=0; shift 2 ;;
    --label) label="-$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "browser-vs-native.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ && "$tokens" =~ ^[1-9][0-9]*$ ]] || { echo "browser-vs-native.sh: --runs and --tokens must be positive integers" >&2; exit 2; }
shared="${MEDDR_SHARED:-$root/../shared}"
fix="$shared/fixtures"
[ -d "$fix" ] || { echo "browser-vs-native.sh: no fixtures at $fix (set MEDDR_SHARED)" >&2; exit 1; }
sws=/usr/lib/chromium/vk_swiftshader_icd.json
[ -f "$sws" ] || { echo "browser-vs-native.sh: $sws is missing: apt-get install chromium (web/e2e-test.sh does)" >&2; exit 1; }
cd "$root"
# Headless machines: libwayland (probed by the Vulkan loader) complains on stderr without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
if [ "$build" = 1 ]; then
  echo "building web/dist (release wasm) and the release native twin" >&2
  web/build.sh
  # Two invocations: `--example` would narrow a joint one to examples, leaving meddr-quantize's binary unbuilt.
  cargo build -q --release --locked -p meddr-web --example native_generate
  cargo build -q --release --locked -p meddr-quantize
fi
rel="${CARGO_TARGET_DIR:-$root/target}/release"
dist="${dist:-$root/web/dist}"
native="${native:-$rel/examples/native_generate}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
read -r image question < <(python3 - "$fix/expected/dev/expected.json" <<'PY'
import json, sys
s = next(x for x in json.load(open(sys.argv[1]))["samples"] if x["id"] == "img_test2_report")
print(s["image"], s["question"])
PY
)
image="$fix/images/$image"
for t in $types; do
  "$rel/meddr-quantize" "$fix/checkpoints/dev" -o "$work/dev-$t.gguf" --type "$t" --force -q
  echo "$t: native, $runs runs + 1 warm-up" >&2
  VK_ICD_FILENAMES="$sws" "$native" --model "$work/dev-$t.gguf" --image "$image" \
    --question "$question" --max-new-tokens "$tokens" --ignore-eos --runs "$((runs + 1))" > "$work/native-$t.json"
  echo "$t: browser, $runs runs + 1 warm-up" >&2
  node tests/bench/browser_vs_native.mjs --dist "$dist" --model "$work/dev-$t.gguf" --image "$image" \
    --question "$question" --max-new-tokens "$tokens" --runs "$runs" > "$work/browser-$t.json"
done
mkdir -p tests/bench/results
stamp="$(date -u +%Y-%m-%d-%H%M)"
load="$(uptime | sed 's/.*load average: //')"
python3 - "$work" "$types" "$tokens" "tests/bench/results/browser-vs-native-$stamp$label" "$load" <<'PY'
import json, statistics, sys
work, types, tokens, out, load = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows, data = [], {}
def per_token(stats, key):
    return stats[key] / max(stats["newTokens"] - 1, 1)
for t in types:
    nat = json.load(open(f"{work}/native-{t}.json"))
    bro = json.load(open(f"{work}/browser-{t}.json"))
    n_runs = [s for s in nat["runs"][1:]]
    b_runs = [r["stats"] for r in bro["runs"] if not r["warmUp"]]
    same = nat["tokens"] == bro["runs"][-1]["tokens"]
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    medpt = lambda runs, k: statistics.median(per_token(r, k) for r in runs)
    n_tps, b_tps = med(n_runs, "decodeTokensPerSec"), med(b_runs, "decodeTokensPerSec")
    # Prefill after warm-up: every measured run prefills its whole prompt (nothing reused) on both sides.
    fresh = all(r["reusedTokens"] == 0 for r in n_runs + b_runs)
    prefill_tps = lambda r: (r["promptTokens"] - r["reusedTokens"]) / (r["prefillMs"] / 1e3)
    n_pre = statistics.median(prefill_tps(r) for r in n_runs)
    b_pre = statistics.median(prefill_tps(r) for r in b_runs)
    row = {
        "type": t, "tokens": tokens, "runs": len(b_runs), "same_tokens": same,
        "native_tok_s": n_tps, "browser_tok_s": b_tps, "ratio": b_tps / n_tps,
        "native_runs_tok_s": [r["decodeTokensPerSec"] for r in n_runs],
        "browser_runs_tok_s": [r["decodeTokensPerSec"] for r in b_runs],
        "prompt_tokens": n_runs[0]["promptTokens"], "prefill_fresh": fresh,
        "native_prefill_tok_s": n_pre, "browser_prefill_tok_s": b_pre, "prefill_ratio": b_pre / n_pre,
        "native_runs_prefill_tok_s": [prefill_tps(r) for r in n_runs],
        "browser_runs_prefill_tok_s": [prefill_tps(r) for r in b_runs],
        "native_image_ms": med(n_runs, "imageMs"), "browser_image_ms": med(b_runs, "imageMs"),
        "load_average": load,
    }
    for side, runs in (("native", n_runs), ("browser", b_runs)):
        for k in ("decodeRecordMs", "decodeWaitMs", "decodeHostMs"):
            row[f"{side}_{k}_per_token"] = medpt(runs, k)
        row[f"{side}_decode_ms_per_token"] = medpt(runs, "decodeMs")
    rows.append(row)
    data[t] = {"native": nat, "browser": bro}
md = ["| model | decode tok/s browser | native | ratio | ms/token browser (record / wait / host) | ms/token native (record / wait / host) | prefill tok/s browser | native | ratio | image ms browser / native | same tokens |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    f = lambda side: " / ".join(f"{r[f'{side}_{k}_per_token']:.2f}" for k in ("decodeRecordMs", "decodeWaitMs", "decodeHostMs"))
    md.append(f"| dev {r['type']} | {r['browser_tok_s']:.1f} | {r['native_tok_s']:.1f} | **{r['ratio']:.2f}** | "
              f"{r['browser_decode_ms_per_token']:.2f} ({f('browser')}) | {r['native_decode_ms_per_token']:.2f} ({f('native')}) | "
              f"{r['browser_prefill_tok_s']:.1f} | {r['native_prefill_tok_s']:.1f} | **{r['prefill_ratio']:.2f}** | "
              f"{r['browser_image_ms']:.0f} / {r['native_image_ms']:.0f} | {r['same_tokens']} |")
md.append("")
md.append(f"medians of {rows[0]['runs']} runs of {tokens} tokens after one warm-up; each run prefills its whole "
          f"{rows[0]['prompt_tokens']}-token prompt (nothing reused: {all(r['prefill_fresh'] for r in rows)}); "
          f"load average (1, 5, 15 min) at the end: {load}")
md.append("")
md.append("runs: " + "; ".join(
    f"{r['type']} decode tok/s browser {['%.1f' % x for x in r['browser_runs_tok_s']]} native {['%.1f' % x for x in r['native_runs_tok_s']]}, "
    f"prefill tok/s browser {['%.1f' % x for x in r['browser_runs_prefill_tok_s']]} native {['%.1f' % x for x in r['native_runs_prefill_tok_s']]}"
    for r in rows))
text = "\n".join(md)
print(text)
open(out + ".md", "w").write(text + "\n")
json.dump({"rows": rows, "raw": data}, open(out + ".json", "w"), indent=1)
if not all(r["same_tokens"] for r in rows):
    sys.exit("browser and native tokens differ")
if not all(r["prefill_fresh"] for r in rows):
    sys.exit("a measured run reused cached prompt positions: its prefill figure is not a full prefill")
PY
