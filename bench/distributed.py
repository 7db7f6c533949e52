"""Ray Train against the single-process loop, side by side -> bench/results/distributed.json.

    unshare -n sh -c 'ip link set lo up; DISTGCL_DATA=../shared/data python bench/distributed.py'
        [--methods nml,grace,grace-parts] [--nml-epochs 3] [--grace-epochs 40] [--no-kill]
        [--prefetch on|off|both]

PubMed, NML-GCL mini-batch (B = K = 1024, fan-out [10, 10]), GRACE with K = 1024 sampled
negatives and GRACE on random parts (``--methods grace-parts``: 20 parts an epoch, all negatives
within the part), each as: the single-process loop, Ray Train with 1 worker and with 2 workers, every
process on ``--threads`` torch threads (1: the two workers fill this 2-core machine). Same seed,
same epochs, same checkpoint cadence (local checkpoints for the single-process loop). Per row:
accuracy (10-seed probe), seconds per epoch, anchors per second (summed over ranks, and per
rank), peak RSS of every worker process and of the driver. Ratios: ``throughput_ratio_vs_1_worker``
(anchors/s over the 1-worker row's), ``overhead_vs_single_process`` (s/epoch over the
single-process loop's), ``accuracy_gap_vs_1_worker``.

Kill-and-resume (NML, 2 workers): rank 1 is SIGKILLed by pid after its first checkpoint past
the first third of the run; reported are the seconds from the kill to the first new step (the
run's ``resumes.jsonl``), the steps redone (the step the chief had reached, from its
``progress.json`` heartbeat, minus the checkpoint it resumed from), and whether the final numbers
equal the uninterrupted 2-worker run's (same seed, same worker count).

``--prefetch on|off|both``: the next batch sampled on a background thread (``train.prefetch``,
the default) or on the step's thread. On this 2-core machine the thread gives the single-process
and 1-worker rows the second core for sampling, which 2 workers (one core each) cannot have:
``both`` measures the two settings side by side, each row's ratios against the rows of its own
setting.

Every row runs in its own process (``distgcl train``; Ray rows start their own local Ray), so its
memory figures are its own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, row_from_result, run_distgcl, write_results  # noqa: E402

GRACE_PARTS = 20
METHODS = {
    "nml": ("configs/pubmed_nml.yaml",
            ["nml.mode=minibatch", "nml.batch_size=1024", "nml.num_negatives=1024",
             "nml.num_neighbors=[10,10]"]),
    "grace": ("configs/pubmed_grace.yaml",
              ["grace.negatives=sampled", "grace.num_negatives=1024"]),
    # the GRACE that scales: each rank trains on its own random parts (induced subgraphs), where
    # `negatives: sampled` runs the whole-graph encoder on every rank
    "grace-parts": ("configs/pubmed_grace.yaml",
                    ["grace.batching=parts", f"grace.num_parts={GRACE_PARTS}"]),
}


def _fresh(path: Path) -> Path:
    """An empty run folder: a leftover checkpoint would make the row resume instead of train."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def _overrides(method: str, epochs: int, threads: int, every: int) -> list[str]:
    _, extra = METHODS[method]
    return [*extra, f"train.epochs={epochs}", f"train.threads={threads}",
            f"train.checkpoint_every={every}", "dist.max_failures=2"]


def _row(result: dict[str, Any], variant: str, workers: int) -> dict[str, Any]:
    row = row_from_result(result, variant=variant, workers=workers)
    row["method"] = result["method"]
    tp = result.get("throughput", {})
    row["anchors_per_second"] = round(tp.get("anchors_per_second", 0.0), 1)
    row["anchors_per_second_per_rank"] = [round(x or 0.0, 1)
                                          for x in tp.get("anchors_per_second_per_rank", [])]
    mem = result["memory"]
    row["workers_peak_rss_mb"] = [round(x, 1) for x in mem.get("workers_peak_rss_mb", [])]
    if mem.get("driver_peak_rss_mb") is not None:
        row["driver_peak_rss_mb"] = round(mem["driver_peak_rss_mb"], 1)
    row["wall_seconds"] = round(result["wall_seconds"], 1)
    row["steps_per_epoch"] = result["timing"].get("steps_per_epoch")
    return row


def _kill_and_resume(method: str, epochs: int, threads: int, every: int,
                     clean: dict[str, Any]) -> dict[str, Any]:
    config, _ = METHODS[method]
    out = _fresh(WORK / "distributed" / f"{method}-kill")
    cmd = [sys.executable, "-m", "distgcl.cli", "train", config, "--out", str(out),
           "--set", "train.progress=false", "--set", "dist.num_workers=2"]
    for item in _overrides(method, epochs, threads, every):
        cmd += ["--set", item]
    from distgcl.checkpoint import CheckpointManager

    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    total = epochs * clean["steps_per_epoch"]
    target = max(every, (total // 3) // every * every)
    manager = CheckpointManager(out)
    while target not in manager.steps():
        if proc.poll() is not None:
            raise RuntimeError(f"run ended before step {target}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(1.0)  # rank 1 is into the next steps
    pid = int((out / "workers" / "rank-1.pid").read_text())
    reached = json.loads((out / "progress.json").read_text())["global_step"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"killed run failed: {err[-2000:]}")
    resume = json.loads((out / "resumes.jsonl").read_text().splitlines()[-1])
    result = json.loads((out / "result.json").read_text())
    clean_losses = [json.loads(x)["loss"] for x in
                    (Path(clean["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"dataset": "pubmed", "method": method, "variant": "workers=2 kill-and-resume",
            "workers": 2, "killed_after_step": reached, "resumed_from_step": resume["from_step"],
            "steps_redone": reached - resume["from_step"],
            "seconds_kill_to_first_new_step": round(resume["first_step_done"] - killed_at, 2),
            "accuracy_mean": round(result["metrics"]["accuracy_mean"], 2),
            "same_numbers_as_uninterrupted": losses == clean_losses and
            result["metrics"]["accuracy_mean"] == clean["accuracy_raw"],
            "checkpoint_every_steps": every}


def _full_batch_equivalence(epochs: int, threads: int) -> dict[str, Any]:
    """GRACE full-batch on the quickstart graph: 2 workers (each its rows of the N x N objective)
    against the single-process loop; the per-epoch losses should agree to float rounding."""
    losses = {}
    for variant, extra in (("single-process", []), ("workers=2", ["dist.num_workers=2"])):
        out = _fresh(WORK / "distributed" / f"quickstart-{variant}")
        run_distgcl("configs/quickstart.yaml", [f"train.epochs={epochs}",
                                                f"train.threads={threads}", *extra], out)
        losses[variant] = [json.loads(x)["loss"]
                           for x in (out / "metrics.jsonl").read_text().splitlines()]
    diff = max(abs(a - b) for a, b in zip(losses["single-process"], losses["workers=2"]))
    return {"dataset": "csbm", "method": "grace", "variant": "full-batch workers=2 vs single-process",
            "workers": 2, "epochs": epochs, "max_abs_loss_difference": diff,
            "loss_first_epoch": round(losses["single-process"][0], 6)}


def _method_rows(method: str, args: argparse.Namespace, prefetch: bool) -> list[dict[str, Any]]:
    """The single-process, 1-worker and 2-worker rows of ``method`` (and NML's kill row), with
    the ratios against the rows of the same ``prefetch`` setting."""
    config, _ = METHODS[method]
    epochs = args.nml_epochs if method == "nml" else args.grace_epochs
    # NML: once an epoch (20 steps); GRACE: 10 epochs (parts: 10 epochs of one worker)
    every = {"nml": 20, "grace": 10, "grace-parts": 10 * GRACE_PARTS}[method]
    base = [*_overrides(method, epochs, args.threads, every),
            f"train.prefetch={str(prefetch).lower()}"]
    by_variant: dict[str, dict[str, Any]] = {}
    for variant, workers, extra in (("single-process", 1, []),
                                    ("workers=1", 1, ["dist.num_workers=1"]),
                                    ("workers=2", 2, ["dist.num_workers=2"])):
        out = _fresh(WORK / "distributed" / f"{method}-{variant}")
        print(f"[distributed] {method} {variant} prefetch={prefetch} ...", flush=True)
        result = run_distgcl(config, [*base, *extra], out)
        row = _row(result, variant, workers)
        row["prefetch"] = prefetch
        row["run_dir"] = str(out)
        row["accuracy_raw"] = result["metrics"]["accuracy_mean"]
        by_variant[variant] = row
    one, two, single = by_variant["workers=1"], by_variant["workers=2"], \
        by_variant["single-process"]
    for row in by_variant.values():
        row["throughput_ratio_vs_1_worker"] = round(
            row["anchors_per_second"] / one["anchors_per_second"], 3)
        row["overhead_vs_single_process"] = round(
            row["seconds_per_epoch"] / single["seconds_per_epoch"], 3)
        row["accuracy_gap_vs_1_worker"] = round(row["accuracy_mean"] - one["accuracy_mean"], 2)
    if method == "nml" and not args.no_kill and prefetch:
        print("[distributed] nml kill-and-resume ...", flush=True)
        kill = _kill_and_resume(method, epochs, args.threads, 5, two)
    for row in by_variant.values():
        row.pop("run_dir")
        row.pop("accuracy_raw")
    rows = list(by_variant.values())
    if method == "nml" and not args.no_kill and prefetch:
        rows.append(kill)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="nml,grace")
    parser.add_argument("--nml-epochs", type=int, default=3)
    parser.add_argument("--grace-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--prefetch", choices=("on", "off", "both"), default="on",
                        help="train.prefetch of every row (both: each row twice)")
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    rows: list[dict[str, Any]] = []
    prefetches = {"on": [True], "off": [False], "both": [True, False]}[args.prefetch]
    for method in args.methods.split(","):
        for prefetch in prefetches:
            rows += _method_rows(method, args, prefetch)
    rows.append(_full_batch_equivalence(20, args.threads))
    notes = (f"PubMed public split; {args.threads} torch thread(s) per process; epochs: NML "
             f"{args.nml_epochs}, GRACE {args.grace_epochs} (far below the papers' 150/1500: a "
             "cost comparison at equal epochs, the accuracy is early-training); checkpoints every "
             "epoch (NML, 20 steps) / 10 epochs (GRACE) in every variant; kill-and-resume: "
             f"checkpoints every 5 steps; prefetch: {args.prefetch}. No GPU here: the --use-gpu "
             "rows are not measured.")
    write_results("distributed", rows, f"{notes} {args.note}".strip())


if __name__ == "__main__":
    main()
