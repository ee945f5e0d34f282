#!/usr/bin/env python3
"""Turn a fine-tuned timm checkpoint into a specialist folder for `meddr specialist` / `meddr gsco`.

A specialist folder is timm's Hugging Face layout plus two GSCo fields:

    out_dir/model.safetensors   the state_dict under timm's own key names (metadata {"format": "pt"})
    out_dir/config.json         architecture, num_classes, num_features, global_pool (ViTs only),
                                label_names, pretrained_cfg (mean/std/input_size/...), img_size, task

Usage
-----
Convert a checkpoint you trained with timm (a raw state_dict, or a dict holding one under 'state_dict' or
'model', as timm's train.py and most training loops save it):

    python tests/py/timm_to_specialist.py --arch resnet18 --checkpoint best.pth \\
        --num-classes 2 --labels normal,tumor --img-size 64 --task multi-class -o out_dir

Make a randomly initialised specialist (seeded; for benchmarks only, its predictions mean nothing):

    python tests/py/timm_to_specialist.py --arch vit_base_patch16_224 --random --seed 0 \\
        --num-classes 2 --img-size 224 -o .cache/bench-specialists/vit_base_patch16_224

Options
-------
--arch          timm model name (resnet18, densenet121, vit_base_patch16_224, efficientnet_b0, ...; a
                pretrained tag such as resnet18.a1_in1k selects that tag's mean/std)
--num-classes   width of the classifier the checkpoint was trained with
--labels        comma-separated class names in classifier order (optional; meddr then names them 0, 1, ...)
--img-size      side of the dataset's images (MedMNIST 28/64/128/224); meddr zero-pads them to the
                network's input size after normalising, as GSCo's inference does
--task          multi-class (softmax + argmax) or multi-label (sigmoid > 0.5)
--dtype         f32 (default), f16 or bf16 for floating-point tensors; integer tensors (BatchNorm's
                num_batches_tracked) are kept as they are
--force         replace an existing out_dir
--trust-checkpoint
                unpickle the checkpoint with weights_only=False. Only for files you made yourself: timm's
                train.py stores its argparse Namespace next to the weights, which the safe loader refuses.

What it checks before writing anything: the state_dict loads into `timm.create_model(arch,
pretrained=False, num_classes=N)` with strict=True (otherwise it names the missing, unexpected and
mis-shaped keys), a forward pass gives N finite logits, the label count equals N, and no tensor overflows
the chosen dtype. The folder is written into a temporary directory next to out_dir and renamed at the end,
so a failure leaves no partial output. Exit code 1 on any error.

Needs torch, timm and safetensors; never touches the network (pretrained=False).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

# Names `meddr` knows (crates/specialist/src/arch/mod.rs, Architecture::SUPPORTED). Only used for a
# warning: the converter itself works for any timm model, and the Rust list may grow.
MEDDR_SUPPORTED = {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet169", "densenet201", "densenet161",
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
    "efficientnet_b0", "efficientnet_b1",
}

# pretrained_cfg keys meddr or a reader of the folder relies on; a timm model without them is an error.
REQUIRED_CFG_KEYS = ("mean", "std", "input_size", "interpolation", "crop_pct", "first_conv", "classifier")

# pretrained_cfg keys that say where timm's ImageNet weights download from; meaningless for a fine-tune.
SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")

# Values of --task that meddr's Task::parse accepts.
TASKS = ("multi-class", "multi-label", "binary-class", "ordinal-regression")

# How many key names to list in an error before summarising.
MAX_LISTED = 20


class ConvertError(Exception):
    """A problem with the user's input: printed without a traceback, exit code 1."""


def fail(message: str) -> NoReturn:
    raise ConvertError(message)


def import_deps():
    """Import torch, timm and safetensors, or explain how to get them (a bare ImportError is unhelpful)."""
    try:
        import torch
        import timm
        from safetensors.torch import save_file
    except ImportError as e:
        fail(f"{e}. This script needs torch, timm and safetensors: pip install torch timm safetensors")
    return torch, timm, save_file


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Convert a timm checkpoint (or a random timm model) into a meddr specialist folder.",
        epilog="See the module docstring (head of this file) for details.",
    )
    p.add_argument("--arch", required=True, help="timm model name, e.g. resnet18")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="fine-tuned .pth/.pt file")
    src.add_argument("--random", action="store_true", help="save a randomly initialised model (benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="torch seed for --random (default 0)")
    p.add_argument("--num-classes", type=int, required=True, help="classifier width")
    p.add_argument("--labels", help="comma-separated class names, in classifier order")
    p.add_argument("--img-size", type=int, required=True, help="the dataset's image side (e.g. 28, 64, 224)")
    p.add_argument("--task", choices=TASKS, default="multi-class", help="default multi-class")
    p.add_argument("-o", "--out", type=Path, required=True, help="specialist folder to create")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32", help="default f32")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load the checkpoint with weights_only=False (runs pickled code: own files only)")
    return p.parse_args(argv)


def parse_labels(labels: str | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return None
    names = [s.strip() for s in labels.split(",")]
    if any(not n for n in names):
        # meddr joins label names with commas in its prompts, so an empty name could not be read back.
        fail(f"--labels {labels!r}: every class needs a non-empty name")
    if len(names) != num_classes:
        fail(f"--labels gives {len(names)} names but --num-classes is {num_classes}")
    if len(set(names)) != len(names):
        fail(f"--labels {labels!r}: names must be distinct")
    return names


def load_checkpoint(torch, path: Path, trust: bool) -> dict:
    """Read a checkpoint and return its state_dict (raw, or under 'state_dict' / 'model')."""
    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... depending on the problem
        hint = "" if trust else (
            "\nIf it is your own checkpoint holding more than tensors (timm's train.py saves its argparse "
            "arguments too), rerun with --trust-checkpoint."
        )
        fail(f"{path}: could not load the checkpoint: {e}{hint}")
    if not isinstance(obj, dict):
        fail(f"{path}: expected a dict (a state_dict, or one under 'state_dict' / 'model'), got {type(obj).__name__}"
             + (" (a whole pickled model: save model.state_dict() instead)" if hasattr(obj, "state_dict") else ""))
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            fail(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; the file does not look like a "
                 "state_dict (expected a raw one, or one under 'state_dict' or 'model')")
        sd[k] = v
    if not sd:
        fail(f"{path}: the state_dict is empty")
    # torch.nn.DataParallel / DistributedDataParallel prefix every key with 'module.'; timm's own
    # clean_state_dict strips it the same way.
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def listed(keys) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:MAX_LISTED])
    return head + (f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else "")


def verify(torch, model, sd: dict, num_classes: int, arch: str, input_size) -> None:
    """Strict load into the timm model, with a message that names what is wrong, then one forward pass."""
    expected = model.state_dict()
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    mis_shaped = [k for k in set(expected) & set(sd) if tuple(expected[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or mis_shaped:
        lines = [f"the checkpoint does not fit timm's {arch} with num_classes={num_classes}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {listed(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {listed(unexpected)}")
        if mis_shaped:
            lines.append(f"  shape mismatches ({len(mis_shaped)}): " + ", ".join(
                f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(mis_shaped)[:MAX_LISTED]))
        classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if classifier and any(k.startswith(classifier + ".") for k in mis_shaped):
            lines.append(f"  (the classifier '{classifier}' differs: is --num-classes right?)")
        if missing or unexpected:
            lines.append("  (names differ: is --arch the architecture the checkpoint was trained with?)")
        fail("\n".join(lines))
    try:
        # The key/shape check above already covers what strict=True looks at; this is the real load,
        # and it also catches anything the comparison missed.
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        fail(f"load_state_dict(strict=True) into timm's {arch} failed: {e}")
    model.eval()
    _, h, w = input_size
    with torch.inference_mode():
        logits = model.forward_head(model.forward_features(torch.zeros(1, 3, h, w)))
    if tuple(logits.shape) != (1, num_classes):
        fail(f"a forward pass gave logits of shape {tuple(logits.shape)}, expected (1, {num_classes})")
    if not torch.isfinite(logits).all():
        fail("a forward pass on a blank image gave non-finite logits: the checkpoint's weights are broken")


def json_safe(value):
    """The JSON-serialisable part of a pretrained_cfg value (tuples become lists; others are dropped)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        items = [json_safe(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sv = json_safe(v)
            if isinstance(k, str) and (sv is not None or v is None):
                out[k] = sv
        return out
    return None


def pretrained_cfg_of(model, arch: str) -> tuple[str, dict]:
    """(architecture, pretrained_cfg) as timm's save_config_for_hf writes them."""
    raw = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    cfg = json_safe(dict(raw))
    # As timm's own exporter does: no null values, and no download source (these weights are not from there).
    cfg = {k: v for k, v in cfg.items() if v is not None and k not in SOURCE_KEYS}
    # timm moves 'architecture' out of pretrained_cfg to the top level; it is the name without a tag.
    architecture = cfg.pop("architecture", None) or arch.split(".")[0]
    missing = [k for k in REQUIRED_CFG_KEYS if cfg.get(k) is None]
    if missing:
        fail(f"timm's {arch} has no {', '.join(missing)} in its pretrained_cfg; cannot write a usable config.json")
    return architecture, cfg


def to_saveable(torch, sd: dict, dtype: str) -> dict:
    """Cast floats to dtype, keep integers, and make every tensor contiguous with its own storage
    (safetensors refuses views and tensors that share memory)."""
    target = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    out = {}
    for k, v in sd.items():
        v = v.detach().to("cpu")
        if v.is_floating_point():
            cast = v.to(target)
            if torch.isfinite(v).all() and not torch.isfinite(cast).all():
                fail(f"tensor {k} overflows {dtype} (largest |value| {v.abs().max().item():.4g}); use bf16 or f32")
            v = cast
        elif v.is_complex():
            fail(f"tensor {k} is complex; meddr reads real floating-point weights only")
        out[k] = v.contiguous().clone()
    return out


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not force:
        fail(f"{out} already exists (use --force to replace it)")
    if not out.parent.is_dir():
        fail(f"{out.parent}: the parent folder does not exist")


def write_atomically(out: Path, force: bool, tensors: dict, config: dict, save_file) -> None:
    """Write both files into a temporary folder beside out and rename it into place, so that out is
    either the old folder, absent, or complete."""
    check_out_dir(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    # mkdtemp makes the folder 0700; give the result the permissions a plain mkdir would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    old = None
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, allow_nan=False)
            f.write("\n")
        if out.exists() or out.is_symlink():
            # Keep the old folder until the new one is in place, then drop it.
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.rename(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.num_classes <= 0:
        fail(f"--num-classes {args.num_classes}: must be positive")
    labels = parse_labels(args.labels, args.num_classes)
    if args.img_size <= 0:
        fail(f"--img-size {args.img_size}: must be positive")
    # Fail on an existing folder before the slow part (loading, building the model).
    check_out_dir(args.out, args.force)
    torch, timm, save_file = import_deps()
    if args.arch.split(".")[0].removeprefix("timm/") not in MEDDR_SUPPORTED:
        print(f"warning: meddr does not (yet) run {args.arch}; known: {', '.join(sorted(MEDDR_SUPPORTED))}",
              file=sys.stderr)

    if args.random:
        # Seeding before create_model makes the random weights reproducible (timm draws them at init).
        torch.manual_seed(args.seed)
    try:
        model = timm.create_model(args.arch, pretrained=False, num_classes=args.num_classes)
    except Exception as e:  # timm raises RuntimeError for unknown names, others for bad arguments
        fail(f"timm.create_model({args.arch!r}, pretrained=False, num_classes={args.num_classes}) failed: {e}")

    architecture, cfg = pretrained_cfg_of(model, args.arch)
    input_size = cfg["input_size"]
    if args.img_size > input_size[-1]:
        fail(f"--img-size {args.img_size} is larger than {args.arch}'s input size {input_size[-1]} "
             "(meddr zero-pads images up to it and never shrinks them)")

    sd = model.state_dict() if args.random else load_checkpoint(torch, args.checkpoint, args.trust_checkpoint)
    verify(torch, model, sd, args.num_classes, args.arch, input_size)

    # Key order follows timm's save_config_for_hf; GSCo's two fields come last.
    config = {"architecture": architecture, "num_classes": args.num_classes,
              "num_features": int(model.num_features)}
    global_pool = getattr(model, "global_pool", None)
    if isinstance(global_pool, str) and global_pool:  # ViTs: "token"; CNNs hold a pooling module instead
        config["global_pool"] = global_pool
    if labels is not None:
        config["label_names"] = labels
    config["pretrained_cfg"] = cfg
    config["img_size"] = args.img_size
    config["task"] = args.task

    tensors = to_saveable(torch, sd, args.dtype)
    write_atomically(args.out, args.force, tensors, config, save_file)
    n_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(f"wrote {args.out}: {architecture}, {len(tensors)} tensors, {n_bytes / 1e6:.1f} MB ({args.dtype}), "
          f"{args.num_classes} classes, img_size {args.img_size}, {args.task}"
          + (f", random weights (seed {args.seed})" if args.random else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
