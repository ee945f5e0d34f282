#!/usr/bin/env python3
"""The reference side of tests/bench/specialist-vs-pytorch.sh: PyTorch inference and scikit-learn search.

Each subcommand prints one JSON object on stdout (and nothing else there), so the shell script can put it
next to `meddr`'s own JSON measured in the same run on the same CPU.

  infer   images/s of a timm model in PyTorch, the way GSCo's specialist inference runs it
          (model.eval(), torch.inference_mode(), forward_features then forward_head, softmax):
            specialist_pytorch.py infer --arch resnet18 [--specialist DIR] --batch 8 --iters 3 --threads 2
          With --specialist the weights and class count come from that folder (the very file meddr reads);
          without, a random timm model with --num-classes (default 2).

  search  ms/query of scikit-learn's brute-force cosine k-NN on random float32 features, the baseline for
          `meddr gsco bench-search`:
            specialist_pytorch.py search --n-ref 10000 --dim 512 --queries 100 [--out PREFIX]
          NearestNeighbors(metric='cosine', algorithm='brute').fit(normalize(ref)), then
          kneighbors(normalize(q), k). Fitting is timed separately from the queries. --out PREFIX also
          writes the JSON to PREFIX.json.

Random inputs do not change the timings: a dense forward pass and a brute-force search do the same work
whatever the values are.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def infer(args: argparse.Namespace) -> dict:
    import torch
    import timm

    # Fix the thread count so that the comparison with meddr's CPU backend is on the same cores.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    num_classes = args.num_classes
    task = "multi-class"
    if args.specialist:
        cfg = json.loads((args.specialist / "config.json").read_text())
        if cfg["architecture"].split(".")[0] != args.arch.split(".")[0]:
            sys.exit(f"error: {args.specialist} holds {cfg['architecture']}, not {args.arch}")
        num_classes = cfg["num_classes"]
        task = cfg.get("task", task)
    model = timm.create_model(args.arch, pretrained=False, num_classes=num_classes)
    if args.specialist:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(args.specialist / "model.safetensors")), strict=True)
    model.eval()
    _, h, w = model.pretrained_cfg["input_size"]
    x = torch.randn(args.batch, 3, h, w)
    # Multi-label specialists read sigmoids, the others a softmax (upstream inference_specialist.py).
    activate = torch.sigmoid if task.startswith("multi-label") else (lambda t: torch.softmax(t, dim=1))

    def run() -> None:
        probs = activate(model.forward_head(model.forward_features(x)))
        probs.sum().item()  # read the result back, as meddr does

    times = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        run()  # warm-up: first-call allocations and oneDNN primitive creation are not steady state
        warmup_s = time.perf_counter() - t0
        for _ in range(args.iters):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    total = sum(times)
    return {
        "arch": args.arch,
        "framework": "pytorch",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "iters": args.iters,
        "input_size": [3, h, w],
        "num_classes": num_classes,
        "warmup_s": warmup_s,
        "batch_s": times,
        "median_batch_s": statistics.median(times),
        "images_per_s": args.batch * args.iters / total,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def search(args: argparse.Namespace) -> dict:
    import numpy as np
    import sklearn
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(args.seed)
    ref = rng.standard_normal((args.n_ref, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    rss_after_data = peak_rss_bytes()
    k = min(args.k, args.n_ref)
    # BLAS threads do the distance matrix; pin them to the same count meddr's CPU path gets.
    with threadpool_limits(limits=args.threads):
        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(normalize(ref))
        fit_s = time.perf_counter() - t0
        rss_after_fit = peak_rss_bytes()
        nn.kneighbors(normalize(queries[:1]), k)  # warm-up: BLAS thread start-up, first-call allocations
        t0 = time.perf_counter()
        dist, idx = nn.kneighbors(normalize(queries), k)
        query_s = time.perf_counter() - t0
    assert idx.shape == (args.queries, k) and np.isfinite(dist).all()
    return {
        "framework": "scikit-learn",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
        "n_ref": args.n_ref,
        "dim": args.dim,
        "queries": args.queries,
        "k": k,
        "fit_ms": fit_s * 1e3,
        "query_total_ms": query_s * 1e3,
        "ms_per_query": query_s * 1e3 / args.queries,
        # The features themselves are in these numbers (n_ref * dim * 4 bytes): the process's peak,
        # after making the data and after fitting (normalize copies the references).
        "peak_rss_after_data_bytes": rss_after_data,
        "peak_rss_after_fit_bytes": rss_after_fit,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def positive(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{s} is not a positive integer")
    return v


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("infer", help="PyTorch images/s of a timm model")
    pi.add_argument("--arch", required=True)
    pi.add_argument("--specialist", type=Path, help="specialist folder to load weights and classes from")
    pi.add_argument("--num-classes", type=positive, default=2, help="without --specialist (default 2)")
    pi.add_argument("--batch", type=positive, default=8)
    pi.add_argument("--iters", type=positive, default=3)
    pi.add_argument("--threads", type=positive, required=True)
    pi.add_argument("--seed", type=int, default=0)
    ps = sub.add_parser("search", help="scikit-learn brute-force cosine k-NN ms/query")
    ps.add_argument("--n-ref", type=positive, required=True)
    ps.add_argument("--dim", type=positive, required=True)
    ps.add_argument("--queries", type=positive, default=100)
    ps.add_argument("--k", type=positive, default=10)
    ps.add_argument("--threads", type=positive, default=1)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--out", help="also write the JSON to PREFIX.json")
    args = p.parse_args(argv)
    result = infer(args) if args.cmd == "infer" else search(args)
    text = json.dumps(result)
    if getattr(args, "out", None):
        Path(args.out + ".json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
