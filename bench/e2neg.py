"""E2Neg benchmarks -> bench/results/e2neg.json (format: shared/reference/bench-results.md).

    DISTGCL_DATA=../shared/data python bench/e2neg.py [--parts accuracy,grace,ksweep]
        [--max-epochs 300] [--datasets pubmed,photo,...] [--ksweep-dataset photo]

Parts (each in fresh ``distgcl train`` processes, so peak RSS is per row):

* ``accuracy``: E2Neg and E2Neg+NML (configs/<dataset>_e2neg[_nml].yaml), 10-seed linear probe.
* ``grace``: E2Neg vs GRACE side by side on PubMed and Physics: seconds per epoch and peak RSS,
  with ``speedup_vs_grace`` (GRACE s/epoch / E2Neg s/epoch) and ``memory_ratio_vs_grace``
  (E2Neg / GRACE peak RSS). GRACE full-batch is slow here, so it runs a few epochs only.
* ``published``: E2Neg at the paper's epoch count (not capped) on --datasets, with clustering.
* ``ksweep``: E2Neg with clusters K in {10, 25, 50, 100, 200} on one dataset.

Every part stores its rows in bench/results/_work/e2neg-<part>.json; the final file holds the
rows of all parts run so far, so parts can be (re)run separately.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, row_from_result, run_distgcl, write_results  # noqa: E402

DATASETS = ["pubmed", "photo", "computers", "cs", "physics", "cora", "citeseer"]
COMMON: list[str] = []  # set from --threads in main()


def _config(dataset: str, nml: bool = False) -> Path:
    return REPO / "configs" / f"{dataset}_e2neg{'_nml' if nml else ''}.yaml"


def _epochs(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["train"]["epochs"])


def _row(result: dict[str, Any], method: str, **extra: Any) -> dict[str, Any]:
    row = row_from_result(result, **extra)
    row["method"] = method
    timing = result["timing"]
    row["prepare_seconds"] = round(timing.get("prepare_seconds", 0.0), 2)
    row["eval_seconds"] = round(timing.get("eval_seconds", 0.0), 2)
    row["probe_normalize"] = result["config"]["eval"]["normalize"]
    return row


def _accuracy_row(result: dict[str, Any], method: str, variant: str,
                  published_epochs: int) -> dict[str, Any]:
    """A 10-seed accuracy row (parts accuracy and published)."""
    row = _row(result, method, variant=variant, published_epochs=published_epochs,
               clusters=result["config"]["e2neg"]["clusters"],
               probe_epochs=result["config"]["eval"]["probe_epochs"])
    print(row, flush=True)
    return row


def _probe(args: argparse.Namespace) -> list[str]:
    return ["eval.probe_seeds=10", f"eval.probe_epochs={args.probe_epochs}",
            f"eval.probe_eval_every={args.probe_eval_every}", "eval.clustering=false"]


def part_accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.datasets.split(","):
        for nml in (False, True):
            config = _config(name, nml)
            published = _epochs(config)
            epochs = min(published, args.max_epochs)
            out = WORK / f"e2neg-acc-{name}-{int(nml)}"
            if args.resume and (out / "result.json").is_file():
                result = json.loads((out / "result.json").read_text())  # an earlier run's row
            elif args.skip_missing:
                print(f"[{name}{'+nml' if nml else ''}] no result yet: skipped", flush=True)
                continue
            else:
                result = run_distgcl(config, [*COMMON, f"train.epochs={epochs}", *_probe(args)],
                                     out)
            rows.append(_accuracy_row(result, "e2neg+nml" if nml else "e2neg", "full-batch",
                                      published))
    return rows


def part_published(args: argparse.Namespace) -> list[dict[str, Any]]:
    """E2Neg (no NML) at the paper's epoch count on --datasets, default probe settings."""
    rows = []
    for name in args.datasets.split(","):
        config = _config(name)
        published = _epochs(config)
        result = run_distgcl(config, [*COMMON, f"train.epochs={published}",
                                      "eval.probe_seeds=10", "eval.clustering=true"],
                             WORK / f"e2neg-published-{name}")
        rows.append(_accuracy_row(result, "e2neg", "published-epochs", published))
    return rows


def part_grace(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    # Minimal evaluation in this part (1 probe seed, 10 probe epochs, no clustering): the rows
    # measure training cost; peak RSS then is training + one full-graph embedding pass.
    light_eval = ["eval.probe_seeds=1", "eval.probe_epochs=10", "eval.clustering=false"]
    for name, grace_epochs in (("pubmed", args.grace_epochs), ("physics", args.grace_epochs)):
        e2 = run_distgcl(_config(name), [*COMMON, *light_eval, f"train.epochs={args.e2neg_epochs}"],
                         WORK / f"e2neg-vs-grace-{name}-e2neg")
        gr = run_distgcl(REPO / "configs" / f"{name}_grace.yaml",
                         [*COMMON, *light_eval, f"train.epochs={grace_epochs}"],
                         WORK / f"e2neg-vs-grace-{name}-grace")
        g_row = _row(gr, "grace", variant="full-batch")
        e_row = _row(e2, "e2neg", variant="full-batch")
        e_row["speedup_vs_grace"] = round(g_row["seconds_per_epoch"] / e_row["seconds_per_epoch"],
                                          1)
        e_row["memory_ratio_vs_grace"] = round(e_row["peak_rss_mb"] / g_row["peak_rss_mb"], 3)
        if "training_extra_mb" in e_row and "training_extra_mb" in g_row:
            # the training phase's own memory (what a GPU would hold), without the process,
            # libraries and dataset both methods share
            e_row["training_memory_ratio_vs_grace"] = round(
                e_row["training_extra_mb"] / max(g_row["training_extra_mb"], 1e-9), 4)
        rows += [g_row, e_row]
        print(g_row, e_row, sep="\n", flush=True)
    return rows


def part_ksweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    name = args.ksweep_dataset
    config = _config(name)
    epochs = min(_epochs(config), args.max_epochs)
    for k in (10, 25, 50, 100, 200):
        out = WORK / f"e2neg-ksweep-{name}-{k}"
        if args.resume and (out / "result.json").is_file():
            result = json.loads((out / "result.json").read_text())  # an earlier run's row
        else:
            result = run_distgcl(config, [*COMMON, f"train.epochs={epochs}",
                                          f"e2neg.clusters={k}", *_probe(args)], out)
        row = _row(result, "e2neg", variant=f"k={k}", k=k,
                   probe_epochs=result["config"]["eval"]["probe_epochs"])
        rows.append(row)
        print(row, flush=True)
    return rows


PARTS = {"accuracy": part_accuracy, "published": part_published, "grace": part_grace,
         "ksweep": part_ksweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="accuracy,grace,ksweep")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--max-epochs", type=int, default=300,
                        help="cap on the configs' (paper) epoch counts, for the time budget")
    parser.add_argument("--grace-epochs", type=int, default=2)
    parser.add_argument("--e2neg-epochs", type=int, default=100)
    parser.add_argument("--ksweep-dataset", default="photo")
    parser.add_argument("--probe-epochs", type=int, default=1000)
    parser.add_argument("--probe-eval-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 keeps timings stable on a shared CPU)")
    parser.add_argument("--resume", action="store_true",
                        help="accuracy, ksweep: reuse the result.json of rows already run")
    parser.add_argument("--skip-missing", action="store_true",
                        help="accuracy: only collect rows already run (run nothing)")
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()

    COMMON[:] = [f"train.threads={args.threads}"]
    WORK.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        rows = PARTS[part](args)
        (WORK / f"e2neg-{part}.json").write_text(json.dumps({"args": vars(args), "rows": rows},
                                                            indent=2))
    rows, used = [], []
    for part in PARTS:
        path = WORK / f"e2neg-{part}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            rows += saved["rows"]
            used.append(f"{part}: {saved['args']}")
    notes = (
        "E2Neg = spectral centres (K smallest eigenvectors of the normalized Laplacian, torch "
        "LOBPCG tol 1e-4, largest connected component) + star reconstruction + centre-only "
        "InfoNCE; E2Neg+NML adds NML-GCL's negative metric network on the centre negatives. "
        "Configs: configs/<dataset>_e2neg[_nml].yaml (appendix hyperparameters; projection-head "
        "hidden width 512 instead of the paper's out x out; views = per-view centre permutation "
        "+ edge dropping 0.2/0.3 + feature masking 0.1/0.2). "
        "Epochs capped at --max-epochs in part accuracy (paper: PubMed/CS 1500, Photo/Physics "
        "600, Computers 200; each row has epochs and published_epochs); part published runs the "
        "paper's count. Probe: the trainer's linear probe, 10 seeds, embeddings normalized as "
        "each row's probe_normalize says (the accuracy rows were run when standardize was the "
        "default; l2 since), probe_epochs per row (1000 on 4096-d embeddings takes 5 min per row "
        "on Photo here, so some rows use fewer); public split for Cora/CiteSeer/PubMed, random "
        "1:1:8 otherwise; clustering metrics only in part published. Torch threads per run: "
        "--threads of each part (below); the 2-core CPU was shared with other benchmarks, so "
        "timings are noisy. grace rows: GRACE at configs/<d>_grace.yaml (PubMed: unchunked "
        "N x N, as the paper; Physics: chunk_size 2048, since its N x N matrices do not fit in "
        "24 GB) for --grace-epochs epochs, E2Neg for --e2neg-epochs; both with a light "
        "evaluation (1 probe seed, 10 probe epochs). peak_rss_mb is the whole process "
        "(interpreter, libraries, dataset, training, one full-graph embedding); "
        "training_extra_mb is the rise of RSS during the training epochs alone (the analogue of "
        "the GPU memory papers report), and training_memory_ratio_vs_grace compares those. "
        "seconds_per_epoch excludes E2Neg's one-off prepare_seconds (spectral step, k-means, "
        "stars; cached on disk). "
        "Parts and arguments: " + "; ".join(used))
    write_results("e2neg", rows, f"{notes} {args.note}".strip())


if __name__ == "__main__":
    main()
