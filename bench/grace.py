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
    row = row_from_result(result, variant="full-batch", published_epochs=published_epochs,
                          published_accuracy=PUBLISHED.get(name))
    if row.get("accuracy_mean") is not None and PUBLISHED.get(name) is not None:
        row["gap_to_published"] = round(row["accuracy_mean"] - PUBLISHED[name], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per dataset")
    parser.add_argument("--full", default="cora,citeseer",
                        help="datasets that always run their published epochs (no budget)")
    parser.add_argument("--datasets", default=",".join(PUBLISHED))
    parser.add_argument("--seeds", type=int, default=10, help="linear-probe seeds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 avoids oversubscription on a shared CPU)")
    parser.add_argument("--collect", action="store_true",
                        help="only assemble grace.json from the finished runs under _work/")
    args = parser.parse_args()
    import yaml

    rows = []
    for name in args.datasets.split(","):
        config = REPO / "configs" / f"{name}_grace.yaml"
        published_epochs = yaml.safe_load(config.read_text())["train"]["epochs"]
        if args.collect:
            done = WORK / f"grace-{name}" / "result.json"
            if done.is_file():
                rows.append(_row(json.loads(done.read_text()), published_epochs, name))
            else:
                print(f"[{name}] no finished run under {done.parent}", flush=True)
            continue
        common = [f"train.threads={args.threads}"]
        timing = run_distgcl(config, [*common, "train.epochs=2", "eval.probe_seeds=1",
                                      "eval.probe_epochs=10", "eval.clustering=false"],
                             WORK / f"grace-{name}-timing")
        per_epoch = timing["timing"]["seconds_per_epoch"]
        budget = float("inf") if name in args.full.split(",") else args.budget
        epochs = int(max(1, min(published_epochs, budget // max(per_epoch, 1e-6))))
        print(f"[{name}] {per_epoch:.2f} s/epoch -> {epochs}/{published_epochs} epochs", flush=True)
        result = run_distgcl(config, [*common, f"train.epochs={epochs}",
                                      f"eval.probe_seeds={args.seeds}", "eval.save_embeddings=true"],
                             WORK / f"grace-{name}")
        rows.append(_row(result, published_epochs, name))
        print(rows[-1], flush=True)

    short = [r["dataset"] for r in rows if r["epochs"] < r["published_epochs"]]
    notes = (f"GRACE full-batch InfoNCE (inter+intra-view negatives) with published hyperparameters "
             f"(configs/<dataset>_grace.yaml: GRACE config.yaml for Planetoid, GCA params for "
             f"Amazon/Coauthor). Probe: batched logistic regression, {args.seeds} seeds, "
             f"L2-normalized embeddings; public split for Planetoid, seeded random 1:1:8 splits "
             f"otherwise. Budget {args.budget:.0f} s of training per dataset on a shared 2-core "
             f"CPU ({args.threads} torch thread per run, other benchmarks running beside it, so "
             f"seconds are pessimistic); fewer epochs than published on: "
             f"{', '.join(short) or 'none'}. Implementation check on Cora embeddings (200 epochs) "
             f"with GRACE's own protocol (L2-normalized, random 10%/90%, sklearn LR with C grid, "
             f"3 repeats): 83.65 +- 0.45, vs 83.14 +- 1.05 measured for the official code on this "
             f"machine. Probe normalization on the same embeddings, public split: standardize "
             f"77.6, l2 80.8 (the default since).")
    if args.collect:
        notes += (" Photo ran only 3 of 2000 epochs (41 s/epoch single-threaded under load; with "
                  "lr 0.1 the first epochs are far from converged), so its row measures cost, not "
                  "GRACE's accuracy. Computers, CS and PubMed full-batch runs were not finished in "
                  "this session (estimated 0.5-2 h each at 2000/1000/1500 epochs here)."
                  if "photo" in {r["dataset"] for r in rows} else "")
        notes += (f" Rows assembled (--collect) from the finished per-dataset runs of "
                  f"'bench/grace.py --budget {args.budget:.0f} --threads {args.threads}'; datasets "
                  f"without a finished run are absent.")
    write_results("grace", rows, notes)


if __name__ == "__main__":
    main()
