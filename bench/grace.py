"""GRACE with its published hyperparameters on the six standard datasets -> bench/results/grace.json.

    DISTGCL_DATA=../shared/data python bench/grace.py [--budget 300] [--datasets cora,citeseer]

Full-batch GRACE costs O(N^2 d) per epoch; on a 2-core CPU the published epoch counts (up to 2000)
take hours on the larger graphs. Each dataset therefore gets a wall-clock budget: a 2-epoch timing
run measures seconds per epoch, and the real run uses ``min(published, budget / s_per_epoch)``
epochs. Every row records the epochs it ran next to the published count.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, row_from_result, run_distgcl, write_results  # noqa: E402

PUBLISHED = {  # accuracy the issue holds us to (DGL README public split; BGRL table for the rest)
    "cora": 81.9, "citeseer": 71.2, "pubmed": 80.6, "photo": 92.78, "computers": 89.53, "cs": 91.12,
}


def _row(result: dict, published_epochs: int, name: str) -> dict:
    grace = result["config"]["grace"]
    variant = ("full-batch" if grace["negatives"] == "full"
               else f"sampled-K{grace['num_negatives']}")
    row = row_from_result(result, variant=variant, published_epochs=published_epochs,
                          published_accuracy=PUBLISHED.get(name))
    row["threads"] = result["config"]["train"]["threads"]
    if row.get("accuracy_mean") is not None and PUBLISHED.get(name) is not None:
        row["gap_to_published"] = round(row["accuracy_mean"] - PUBLISHED[name], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per dataset")
    parser.add_argument("--full", default="cora,citeseer",
                        help="datasets that always run their published epochs (no budget)")
    parser.add_argument("--datasets", default=",".join(PUBLISHED))
    parser.add_argument("--variants", default="full",
                        help="full (the paper's N x N loss) and/or sampled (K negatives/anchor)")
    parser.add_argument("--num-negatives", type=int, default=1024, help="K for --variants sampled")
    parser.add_argument("--seeds", type=int, default=10, help="linear-probe seeds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 avoids oversubscription on a shared CPU)")
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    parser.add_argument("--collect", action="store_true",
                        help="only assemble grace.json from the finished runs under _work/")
    args = parser.parse_args()
    import yaml

    rows = []
    for name in args.datasets.split(","):
        config = REPO / "configs" / f"{name}_grace.yaml"
        published_epochs = yaml.safe_load(config.read_text())["train"]["epochs"]
        for variant in args.variants.split(","):
            if variant not in ("full", "sampled"):
                parser.error(f"unknown variant {variant!r} (full, sampled)")
            work = WORK / f"grace-{name}{'' if variant == 'full' else '-sampled'}"
            if args.collect:
                if (work / "result.json").is_file():
                    rows.append(_row(json.loads((work / "result.json").read_text()),
                                     published_epochs, name))
                else:
                    print(f"[{name}] no finished run under {work}", flush=True)
                continue
            common = [f"train.threads={args.threads}"]
            if variant == "sampled":
                common += ["grace.negatives=sampled", f"grace.num_negatives={args.num_negatives}"]
            timing = run_distgcl(config, [*common, "train.epochs=2", "eval.probe_seeds=1",
                                          "eval.probe_epochs=10", "eval.clustering=false"],
                                 work.with_name(work.name + "-timing"))
            per_epoch = timing["timing"]["seconds_per_epoch"]
            budget = float("inf") if name in args.full.split(",") else args.budget
            epochs = int(max(1, min(published_epochs, budget // max(per_epoch, 1e-6))))
            print(f"[{name} {variant}] {per_epoch:.2f} s/epoch -> {epochs}/{published_epochs} "
                  f"epochs", flush=True)
            result = run_distgcl(config, [*common, f"train.epochs={epochs}",
                                          f"eval.probe_seeds={args.seeds}",
                                          "eval.save_embeddings=true"], work)
            rows.append(_row(result, published_epochs, name))
            print(rows[-1], flush=True)

    short = [f"{r['dataset']} {r['variant']} ({r['epochs']}/{r['published_epochs']})" for r in rows
             if r["epochs"] < r["published_epochs"]]
    notes = (f"GRACE InfoNCE (inter+intra-view negatives; full-batch N x N, or sampled-K: K "
             f"candidate nodes per block of 1024 anchors, 2K negatives each) with published "
             f"hyperparameters "
             f"(configs/<dataset>_grace.yaml: GRACE config.yaml for Planetoid, GCA params for "
             f"Amazon/Coauthor). Probe: batched logistic regression, {args.seeds} seeds, "
             f"L2-normalized embeddings; public split for Planetoid, seeded random 1:1:8 splits "
             f"otherwise. Each row's 'threads' is the torch thread count of its run on the 2-core "
             f"CPU. Budget {args.budget:.0f} s of training per dataset; fewer epochs than "
             f"published (ran/published) on: {', '.join(short) or 'none'}: those rows measure cost "
             f"and early-training accuracy, not GRACE's converged accuracy. Implementation check "
             f"on Cora embeddings (200 epochs) with GRACE's own protocol (L2-normalized, random "
             f"10%/90%, sklearn LR with C grid, 3 repeats): 83.65 +- 0.45, vs 83.14 +- 1.05 "
             f"measured for the official code on this machine. Probe normalization on the same "
             f"embeddings, public split: standardize 77.6, l2 80.8 (the default since).")
    if args.collect:
        notes += (" Rows assembled (--collect) from the finished per-dataset runs under "
                  "bench/results/_work/grace-<dataset>; datasets without a finished run are absent.")
    write_results("grace", rows, f"{notes} {args.note}".strip())


if __name__ == "__main__":
    main()
