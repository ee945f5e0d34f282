#!/usr/bin/env python3
"""Markdown summary of a tests/bench/gpu.sh run: python3 gpu_summary.py OUT_DIR (reads bench.json, bench-f32.json,
llama-bench.json, machine.txt, tests.txt)."""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def text(d, name):
    p = os.path.join(d, name)
    return open(p, encoding="utf-8").read().strip() if os.path.exists(p) else ""


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def main() -> int:
    d = sys.argv[1]
    ours, f32, peer = load(d, "bench.json"), load(d, "bench-f32.json"), load(d, "llama-bench.json")
    out = ["## GPU benchmark (tests/bench/gpu.sh)", "", "```", text(d, "machine.txt"), "```", ""]
    tests = text(d, "tests.txt")
    if tests:
        out += ["Engine tests on this GPU:", "", "```", tests, "```", ""]
    if ours:
        out += [f"Device: {ours['device']}", ""]
        out += ["| metric | ours (f16 where available) | ours --force-f32 | llama.cpp Vulkan | ours / llama.cpp |",
                "| --- | --- | --- | --- | --- |"]
        pp = tg = None
        for r in peer or []:
            if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0:
                pp = r.get("avg_ts")
            if r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0:
                tg = r.get("avg_ts")
        g = lambda b, k: None if b is None else b.get(k)
        ratio = lambda a, b: None if a is None or not b else a / b
        rows = [
            ("load s", "load_s", None),
            ("ViT ms per image (first, compiling)", "vit_ms_first_image", None),
            ("ViT ms per image", "vit_ms_per_image", None),
            (f"prefill tok/s ({ours['prefill_tokens']} tokens)", "prefill_tokens_per_s", pp),
            ("TTFT image question ms (ViT + prefill)", "ttft_ms_image_prompt", None),
            (f"decode tok/s ({ours['decode_tokens']} tokens)", "decode_tokens_per_s", tg),
            ("decode tok/s, next step queued before the read", "decode_queued_tokens_per_s", tg),
            ("weight MB read per token", None, None),
            ("effective GB/s", "effective_gb_per_s", None),
            ("streaming-read kernel GB/s", "read_kernel_gb_per_s", None),
            ("fraction of the read kernel", "fraction_of_read_kernel", None),
            ("fraction of the datasheet peak", "fraction_of_peak", None),
            ("GPU bytes (GB)", None, None),
        ]
        for label, key, peer_v in rows:
            if label.startswith("weight MB"):
                a, b = g(ours, "weight_bytes_per_decoded_token"), g(f32, "weight_bytes_per_decoded_token")
                a, b = (None if a is None else a / 1e6), (None if b is None else b / 1e6)
            elif label.startswith("GPU bytes"):
                a, b = g(ours, "gpu_bytes"), g(f32, "gpu_bytes")
                a, b = (None if a is None else a / 1e9), (None if b is None else b / 1e9)
            else:
                a, b = g(ours, key), g(f32, key)
            out.append(f"| {label} | {fmt(a, 3)} | {fmt(b, 3)} | {fmt(peer_v)} | {fmt(ratio(a, peer_v))} |")
        out.append("")
    for region, v in ((ours or {}).get("profile") or {}).items():
        total = v["total_ms"] or 1e-12
        out += [f"GPU time per kernel, {region}: {total:.2f} ms in all"
                + (f" ({v['unmeasured_dispatches']} dispatches unmeasured)" if v["unmeasured_dispatches"] else ""), "",
                "| kernel | dispatches | ms | share |", "| --- | --- | --- | --- |"]
        for k in v["kernels"][:12]:
            out.append(f"| `{k['kernel']}` | {k['dispatches']} | {k['ms']:.3f} | {100 * k['ms'] / total:.1f} % |")
        out.append("")
    shapes = os.path.join(d, "shapes.jsonl")
    if os.path.exists(shapes):
        out += ["Decode by matvec work split (text only, 64-token prompt):", "",
                "| --matvec-shape | decode tok/s | effective GB/s |", "| --- | --- | --- |"]
        for line in open(shapes, encoding="utf-8"):
            if line.strip():
                r = json.loads(line)
                out.append(f"| {r.get('matvec_shape', '?')} | {r['decode_tokens_per_s']:.2f} | {r['effective_gb_per_s']:.1f} |")
        out.append("")
    if peer:
        r0 = peer[0]
        out += [f"llama.cpp: build {r0.get('build_commit')} ({r0.get('build_number')}), backends {r0.get('backends')}, "
                f"GPU {r0.get('gpu_info')!r}, model {r0.get('model_type')}, {r0.get('model_size', 0) / 1e9:.3f} GB", ""]
        out += ["llama-bench rows: " + "; ".join(
            f"p{r.get('n_prompt')}/n{r.get('n_gen')}: {fmt(r.get('avg_ts'))} ± {fmt(r.get('stddev_ts'))} tok/s"
            for r in peer), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
