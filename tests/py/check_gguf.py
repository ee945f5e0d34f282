"""Independent conformance check of a MedDr GGUF pair written by meddr-quantize.

Reads the language model MODEL.gguf and its vision tower MODEL.mmproj.gguf (llama.cpp's two-file layout:
llama tensors and keys in one, v.*/mm.* tensors and clip.* keys in the other) with gguf-py's GGUFReader
(llama.cpp's reference reader), dequantizes every tensor with
gguf.quants, and compares it with the upstream checkpoint's weights merged here in numpy (f32):
W = base + (alpha/r) * B @ A, q/k rows permuted as llama.cpp's converter does, names mapped per
docs/gguf-layout.md. Prints one JSON report; exits 1 with the first failures when a check fails.

usage: check_gguf.py MODEL.gguf CHECKPOINT_DIR   (MODEL.mmproj.gguf beside MODEL.gguf)
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize

# Per-type bounds on the error relative to the weights, derived from the block formats:
#  - rel_rmse: RMS error / RMS of the tensor (4-bit ~ step/sqrt(12) of a 16-level grid over ~[-3σ, 3σ]);
#  - blk: max |error| in a 32-element block / max |w| in that block: half a step for Q8_0 (symmetric
#    ±127 grid); a whole step for Q4_0/Q5_0, whose grid is -8..7 (-16..15) scaled by the signed extreme,
#    so an opposite-sign value of the same magnitude clamps one step short; slack for the k-quants' 6-bit
#    sub-block scales and offsets.
BOUNDS = {
    T.F32: (1e-6, 1e-6),
    T.F16: (1e-3, 1e-3),
    T.BF16: (5e-3, 5e-3),
    T.Q8_0: (0.01, 1 / 127 * 0.51 + 1e-3),
    T.Q6_K: (0.03, 0.06),
    T.Q5_K: (0.06, 0.12),
    T.Q5_0: (0.06, 1 / 16 * 1.01),
    T.Q4_K: (0.12, 0.25),
    T.Q4_1: (0.12, 0.25),
    T.Q4_0: (0.15, 1 / 8 * 1.01),
}


def load_checkpoint(d: Path):
    idx = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(idx.values())):
        raw = (d / shard).read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            buf = raw[8 + n + b:8 + n + e]
            if info["dtype"] == "BF16":
                a = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif info["dtype"] == "F16":
                a = np.frombuffer(buf, dtype=np.float16).astype(np.float32)
            else:
                a = np.frombuffer(buf, dtype=np.float32)
            out[name] = a.reshape(info["shape"])
    return out


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(ck, cfg):
    llm, vis = cfg["llm_config"], cfg["vision_config"]
    wrapped = any(k.startswith("language_model.base_model.model.") for k in ck)
    pre = "language_model.base_model.model." if wrapped else "language_model."
    r = cfg.get("use_llm_lora", 0)

    def lin(module):
        if wrapped and r:
            base = ck[f"{pre}{module}.base_layer.weight"]
            a = ck[f"{pre}{module}.lora_A.default.weight"]
            b = ck[f"{pre}{module}.lora_B.default.weight"]
            return base + (2 * r / r) * (b @ a)
        return ck[f"{pre}{module}.weight"]

    nh, nkv = llm["num_attention_heads"], llm.get("num_key_value_heads", llm["num_attention_heads"])
    e = {"token_embd.weight": ck[f"{pre}model.embed_tokens.weight"]}
    for i in range(llm["num_hidden_layers"]):
        p = f"model.layers.{i}."
        e[f"blk.{i}.attn_norm.weight"] = ck[f"{pre}{p}input_layernorm.weight"]
        e[f"blk.{i}.ffn_norm.weight"] = ck[f"{pre}{p}post_attention_layernorm.weight"]
        e[f"blk.{i}.attn_q.weight"] = permute(lin(p + "self_attn.q_proj"), nh)
        e[f"blk.{i}.attn_k.weight"] = permute(lin(p + "self_attn.k_proj"), nkv)
        e[f"blk.{i}.attn_v.weight"] = lin(p + "self_attn.v_proj")
        e[f"blk.{i}.attn_output.weight"] = lin(p + "self_attn.o_proj")
        e[f"blk.{i}.ffn_gate.weight"] = lin(p + "mlp.gate_proj")
        e[f"blk.{i}.ffn_up.weight"] = lin(p + "mlp.up_proj")
        e[f"blk.{i}.ffn_down.weight"] = lin(p + "mlp.down_proj")
    e["output_norm.weight"] = ck[f"{pre}model.norm.weight"]
    e["output.weight"] = ck[f"{pre}lm_head.weight"]
    v = "vision_model.embeddings."
    c = vis["hidden_size"]
    e["v.class_embd"] = ck[v + "class_embedding"].reshape(c)
    e["v.patch_embd.weight"] = ck[v + "patch_embedding.weight"].reshape(c, -1)
    e["v.patch_embd.bias"] = ck[v + "patch_embedding.bias"]
    e["v.position_embd.weight"] = ck[v + "position_embedding"].reshape(-1, c)
    sel = cfg.get("select_layer", -1)
    L = vis["num_hidden_layers"]
    kept = L + 1 + sel if sel < 0 else sel
    names = {"attn_qkv.weight": "attn.qkv.weight", "attn_q_norm.weight": "attn.q_norm.weight",
             "attn_k_norm.weight": "attn.k_norm.weight", "attn_out.weight": "attn.proj.weight",
             "attn_out.bias": "attn.proj.bias", "ffn_up.weight": "mlp.fc1.weight", "ffn_up.bias": "mlp.fc1.bias",
             "ffn_down.weight": "mlp.fc2.weight", "ffn_down.bias": "mlp.fc2.bias", "ln1.weight": "norm1.weight",
             "ln2.weight": "norm2.weight", "ls1": "ls1", "ls2": "ls2"}
    for i in range(kept):
        for g, h in names.items():
            e[f"v.blk.{i}.{g}"] = ck[f"vision_model.encoder.layers.{i}.{h}"]
    for j in (0, 1, 3):
        e[f"mm.model.mlp.{j}.weight"] = ck[f"mlp1.{j}.weight"]
        e[f"mm.model.mlp.{j}.bias"] = ck[f"mlp1.{j}.bias"]
    return e, kept


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def main():
    gguf_path, ck_dir = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((ck_dir / "config.json").read_text())
    reader = GGUFReader(str(gguf_path))
    stem = gguf_path.name[:-5] if gguf_path.name.endswith(".gguf") else gguf_path.name
    proj = GGUFReader(str(gguf_path.with_name(stem + ".mmproj.gguf")))
    ck = load_checkpoint(ck_dir)
    want, kept = expected_tensors(ck, cfg)
    failures = []
    report = {"tensors": {}, "types": {}}
    for t in reader.tensors:
        if t.name.startswith(("v.", "mm.")):
            failures.append(f"vision tensor {t.name} in the language model file")
    for t in proj.tensors:
        if not t.name.startswith(("v.", "mm.")):
            failures.append(f"language-model tensor {t.name} in the mmproj file")
    for k in ("clip.has_vision_encoder", "clip.vision.block_count", "meddr.vision.pad2square"):
        if field(reader, k) is not None:
            failures.append(f"vision key {k} in the language model file")
    all_tensors = list(reader.tensors) + list(proj.tensors)
    got_names = [t.name for t in all_tensors]
    if len(set(got_names)) != len(got_names):
        failures.append("a tensor name is in both files")
    got_names = set(got_names)
    for n in sorted(set(want) - got_names):
        failures.append(f"missing tensor {n}")
    for n in sorted(got_names - set(want)):
        failures.append(f"unexpected tensor {n}")
    for t in all_tensors:
        if t.name not in want:
            continue
        ref = want[t.name].astype(np.float32)
        deq = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        ref = ref.reshape(-1)
        if deq.size != ref.size:
            failures.append(f"{t.name}: {deq.size} elements, expected {ref.size}")
            continue
        shape = [int(x) for x in t.shape]
        want_shape = list(reversed(want[t.name].shape)) if want[t.name].ndim > 1 else [ref.size]
        if shape != want_shape:
            failures.append(f"{t.name}: GGUF shape {shape}, expected {want_shape}")
        err = deq - ref
        rms = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) or 1.0
        rel_rmse = float(np.sqrt(np.mean(err.astype(np.float64) ** 2))) / rms
        nb = ref.size // 32 if ref.size % 32 == 0 else 0
        if nb:
            blk_amax = np.abs(ref[: nb * 32].reshape(nb, 32)).max(axis=1)
            blk_err = np.abs(err[: nb * 32].reshape(nb, 32)).max(axis=1)
            blk = float(np.max(blk_err / np.maximum(blk_amax, 1e-30)))
        else:
            blk = float(np.max(np.abs(err)) / max(float(np.max(np.abs(ref))), 1e-30))
        ty = T(t.tensor_type)
        b_rmse, b_blk = BOUNDS[ty]
        report["tensors"][t.name] = {"type": ty.name, "rel_rmse": rel_rmse, "blk": blk}
        report["types"][ty.name] = report["types"].get(ty.name, 0) + 1
        if rel_rmse > b_rmse or blk > b_blk:
            failures.append(f"{t.name} ({ty.name}): rel_rmse {rel_rmse:.3g} (bound {b_rmse}), block max err/amax {blk:.3g} (bound {b_blk})")
    llm = cfg["llm_config"]
    checks = {
        "general.architecture": "llama",
        "general.type": "model",
        "llama.block_count": llm["num_hidden_layers"],
        "llama.embedding_length": llm["hidden_size"],
        "llama.attention.head_count": llm["num_attention_heads"],
        "llama.attention.head_count_kv": llm["num_key_value_heads"],
        "meddr.chat.eos_token_id": llm["eos_token_id"],
        "tokenizer.ggml.add_bos_token": False,
    }
    proj_checks = {
        "general.architecture": "clip",
        "general.type": "mmproj",
        "clip.has_vision_encoder": True,
        "clip.projector_type": "internvl",
        "clip.vision.block_count": kept,
        "clip.vision.embedding_length": cfg["vision_config"]["hidden_size"],
        "clip.vision.projection_dim": llm["hidden_size"],
        "meddr.vision.pad2square": cfg.get("pad2square", False),
    }
    for r, cs, what in ((reader, checks, "model"), (proj, proj_checks, "mmproj")):
        for k, v in cs.items():
            got = field(r, k)
            if got != v:
                failures.append(f"{what} metadata {k} = {got!r}, expected {v!r}")
    for k in ("general.name", "meddr.format_version", "meddr.image.num_tokens"):
        if field(reader, k) != field(proj, k):
            failures.append(f"shared key {k}: {field(reader, k)!r} vs {field(proj, k)!r}")
    toks = field(reader, "tokenizer.ggml.tokens")
    report["n_tokens"] = len(toks) if toks else 0
    report["alignment"] = int(reader.alignment)
    ft = field(reader, "general.file_type")
    report["file_type"] = int(ft) if ft is not None else None
    report["failures"] = failures
    print(json.dumps({"failures": failures} if failures else report))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
