#!/usr/bin/env bash
# Past 4 GB in a tab (issue 12.5): a multi-GB full-width synthetic MedDr loaded in headless Chromium on
# SwiftShader from local files, answering an image question with the same tokens as native.
# Writes a random-weight checkpoint at MedDr's full widths (`meddr-synth-checkpoint --preset 40b`: InternViT-6B
# and Yi-34B widths, Yi's 64,000-row vocabulary) with few layers, quantizes it (the language model and its
# .mmproj.gguf, llama.cpp's two-file layout), deletes the checkpoint, then runs one greedy image question
# (EOS ignored) natively (web/examples/native_generate.rs, the same `Session` code, on Chromium's SwiftShader
# ICD) and in the browser (tests/bench/browser_vs_native.mjs --local-files: the @meddr/edge package's
# `load({ file, mmproj })` on Files set on an <input type="file">, so nothing is copied into the origin's
# storage or into wasm memory), checks the token ids are identical, and reports file sizes, load times, the
# wasm heap, GPU bytes, the Chromium processes' and the native process's peak memory, ViT / prefill /
# decode times, time to first token and the tokens. Too slow for CI (minutes per side at 6 GB on 2 cores).
#
#   tests/bench/browser-large.sh [--vit-layers 1] [--llm-layers 8] [--type q8_0] [--tokens 8] [--min-gib 5]
#                                [--scratch DIR] [--keep] [--model X.gguf] [--no-build]
#                                [--bin DIR] [--native BIN] [--dist DIR] [--image FILE --question TEXT]
#                                [--timeout SECONDS] [--label NAME] [--native-json F] [--browser-json F]
#
#   --vit-layers/--llm-layers/--type  the synthetic model (default: 1 ViT + 8 Yi-34B layers at q8_0: a 5.6 GiB
#                                pair; each LLM layer adds ~0.59 GB at q8_0 and ~290 prompt tokens' compute)
#   --min-gib N                  refuse to report when the pair is smaller than N GiB (default 5; 0: any size)
#   --scratch DIR                where the checkpoint (~2x the GGUF, deleted once quantized) and the GGUFs go
#                                (default: a new directory under ${TMPDIR:-/tmp}); needs ~3x the GGUF free
#   --keep                       keep the GGUFs (printed at the end); --model X.gguf reuses such a pair
#   --no-build                   use the release binaries and web/dist as they are (else: web/build.sh and
#                                cargo build --release); --bin DIR holds meddr-synth-checkpoint, meddr-quantize
#                                and native_generate (a snapshot), --native BIN and --dist DIR name them singly
#   --image/--question           default: the dev fixture's short image question (img_synth_rgba_short)
#   --timeout S                  the browser side's limit (default 14400: the 6 GB default takes over an hour)
#   --native-json/--browser-json F  take that side's output from an earlier run of this script's command for
#                                it (printed before it runs; a side takes tens of minutes at 6 GB on 2 cores)
#                                instead of running it again, e.g. to finish a run that was cut short
#
# Output: a Markdown table on stdout and tests/bench/results/browser-large-<date>[-label].{md,json}.
# Needs what web/e2e-test.sh installs (Debian chromium, the wasm toolchain, web/node_modules).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
die() { echo "browser-large.sh: $*" >&2; exit 1; }
vit=1; llm=8; type=q8_0; tokens=8; min_gib=5; scratch=""; keep=0; model=""; build=1
bin=""; native=""; dist=""; image=""; question=""; timeout=14400; label=""; native_json=""; browser_json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --vit-layers) vit="$2"; shift 2 ;;
    --llm-layers) llm="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --min-gib) min_gib="$2"; shift 2 ;;
    --scratch) scratch="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --model) model="$(realpath "$2")"; shift 2 ;;
    --no-build) build=0; shift ;;
    --bin) bin="$(realpath "$2")"; build=0; shift 2 ;;
    --native) native="$(realpath "$2")"; build=0; shift 2 ;;
    --dist) dist="$(realpath "$2")"; build=0; shift 2 ;;
    --image) image="$(realpath "$2")"; shift 2 ;;
    --question) question="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --label) label="-$2"; shift 2 ;;
    --native-json) native_json="$(realpath "$2")"; shift 2 ;;
    --browser-json) browser_json="$(realpath "$2")"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "browser-large.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$vit" "$llm" "$tokens" "$timeout"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "browser-large.sh: layer counts, --tokens and --timeout must be positive integers" >&2; exit 2; }
done
[[ "$min_gib" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "browser-large.sh: --min-gib must be a number" >&2; exit 2; }
case "$type" in q4_k_m|q4_k_s|q4_0|q8_0|f16|f32) ;; *) echo "browser-large.sh: --type must be one of q4_k_m q4_k_s q4_0 q8_0 f16 f32" >&2; exit 2 ;; esac
shared="${MEDDR_SHARED:-$root/../shared}"
fix="$shared/fixtures"
sws=/usr/lib/chromium/vk_swiftshader_icd.json
[ -f "$sws" ] || die "$sws is missing: apt-get install chromium (web/e2e-test.sh does)"
if [ -z "$image" ]; then
  [ -d "$fix" ] || die "no fixtures at $fix (set MEDDR_SHARED, or pass --image and --question)"
  read -r name q < <(python3 - "$fix/expected/dev/expected.json" <<'PY'
import json, sys
s = next(x for x in json.load(open(sys.argv[1]))["samples"] if x["id"] == "img_synth_rgba_short")
print(s["image"], s["question"])
PY
)
  image="$fix/images/$name"
  [ -n "$question" ] || question="$q"
fi
[ -f "$image" ] || die "no image at $image"
[ -n "$question" ] || die "--question is required with --image"
cd "$root"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

if [ "$build" = 1 ]; then
  echo "building web/dist (release wasm) and the release binaries" >&2
  web/build.sh
  cargo build -q --release --locked -p meddr-web --example native_generate -p meddr-quantize
fi
rel="${CARGO_TARGET_DIR:-$root/target}/release"
synth="${bin:+$bin/meddr-synth-checkpoint}"; synth="${synth:-$rel/meddr-synth-checkpoint}"
quantize="${bin:+$bin/meddr-quantize}"; quantize="${quantize:-$rel/meddr-quantize}"
native="${native:-${bin:+$bin/native_generate}}"; native="${native:-$rel/examples/native_generate}"
dist="${dist:-$root/web/dist}"
[ -f "$dist/package/index.js" ] || die "$dist/package/index.js is missing: run web/build.sh"
need=("$native"); [ -n "$model" ] || need+=("$synth" "$quantize")
for b in "${need[@]}"; do [ -x "$b" ] || die "$b is missing: build it (or drop --no-build)"; done
now_ms() { date +%s%3N; }

# Scratch: the checkpoint always goes once quantized; the GGUFs (and a directory made here) at exit unless --keep.
made_scratch=0
if [ -z "$model" ]; then
  if [ -z "$scratch" ]; then scratch="$(mktemp -d "${TMPDIR:-/tmp}/meddr-large.XXXXXX")"; made_scratch=1
  else mkdir -p "$scratch"; scratch="$(realpath "$scratch")"; fi
fi
work="$(mktemp -d)"
ckpt=""; gguf=""
cleanup() {
  [ -n "$ckpt" ] && rm -rf "$ckpt"
  if [ "$keep" = 0 ] && [ -n "$gguf" ]; then rm -f "$gguf" "${gguf%.gguf}.mmproj.gguf"; fi
  if [ "$made_scratch" = 1 ] && [ "$keep" = 0 ]; then rmdir "$scratch" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$model" ]; then
  stem="meddr-40b-v${vit}-l${llm}-$type"
  ckpt="$scratch/$stem-ckpt"
  gguf="$scratch/$stem.gguf"
  # The bf16 checkpoint is ~2 bytes a parameter, the GGUF ~1.06 (q8_0): ask for 3x the GGUF's size, ~2.2x
  # the 40b preset's parameters at these layer counts (ViT layer 123 M, Yi layer 557 M, tables 1.06 B).
  need_gb="$(python3 -c "print(round(3.3 * (0.123 * $vit + 0.557 * $llm + 1.06) + 1))")"
  free_gb="$(df -P -BG "$scratch" | awk 'NR == 2 { sub(/G/, "", $4); print $4 }')"
  [ "$free_gb" -ge "$need_gb" ] || die "$scratch has ${free_gb} GB free; the checkpoint and the GGUFs need ~${need_gb} GB (use --scratch or fewer layers)"
  echo "writing the synthetic checkpoint ($vit ViT + $llm LLM layers at full width) to $ckpt" >&2
  t0=$(now_ms)
  "$synth" -o "$ckpt" --preset 40b --vit-layers "$vit" --llm-layers "$llm" --force >&2
  t1=$(now_ms)
  echo "quantizing to $gguf ($type)" >&2
  "$quantize" "$ckpt" -o "$gguf" --type "$type" --force >&2
  t2=$(now_ms)
  rm -rf "$ckpt"; ckpt=""
  echo "{\"synthMs\": $((t1 - t0)), \"quantizeMs\": $((t2 - t1))}" > "$work/build.json"
  model="$gguf"
else
  echo '{}' > "$work/build.json"
fi
mmproj="${model%.gguf}.mmproj.gguf"
[ -f "$model" ] || die "no model at $model"
[ -f "$mmproj" ] || die "no $mmproj beside $model (meddr-quantize writes both)"
pair_bytes=$(( $(stat -c %s "$model") + $(stat -c %s "$mmproj") ))
python3 -c "import sys; sys.exit(0 if $pair_bytes >= $min_gib * 2**30 else 1)" \
  || die "the model pair is $pair_bytes bytes, under --min-gib $min_gib GiB: add --llm-layers"
echo "model pair: $pair_bytes bytes ($(python3 -c "print(f'{$pair_bytes / 2**30:.2f}')") GiB)" >&2

load_before="$(uptime | sed 's/.*load average: //')"
native_cmd=(env VK_ICD_FILENAMES="$sws" "$native" --model "$model" --image "$image" --question "$question"
  --max-new-tokens "$tokens" --ignore-eos --runs 1)
browser_cmd=(node tests/bench/browser_vs_native.mjs --dist "$dist" --model "$model" --mmproj "$mmproj" --local-files
  --image "$image" --question "$question" --max-new-tokens "$tokens" --warm-up 0 --runs 1 --timeout "$timeout")
t0=$(now_ms)
if [ -n "$native_json" ]; then
  echo "native: taken from $native_json" >&2; cp "$native_json" "$work/native.json"
else
  echo "native (one run of $tokens tokens): ${native_cmd[*]}" >&2
  "${native_cmd[@]}" > "$work/native.json" || die "the native run failed (log above)"
fi
t1=$(now_ms)
if [ -n "$browser_json" ]; then
  echo "browser: taken from $browser_json" >&2; cp "$browser_json" "$work/browser.json"
else
  echo "browser (headless Chromium, local files, one run of $tokens tokens): ${browser_cmd[*]}" >&2
  "${browser_cmd[@]}" > "$work/browser.json" || die "the browser run failed (log above)"
fi
t2=$(now_ms)
load_after="$(uptime | sed 's/.*load average: //')"
echo "{\"nativeWallMs\": $([ -n "$native_json" ] && echo null || echo $((t1 - t0))), \"browserWallMs\": $([ -n "$browser_json" ] && echo null || echo $((t2 - t1))), \"nativeFrom\": \"${native_json:-run}\", \"browserFrom\": \"${browser_json:-run}\"}" > "$work/wall.json"

mkdir -p tests/bench/results
stamp="$(date -u +%Y-%m-%d-%H%M)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$work" "tests/bench/results/browser-large-$stamp$label" "$model" "$mmproj" "$type" "$vit" "$llm" \
  "$tokens" "$load_before" "$load_after" "$commit" "$native" "$dist" "$image" "$question" <<'PY'
import json, os, sys
(work, out, model, mmproj, qtype, vit, llm, tokens, load_before, load_after, commit, native_bin, dist,
 image, question) = sys.argv[1:]
nat = json.load(open(f"{work}/native.json"))
bro = json.load(open(f"{work}/browser.json"))
build = json.load(open(f"{work}/build.json"))
wall = json.load(open(f"{work}/wall.json"))
run = bro["runs"][-1]
bs, ns = run["stats"], nat["stats"]
mib = lambda b: f"{b / 2**20:,.0f} MiB" if b is not None else "n/a"
gib = lambda b: f"{b / 2**30:.2f} GiB"
sizes = {"model": os.path.getsize(model), "mmproj": os.path.getsize(mmproj)}
sizes["pair"] = sizes["model"] + sizes["mmproj"]
same = nat["tokens"] == run["tokens"]
gpu_proc = lambda key: (bro[key].get("gpu-process") or {}).get("peakRssBytes")
# load()'s answer: the worker's load time and memory, and the engine's model summary (GPU plan included).
info = bro["model"]
summary = info["model"]
prefill_tps = lambda s: (s["promptTokens"] - s["reusedTokens"]) / (s["prefillMs"] / 1e3)
row = {
    "model": (f"{os.path.basename(model)}: {summary['visionLayers']} ViT layer(s) of width {summary['visionWidth']}, "
              f"{summary['llmLayers']} LLM layers of width {summary['hidden']}, vocabulary {summary['vocab']}"),
    "sizes": sizes,
    "prompt_tokens": bs["promptTokens"], "new_tokens": len(run["tokens"]), "same_tokens": same,
    "tokens_browser": run["tokens"], "tokens_native": nat["tokens"], "text": run["text"],
    "browser": {"load_ms": bro["loadMs"], "worker_load_ms": info.get("loadMs"),
                "wasm_heap_after_load": bro["memoryAfterLoad"]["wasmHeapBytes"],
                "wasm_heap_at_end": bro["memoryAtEnd"]["wasmHeapBytes"],
                "gpu_bytes": summary.get("gpuBytes"), "memory_plan": summary.get("memoryPlan"),
                "gpu_process_peak_rss": gpu_proc("processesAtEnd"),
                "renderer_peak_rss": (bro["processesAtEnd"].get("renderer") or {}).get("peakRssBytes"),
                "processes_after_load": bro["processesAfterLoad"], "processes_at_end": bro["processesAtEnd"],
                "stats": bs, "device": bro["device"]},
    "native": {"load_ms": nat["loadMs"], "gpu_bytes": nat.get("gpuBytes"), "memory_plan": nat.get("memoryPlan"),
               "peak_rss": nat.get("peakRssBytes"), "stats": ns, "device": nat["device"]},
    "build": build, "wall": wall, "load_average_before": load_before, "load_average_after": load_after,
    "commit": commit, "native_bin": native_bin, "dist": dist, "image": image, "question": question,
}
b, n = row["browser"], row["native"]
def t(ms): return f"{ms / 1e3:,.1f} s" if ms >= 1000 else f"{ms:.0f} ms"
lines = [
    f"| {row['model']}; {sizes['model']:,} + {sizes['mmproj']:,} bytes ({gib(sizes['pair'])}) | browser | native |",
    "| --- | --- | --- |",
    f"| load (header, weights to the GPU) | {t(b['load_ms'])} | {t(n['load_ms'])} |",
    f"| wasm heap after load / at the end | {mib(b['wasm_heap_after_load'])} / {mib(b['wasm_heap_at_end'])} | n/a |",
    f"| GPU bytes (engine's plan) | {b['gpu_bytes']:,} ({gib(b['gpu_bytes'])}) | "
    + (f"{n['gpu_bytes']:,} ({gib(n['gpu_bytes'])})" if n["gpu_bytes"] is not None else "n/a") + " |",
    f"| peak resident memory | GPU process {mib(b['gpu_process_peak_rss'])}, page {mib(b['renderer_peak_rss'])} | "
    + (f"{mib(n['peak_rss'])} (mapped file included)" if n["peak_rss"] is not None else "n/a") + " |",
    # The image encode is submitted, not awaited: its GPU time lands in the prefill's (both sides alike),
    # so the time to first token is the figure to compare.
    f"| image: preprocess + ViT and projector submitted | {t(bs['imageMs'])} | {t(ns['imageMs'])} |",
    f"| prefill ({bs['promptTokens']} tokens; waits for the image's GPU work too) | {t(bs['prefillMs'])} ({prefill_tps(bs):.2f} tok/s) | {t(ns['prefillMs'])} ({prefill_tps(ns):.2f} tok/s) |",
    f"| time to first token (image + prefill) | {t(bs['imageMs'] + bs['prefillMs'])} | {t(ns['imageMs'] + ns['prefillMs'])} |",
    f"| decode ({len(run['tokens']) - 1} tokens after the first) | {t(bs['decodeMs'])} ({bs['decodeTokensPerSec']:.2f} tok/s) | {t(ns['decodeMs'])} ({ns['decodeTokensPerSec']:.2f} tok/s) |",
    f"| token ids | {run['tokens']} | {'same' if same else nat['tokens']} |",
    "",
    f"checkout {commit} (binaries: {native_bin}, {dist}); device {b['device'].get('adapterName') or b['device'].get('name')}; "
    "wall time " + ", ".join(f"{side} " + (f"{wall[side + 'WallMs'] / 1e3:.0f} s" if wall[side + 'WallMs'] is not None else f"(taken from {wall[side + 'From']})") for side in ("native", "browser")) + "; "
    f"load average (1, 5, 15 min) before / after: {load_before} / {load_after}",
]
text = "\n".join(lines)
print(text)
open(out + ".md", "w").write(text + "\n")
json.dump({"row": row, "raw": {"native": nat, "browser": bro}}, open(out + ".json", "w"), indent=1)
print(f"\nwrote {out}.md and .json", file=sys.stderr)
if not same:
    sys.exit(f"browser and native tokens differ: browser {run['tokens']} native {nat['tokens']}")
PY
if [ "$keep" = 1 ] && [ -n "$gguf" ]; then echo "kept $gguf and ${gguf%.gguf}.mmproj.gguf (reuse: --model $gguf)" >&2; fi
