"""Quality per minute on the proteins-shaped graph -> bench/results/quality_time.{json,png}.

    unshare -n sh -c 'ip link set lo up && ../shared/tools/quiet python bench/quality_time.py
        [--scale 1] [--methods e2neg,nml,grace] [--workers 2] [--budget-minutes 30]
        [--epochs-list 1,2,4,...] [--max-epochs 512] [--e2neg-epochs 10,25,50,100,200]
        [--probe-seeds 3] [--work bench/results/_work/scale] [--out bench/results] [--note TEXT]'

Each method's test ROC-AUC (linear probe, ogb's Evaluator on the species split) against its
training time, after 1, 2, 4, 8 ... epochs, beside the supervised MLP and GraphSAGE references of
the same scale (read from ``bench/results/proteins_reference.json``, not retrained).

One training trajectory per method: the point at ``E`` epochs is ``distgcl train
configs/proteins_<method>.yaml --num-workers W --run-name qt-<method>-s<scale>-w<W>`` with
``train.epochs=E`` in the same run directory as the previous point, so it resumes from the
previous point's final checkpoint (``distgcl.train.run_training`` takes the epoch counter, weights,
optimizer state, every rank's random streams and the epoch records from it; nothing in the loop
depends on ``train.epochs`` except where it stops, so the curve is the one uninterrupted run).
``dist.checkpoint_every = E * steps_per_epoch`` puts exactly one checkpoint on each run's last
step; after every run the script checks that it is there and that the run resumed from the
previous one (``resumes.jsonl``).

Training time of a point = the sum of ``seconds`` over the run's ``metrics.jsonl`` epochs (the
optimizer steps only: no data load, no prepare step, no checkpoints, no embedding or probe).
A method stops at ``--budget-minutes`` of training; a point that would overrun it is cut to the
epochs that fit at the measured seconds per epoch (if that adds at least a quarter of the epochs
done; else the curve ends at the previous point).

The graph and its cache follow ``distgcl bench scale``'s layout
(``<work>/scale-1``, ``<work>/scale-1_4``, ...): generated there with ``distgcl generate proteins``
only where missing. Finished points are appended to ``<work>/quality_time_partial.jsonl``; an
interrupted run continues from its last point (``--restart``: start every method over).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import REPO, RESULTS, load_fields, write_results  # noqa: E402

from distgcl.benchmarks.scale import (  # noqa: E402 - the sweep's layout and measuring
    Sweep, _generate, _paths, _scale_name, run_measured)

CONFIGS = REPO / "configs"
REFERENCE_FILE = RESULTS / "proteins_reference.json"
DEFAULT_E2NEG_EPOCHS = "10,25,50,100,200"  # E2Neg's epochs cost ~0.05 s: its own, longer list


# ------------------------------------------------------------------------------ arguments

def _epochs(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 1,2,4,8 (got {text!r})") from None
    if not values or min(values) < 1 or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"epochs must be increasing integers >= 1 (got {text!r})")
    return values


def _scale(text: str) -> str:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"scale must look like 1, 1/4 or 0.25 (got {text!r})") \
            from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"scale must be > 0 (got {text!r})")
    return _scale_name(float(value))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=_scale, default="1", help="fraction of ogbn-proteins (1, 1/4)")
    p.add_argument("--methods", default="e2neg,nml,grace")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per run")
    p.add_argument("--epochs-list", type=_epochs, default=None,
                   help="epochs of the curve's points (default: 1,2,4,... up to --max-epochs)")
    p.add_argument("--e2neg-epochs", type=_epochs, default=_epochs(DEFAULT_E2NEG_EPOCHS),
                   help=f"E2Neg's points (default {DEFAULT_E2NEG_EPOCHS})")
    p.add_argument("--max-epochs", type=int, default=512, help="no point beyond this many epochs")
    p.add_argument("--budget-minutes", type=float, default=30.0,
                   help="training minutes per method (the sum of metrics.jsonl seconds)")
    p.add_argument("--probe-seeds", type=int, default=3, help="eval.probe_seeds of every point")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--shards", type=int, default=2, help="E2Neg's graph-shard actors (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra KEY=VALUE override for every run (repeatable)")
    p.add_argument("--work", type=Path, default=REPO / "bench/results/_work/scale",
                   help="graphs, caches, runs and logs (distgcl bench scale's layout)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where quality_time.json/.png go")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds per distgcl train run")
    p.add_argument("--restart", action="store_true", help="ignore finished points, start over")
    p.add_argument("--note", default="", help="text appended to the file's notes")
    args = p.parse_args(argv)
    bad = [m for m in args.methods.split(",") if not (CONFIGS / f"proteins_{m}.yaml").is_file()]
    if bad:
        p.error(f"no configs/proteins_<method>.yaml for {', '.join(bad)}")
    for name, low in (("workers", 1), ("max_epochs", 1), ("probe_seeds", 1), ("threads", 1),
                      ("shards", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}")
    if not args.budget_minutes > 0:
        p.error("--budget-minutes must be > 0")
    return args


def epoch_points(args: argparse.Namespace, method: str) -> list[int]:
    """The method's curve points, at most ``--max-epochs`` (that one alone if none is left)."""
    if method.startswith("e2neg"):
        points = args.e2neg_epochs
    elif args.epochs_list is not None:
        points = args.epochs_list
    else:
        points = [2 ** i for i in range(args.max_epochs.bit_length())]
    return [e for e in points if e <= args.max_epochs] or [args.max_epochs]


# ------------------------------------------------------------------------------ one run

def _steps_per_epoch(method: str, overrides: list[str], nodes: int, workers: int) -> int:
    """Optimizer steps per epoch on every rank, as the methods count them
    (``Work.steps_per_epoch``: ``ceil(ceil(anchors / W) / batch)``, capped by
    ``batches_per_epoch``). Needed before the first run to put its checkpoint on its last step;
    every run's ``result.json`` confirms it (:func:`_check_run`)."""
    import math

    import distgcl.methods  # noqa: F401 - registers the method sections
    from distgcl.config import load_config

    config = load_config(CONFIGS / f"proteins_{method}.yaml", overrides)
    section = config.section(config.method)

    def per_rank(anchors: int, batch: int, cap: int = 0) -> int:
        steps = math.ceil(math.ceil(anchors / workers) / batch)
        return min(steps, cap) if cap else steps

    if config.method == "nml" and section.mode != "full":
        return per_rank(nodes, section.batch_size, section.batches_per_epoch)
    if config.method == "grace" and section.batching == "parts":
        return per_rank(section.num_parts, 1)
    return 1  # full-batch objectives (E2Neg, GRACE full or sampled, NML full)


def _train_command(args: argparse.Namespace, method: str, epochs: int, every: int,
                   name: str, storage: Path, root: Path, cache: Path) -> list[str]:
    sets = [f"data.root={root}", f"data.cache={cache}", f"train.threads={args.threads}",
            "train.progress=false", f"train.seed={args.seed}", "dist.max_failures=0",
            f"train.epochs={epochs}", f"dist.checkpoint_every={every}",
            f"eval.probe_seeds={args.probe_seeds}"]
    if method.startswith("e2neg") and args.shards:
        sets.append(f"dist.shards={args.shards}")
    cmd = [sys.executable, "-m", "distgcl.cli", "train", str(CONFIGS / f"proteins_{method}.yaml"),
           "--num-workers", str(args.workers), "--run-name", name, "--storage", str(storage)]
    for item in [*sets, *args.overrides]:
        cmd += ["--set", item]
    return cmd


def _check_run(run_dir: Path, epochs: int, steps: int, previous: int,
               records: list[dict[str, Any]]) -> int | None:
    """The run trained up to ``epochs``, left its checkpoint on its last step and (after the
    first point) resumed from the previous point's; returns the step it resumed from."""
    from distgcl.checkpoint import CheckpointManager

    if len(records) != epochs or [r["epoch"] for r in records] != list(range(1, epochs + 1)):
        raise RuntimeError(f"{run_dir}: metrics.jsonl has epochs {[r['epoch'] for r in records]}"
                           f", expected 1..{epochs}")
    last = epochs * steps
    if last not in CheckpointManager(run_dir).steps():
        raise RuntimeError(f"{run_dir}: no checkpoint at step {last} (epoch {epochs} x {steps} "
                           "steps): the next point could not resume from this one")
    resumes = run_dir / "resumes.jsonl"
    lines = [json.loads(x) for x in resumes.read_text().splitlines()] if resumes.exists() else []
    from_step = lines[-1].get("from_step") if lines and previous else None
    if previous and from_step != previous * steps:
        raise RuntimeError(f"{run_dir}: resumed from step {from_step}, expected "
                           f"{previous * steps} (the end of epoch {previous})")
    return from_step


def run_point(args: argparse.Namespace, method: str, epochs: int, previous: int,
              steps: int, name: str, storage: Path, root: Path, cache: Path) -> dict[str, Any]:
    """Train ``method`` on to ``epochs`` (resuming at ``previous``), evaluate; its row."""
    cmd = _train_command(args, method, epochs, epochs * steps, name, storage, root, cache)
    log = args.work / "logs" / f"quality_time-{name}-e{epochs}.log"
    measured = run_measured(cmd, log, args.timeout)
    run_dir = storage / name
    result = json.loads((run_dir / "result.json").read_text())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    actual = result["timing"]["steps_per_epoch"]
    if actual != steps:
        raise RuntimeError(f"{method}: {actual} steps per epoch, this script expected {steps}: "
                           "fix _steps_per_epoch (the checkpoint did not land on the last step)")
    from_step = _check_run(run_dir, epochs, steps, previous, records)
    metrics, timing = result["metrics"], result["timing"]
    train_seconds = sum(r["seconds"] for r in records)
    segment = sum(r["seconds"] for r in records[previous:])
    return {"dataset": "proteins-synthetic", "method": method, "scale": float(Fraction(args.scale)),
            "variant": f"workers={args.workers}", "epochs": epochs,
            "train_seconds": round(train_seconds, 2),
            "train_minutes": round(train_seconds / 60, 3),
            "rocauc_mean": round(metrics["rocauc_mean"], 2),
            "rocauc_std": round(metrics.get("rocauc_std") or 0.0, 2),
            "seeds": args.probe_seeds, "probe_seeds": args.probe_seeds,
            "workers": args.workers, "threads": args.threads,
            "resumed_from_epoch": previous or None, "resumed_from_step": from_step,
            "steps_per_epoch": steps,
            "seconds_per_epoch": round(segment / max(epochs - previous, 1), 4),
            "loss": round(records[-1]["loss"], 5),
            "eval_seconds": round(timing["eval_seconds"], 2),
            "probe_seconds": round((metrics.get("probe") or {}).get("seconds") or 0.0, 2),
            "prepare_seconds": round(timing["prepare_seconds"], 2),
            "wall_seconds": measured["seconds"],
            "processes_peak_rss_mb": measured["tree_peak_rss_mb"],
            "run_command": " ".join(shlex.quote(c) for c in cmd), **load_fields()}


# ------------------------------------------------------------------------------ one method

def _partial(args: argparse.Namespace) -> Path:
    return args.work / "quality_time_partial.jsonl"


def _key(args: argparse.Namespace, method: str) -> dict[str, Any]:
    return {"scale": args.scale, "method": method, "workers": args.workers,
            "probe_seeds": args.probe_seeds, "seed": args.seed, "overrides": args.overrides}


def _finished(args: argparse.Namespace, method: str) -> list[dict[str, Any]]:
    path = _partial(args)
    if args.restart or not path.exists():
        return []
    key = _key(args, method)
    return [rec["row"] for rec in map(json.loads, path.read_text().splitlines())
            if rec["key"] == key]


def curve(args: argparse.Namespace, method: str, root: Path, cache: Path,
          nodes: int) -> list[dict[str, Any]]:
    """Every point of one method's trajectory (finished ones from the partial file)."""
    storage = (args.work / "runs").resolve()
    name = f"qt-{method}-s{args.scale.replace('/', '_')}-w{args.workers}"
    rows = _finished(args, method)
    if not rows and (storage / name).exists():  # a stale trajectory: never continue it unseen
        shutil.rmtree(storage / name)
    steps = _steps_per_epoch(method, args.overrides, nodes, args.workers)
    budget = args.budget_minutes * 60
    previous = rows[-1]["epochs"] if rows else 0
    for target in epoch_points(args, method):
        if target <= previous:
            continue
        done = rows[-1]["train_seconds"] if rows else 0.0
        if rows and done >= budget:
            break
        capped = False
        if rows:  # cut the point that would overrun the budget to the epochs that still fit
            per_epoch = done / previous
            fits = previous + int((budget - done) // per_epoch) if per_epoch > 0 else target
            if fits < target:
                if fits - previous < max(1, previous // 4):  # not worth another evaluation
                    break
                target, capped = fits, True
        print(f"{method}: epochs {previous} -> {target} ...", flush=True)
        row = run_point(args, method, target, previous, steps, name, storage, root, cache)
        row["budget_capped"] = capped
        rows.append(row)
        with _partial(args).open("a") as fh:
            fh.write(json.dumps({"key": _key(args, method), "row": row}) + "\n")
        print(f"  ROC-AUC {row['rocauc_mean']} +- {row['rocauc_std']} after "
              f"{row['train_seconds']:.1f} s of training ({row['wall_seconds']:.0f} s wall)",
              flush=True)
        previous = target
        if capped:
            break
    return rows


# ------------------------------------------------------------------------------ references

def reference_rows(scale: str) -> list[dict[str, Any]]:
    """The MLP and GraphSAGE rows of ``proteins_reference.json`` at ``scale`` on the default
    node features (the ones the GCL configs use), marked as read, not retrained."""
    from distgcl.config import DataConfig

    if not REFERENCE_FILE.exists():
        return []
    payload = json.loads(REFERENCE_FILE.read_text())
    value = float(Fraction(scale))
    features = DataConfig().proteins_node_features
    out = []
    for r in payload["rows"]:
        if r.get("reference") not in ("mlp", "graphsage") or r.get("features") != features \
                or abs(r.get("scale", -1) - value) > 1e-9:
            continue
        out.append({"dataset": r["dataset"], "method": "supervised",
                    "reference": r["reference"], "scale": value,
                    "variant": f"reference, scale={r['scale']:g}", "features": features,
                    "epochs": r["epochs"], "train_seconds": r["seconds"],
                    "rocauc_mean": r["rocauc_mean"], "rocauc_std": None, "seeds": r["seeds"],
                    "workers": 1,
                    "source": f"{REFERENCE_FILE.relative_to(REPO)} (created {payload['created']}"
                              "): read, not retrained; its seconds include evaluation",
                    # that file predates the load fields; its notes say the machine was shared
                    "contended": True, "load_before": None, "load_after": None,
                    "command": payload["command"]})
    return out


# ------------------------------------------------------------------------------ output

def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """ROC-AUC against training minutes: one line per method (std as error bars), the
    references as dashed horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    methods = [r["method"] for r in rows if "reference" not in r]
    for method in dict.fromkeys(methods):
        pts = [r for r in rows if r["method"] == method and "reference" not in r]
        ax.errorbar([r["train_seconds"] / 60 for r in pts], [r["rocauc_mean"] for r in pts],
                    yerr=[r["rocauc_std"] for r in pts], marker="o", ms=4, capsize=2,
                    label=f"{method} (epochs {pts[0]['epochs']}..{pts[-1]['epochs']})")
    for r, color in zip([r for r in rows if "reference" in r], ("tab:gray", "black")):
        ax.axhline(r["rocauc_mean"], ls="--", lw=1.2, color=color,
                   label=f"{r['reference']} reference ({r['rocauc_mean']:.2f}, not retrained)")
    ax.set_xlabel("training minutes (sum of epoch seconds; no load, prepare or evaluation)")
    ax.set_ylabel("test ROC-AUC (%)")
    ax.set_xlim(left=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def notes(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    refs = [r for r in rows if "reference" in r]
    shards = args.shards and any(m.startswith("e2neg") for m in args.methods.split(","))
    stops = []
    for method in args.methods.split(","):
        pts = [r for r in rows if r["method"] == method]
        if pts:
            stops.append(f"{method}: {len(pts)} points, last at {pts[-1]['epochs']} epochs, "
                         f"{pts[-1]['train_seconds'] / 60:.1f} training min, ROC-AUC "
                         f"{pts[-1]['rocauc_mean']}")
    return (
        f"Test ROC-AUC against training time on distgcl's ogbn-proteins-shaped graph (distgcl "
        f"generate proteins, scale {args.scale}, seed {args.seed}), configs/proteins_<method>.yaml "
        f"on {args.workers} Ray Train workers, {args.threads} torch thread(s) each"
        f"{f', E2Neg with {args.shards} graph-shard actors' if shards else ''}. One "
        "trajectory per method: each point reruns the same --run-name/--storage with a larger "
        "train.epochs and resumes from the previous point's final checkpoint "
        "(dist.checkpoint_every = epochs x steps_per_epoch; the script checks the checkpoint "
        "and resumes.jsonl after every run), so the points lie on one uninterrupted run. "
        "train_seconds = sum of metrics.jsonl epoch seconds up to that point: optimizer steps "
        "only, without data load, prepare (E2Neg's spectral step: a resumed point takes it from "
        "the checkpoint), checkpoints, embedding and probe (eval_seconds, probe_seconds, "
        "wall_seconds are in the "
        f"rows). Linear probe with eval.probe_seeds={args.probe_seeds} per point (rocauc_std "
        f"over them). Budget {args.budget_minutes:g} training minutes per method; a point that "
        "would overrun it is cut to the epochs that fit (budget_capped). "
        + ("References: " + ", ".join(f"{r['reference']} {r['rocauc_mean']}" for r in refs)
           + " from bench/results/proteins_reference.json at the same scale, not retrained "
           "(their seconds include evaluation and were taken on a shared machine). "
           if refs else "No reference rows at this scale in bench/results/proteins_reference."
           "json. ")
        + "; ".join(stops) + ".")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.restart:
        _partial(args).unlink(missing_ok=True)
    sweep = Sweep(work=args.work, seed=args.seed, timeout=args.timeout)
    root, cache = _paths(sweep, args.scale)
    info_path = root / "ogbn_proteins" / "distgcl_generated.json"
    if not info_path.exists():
        print(f"generating the scale-{args.scale} graph into {root} ...", flush=True)
        _generate(sweep, args.scale)
    nodes = json.loads(info_path.read_text())["num_nodes"]
    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        rows += curve(args, method, root, cache, nodes)
    rows += reference_rows(args.scale)
    common.RESULTS = args.out  # write_results writes into RESULTS
    write_results("quality_time", rows, f"{notes(args, rows)} {args.note}".strip())
    plot(rows, args.out / "quality_time.png",
         f"proteins-synthetic scale {args.scale}, {args.workers} workers: ROC-AUC vs training time")
    print(f"wrote {args.out / 'quality_time.png'}")


if __name__ == "__main__":
    main()
