"""Supervised references on the proteins-shaped graph -> bench/results/proteins_reference.json.

    flock /tmp/distgcl-heavy.lock python bench/proteins_reference.py [--scales 1/16,1/4]
        [--kinds mlp,graphsage] [--ablation-scales 1/16,1/4] [--threads 1] [--work DIR]

The two references the scale report sets beside the contrastive methods' ROC-AUC
(:func:`distgcl.supervised.train_reference`): an MLP on the aggregated edge features and
GraphSAGE trained on random node parts, both on the loader's default node features
(``sum+mean``), BCE over the 112 tasks, ogb's ROC-AUC on the species split at the best
validation check. At ``--ablation-scales`` the MLP also runs on each other node-feature option
(``sum``, ``mean``, ``sum+mean+species``) and GraphSAGE on ``sum+mean+species``: the evidence
for the default. Every row runs in its own process
(its ``peak_rss_mb`` is its own, the graph loaded from ogb's processed cache); the graph is
generated into ``--work`` first where missing (as bench/proteins_generate.py writes it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, write_results  # noqa: E402

SETTINGS = {
    "mlp": {"epochs": 100, "hidden": 256, "num_layers": 3, "dropout": 0.3, "lr": 0.01,
            "eval_every": 5, "batch_size": 8192},
    "graphsage": {"epochs": 30, "hidden": 128, "num_layers": 3, "dropout": 0.3, "lr": 0.01,
                  "eval_every": 2, "num_parts": 20, "eval_parts": 5},
}


def worker(kind: str, scale: float, features: str, root: Path, seed: int,
           threads: int) -> dict[str, Any]:
    import time

    from distgcl.data import load_dataset
    from distgcl.memory import peak_rss_mb
    from distgcl.supervised import train_reference

    start = time.perf_counter()
    ds = load_dataset("ogbn-proteins", root, cache=root / "cache",
                      proteins_node_features=features)
    load_seconds = time.perf_counter() - start
    result = train_reference(kind, ds, seed=seed, threads=threads, progress=False,
                             **SETTINGS[kind])
    return {**result, "load_seconds": load_seconds, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1/16,1/4")
    parser.add_argument("--kinds", default="mlp,graphsage")
    parser.add_argument("--ablation-scales", default="1/16,1/4")
    # 1 thread: with the 2 cores shared, two OpenMP threads ran 10-20x slower than one here
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(WORK / "proteins"))
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    if args.worker:
        kind, scale, features = args.worker
        root = Path(args.work) / f"scale-{float(scale):g}"
        print(json.dumps(worker(kind, float(scale), features, root, args.seed, args.threads)))
        return

    from distgcl.config import DataConfig
    from distgcl.data.ogb import PROTEINS_NODE_FEATURES
    from distgcl.data.proteins import generate_proteins, proteins_size

    scales = [float(Fraction(s)) for s in args.scales.split(",")]
    ablation = [float(Fraction(s)) for s in args.ablation_scales.split(",") if s]
    default = DataConfig().proteins_node_features
    jobs = [(kind, scale, default) for scale in scales for kind in args.kinds.split(",")]
    for scale in ablation:
        jobs += [("mlp", scale, f) for f in PROTEINS_NODE_FEATURES if f != default]
        jobs += [("graphsage", scale, "sum+mean+species")]
    rows = []
    for kind, scale, features in jobs:
        root = Path(args.work) / f"scale-{scale:g}"
        generate_proteins(root, scale, args.seed, progress=False)  # kept if already there
        print(f"scale {scale:g}: {kind} on {features} ...", flush=True)
        cmd = [sys.executable, __file__, "--worker", kind, str(scale), features, "--work",
               args.work, "--seed", str(args.seed), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        nodes, edges = proteins_size(scale)
        rows.append({"dataset": "proteins-synthetic", "method": "supervised",
                     "reference": kind, "variant": f"scale={scale:g}", "features": features,
                     "scale": scale, "nodes": nodes, "edges": 2 * edges,
                     "rocauc_mean": round(r["rocauc_test"], 2),
                     "rocauc_val": round(r["rocauc_val"], 2), "best_epoch": r["best_epoch"],
                     "epochs": r["epochs"], "seconds": round(r["seconds"], 1),
                     "seconds_per_epoch": round(r["seconds_per_epoch"], 3),
                     "load_seconds": round(r["load_seconds"], 1),
                     "peak_rss_mb": round(r["peak_rss_mb"], 1), "parameters": r["parameters"],
                     "seeds": 1, **{f"hp_{k}": v for k, v in SETTINGS[kind].items()}})
        print(f"  test ROC-AUC {rows[-1]['rocauc_mean']} (val {rows[-1]['rocauc_val']}), "
              f"{rows[-1]['seconds']} s", flush=True)
    write_results("proteins_reference", rows, notes=(
        "Supervised references on distgcl's ogbn-proteins-shaped graph (distgcl generate "
        "proteins, seed 0), loaded by the real ogb path; one seed per row, test ROC-AUC "
        "(rocauc_mean) and val ROC-AUC by ogb's Evaluator at the best validation check "
        "(checks every hp_eval_every epochs). seconds = training + evaluation, without the "
        "load (load_seconds, from ogb's processed cache). GraphSAGE: a fresh random split into "
        "hp_num_parts node parts every epoch, predictions from a fixed split into "
        "hp_eval_parts parts. Features standardized per column. The real ogbn-proteins figures "
        "(MLP about 72.0, GraphSAGE 77.68) are for reference only: this graph's difficulty is "
        "set by the generator, not measured from the real data. Run under flock "
        f"/tmp/distgcl-heavy.lock with {args.threads} torch threads; other engineers' light "
        f"work shared the machine, so seconds are noisy. {args.note}".strip()))


if __name__ == "__main__":
    main()
