#!/usr/bin/env python3
"""Writes the language model of an InternVL/MedDr checkpoint as a plain Hugging Face Llama checkpoint.

llama.cpp's converter only knows the bare LLaMA layout, so the like-for-like benchmark feeds it the same
language-model weights with the `language_model.` prefix stripped. Tensors are streamed byte for byte (no dtype
change, bounded memory); only plain names are accepted (write the source with --lora-rank 0), because merging
adapters would change the work being compared. Standard library only.

Usage: extract_llm.py SRC_DIR DST_DIR
"""
import json
import os
import shutil
import struct
import sys

PREFIX = "language_model."
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "generation_config.json")
CHUNK = 16 << 20
MAX_HEADER = 100 << 20


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SystemExit(f"{path}: shorter than a safetensors header length")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise SystemExit(f"{path}: header length {n} exceeds {MAX_HEADER}")
        header = json.loads(f.read(n))
    return header, 8 + n


def shard_files(src):
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values()))
    if os.path.exists(os.path.join(src, "model.safetensors")):
        return ["model.safetensors"]
    raise SystemExit(f"{src}: no model.safetensors.index.json or model.safetensors")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    if "llm_config" not in cfg:
        raise SystemExit(f"{src}/config.json: no llm_config (not an InternVL checkpoint)")
    os.makedirs(dst, exist_ok=False)

    plan = []  # (source shard, data start, [(new name, meta)])
    for shard in shard_files(src):
        path = os.path.join(src, shard)
        header, data_start = read_header(path)
        picked = []
        for name, meta in header.items():
            if name == "__metadata__" or not name.startswith(PREFIX):
                continue
            new = name[len(PREFIX):]
            if new.startswith("base_model.") or ".lora_" in new or ".base_layer." in new:
                raise SystemExit(f"{path}: tensor {name!r} is a LoRA-wrapped name; write the checkpoint with "
                                 "--lora-rank 0")
            picked.append((new, meta))
        if picked:
            picked.sort(key=lambda t: t[1]["data_offsets"][0])
            plan.append((path, data_start, picked))
    if not plan:
        raise SystemExit(f"{src}: no tensors named {PREFIX}*")

    weight_map, total = {}, 0
    for i, (path, data_start, picked) in enumerate(plan):
        out_name = f"model-{i + 1:05}-of-{len(plan):05}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for new, meta in picked:
            a, b = meta["data_offsets"]
            if not (0 <= a <= b):
                raise SystemExit(f"{path}: tensor {new!r} has bad data_offsets {meta['data_offsets']}")
            header[new] = {"dtype": meta["dtype"], "shape": meta["shape"], "data_offsets": [off, off + b - a]}
            off += b - a
            weight_map[new] = out_name
        total += off
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with open(path, "rb") as fin, open(os.path.join(dst, out_name), "wb") as fout:
            fout.write(struct.pack("<Q", len(hb)))
            fout.write(hb)
            for new, meta in picked:
                a, b = meta["data_offsets"]
                fin.seek(data_start + a)
                left = b - a
                while left:
                    buf = fin.read(min(CHUNK, left))
                    if not buf:
                        raise SystemExit(f"{path}: truncated inside tensor {new!r}")
                    fout.write(buf)
                    left -= len(buf)
        print(f"extract_llm: {out_name}: {len(picked)} tensors, {off / 1e9:.3f} GB", file=sys.stderr)

    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    llm = dict(cfg["llm_config"])
    llm["architectures"] = ["LlamaForCausalLM"]
    llm["model_type"] = "llama"
    if not llm.get("torch_dtype"):
        llm["torch_dtype"] = "bfloat16"
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(llm, f, indent=2)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    print(f"extract_llm: wrote {dst} ({total / 1e9:.3f} GB of language-model weights)", file=sys.stderr)


if __name__ == "__main__":
    main()
