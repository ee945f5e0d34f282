#!/usr/bin/env bash
# Prefill and decode tok/s of our engine (`meddr bench`) and of llama.cpp's Vulkan backend (`llama-bench`) on
# the same GGUF and the same Vulkan device, in one run, as ratios. Default model: SmolLM2-135M-Instruct Q4_1
# (fetched by tests/setup.sh). Needs llama.cpp built by tests/bench/setup-llamacpp.sh.
#   tests/bench/engine-vs-llamacpp.sh [model.gguf] [prompt_tokens] [decode_tokens]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
model="${1:-.cache/SmolLM2-135M-Instruct.Q4_1.gguf}"
pp="${2:-64}"
tg="${3:-32}"
llama_bin="${LLAMACPP_DIR:-/work/bench/llama.cpp-src}/build/bin"
[ -x "$llama_bin/llama-bench" ] || { echo "llama-bench not found in $llama_bin: run tests/bench/setup-llamacpp.sh" >&2; exit 1; }
cargo build --release -q -p meddr-cli
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
ours=$(target/release/meddr bench -m "$model" --prompt-tokens "$pp" --decode-tokens "$tg" --json)
theirs=$(GGML_VK_VISIBLE_DEVICES=0 "$llama_bin/llama-bench" -m "$model" -p "$pp" -n "$tg" -ngl 99 -r 1 -o json 2>/dev/null)
python3 - "$ours" "$theirs" "$model" <<'PY'
import json, sys
ours = json.loads(sys.argv[1]); theirs = json.loads(sys.argv[2]); model = sys.argv[3]
pp = next(r["avg_ts"] for r in theirs if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in theirs if r["n_gen"] > 0)
dev = theirs[0].get("gpu_info", "?")
print(f"| model | device | metric | meddr | llama.cpp Vulkan | ratio |")
print(f"|---|---|---|---|---|---|")
print(f"| {model.split('/')[-1]} | {ours['device'].splitlines()[0]} / {dev} | prefill tok/s | {ours['prefill_tokens_per_s']:.2f} | {pp:.2f} | {ours['prefill_tokens_per_s']/pp:.2f} |")
print(f"| | | decode tok/s | {ours['decode_tokens_per_s']:.2f} | {tg:.2f} | {ours['decode_tokens_per_s']/tg:.2f} |")
print(f"\nmeddr: {ours['weight_bytes_per_decoded_token']/1e6:.1f} MB of weights per decoded token, {ours['effective_gb_per_s']:.3f} GB/s effective")
print(f"meddr: weights on the GPU {ours['weights_gpu_bytes']/1e6:.1f} MB for {ours['weights_file_bytes']/1e6:.1f} MB in the file; "
      f"peak RSS {ours['peak_rss_bytes']/1e6:.0f} MB (a CPU adapter's GPU buffers are host memory)")
PY
