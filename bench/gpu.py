"""GPU against CPU on PubMed (issue 17): E2Neg epoch, NML-GCL mini-batch steps/s, GRACE
full-batch epoch, the 10-seed Adam probe; writes ``bench/results/gpu.json``.

Each row runs the method API in this process (the same code ``distgcl train`` runs): build,
prepare (the spectral step etc., not timed), one warm-up step, then ``--steps`` timed steps with
``torch.cuda.synchronize()`` around them, once on ``--device`` and once on the CPU with
``--cpu-threads`` threads (the issue's goals are against one CPU thread; fewer timed steps there).
The probe row times ``eval.probe_seeds`` Adam probes (``nml-public``: 3000 epochs) on the NML
row's embeddings. ``accuracy_mean`` is the probe on embeddings after these few steps only: a
smoke value, not the method's accuracy (bench/results/{e2neg,nml,grace}.json have those).

    python bench/gpu.py                       # PubMed, cuda vs 1 CPU thread
    python bench/gpu.py --device cpu --quick  # the CPU code path on a small generated graph
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK, write_results  # noqa: E402
from distgcl.config import Config, load_config  # noqa: E402
from distgcl.data import load_from_config  # noqa: E402
from distgcl.export import node_embeddings  # noqa: E402
from distgcl.methods import GraphInfo, Method, build_method  # noqa: E402
from distgcl.protocols import probe_embeddings  # noqa: E402
from distgcl.train import seed_everything  # noqa: E402
from distgcl.work import Work  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# name, config, overrides, unit ("epoch": seconds_per_epoch, "step": steps_per_second),
# timed steps on the accelerator and on the CPU (GRACE's one-thread PubMed epoch is ~a minute)
ROWS = [
    ("e2neg", "configs/pubmed_e2neg.yaml", [], "epoch", 20, 2),
    ("nml", "configs/pubmed_nml.yaml", ["nml.mode=minibatch", "nml.batch_size=512",
                                        "nml.num_negatives=512", "nml.num_neighbors=[10,10]"],
     "step", 100, 10),
    ("grace", "configs/pubmed_grace.yaml", [], "epoch", 10, 1),
]
QUICK = ["data.name=csbm", "data.csbm.num_nodes=400", "data.csbm.num_features=16",
         "model.out_dim=32", "model.hidden_dim=32", "model.proj_dim=0", "e2neg.clusters=4",
         "e2neg.num_neighbors=20", "e2neg.min_neighbors=10", "nml.batch_size=100",
         "nml.num_negatives=64", "eval.probe_epochs=50"]
PROBE = ["eval.protocol=nml-public", "eval.probe_seeds=10"]  # the Adam probe, 3000 epochs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: Config, device: torch.device) -> tuple[Method, Any, Any]:
    """The method on ``device``, prepared (spectral step / sampler), and its dataset."""
    dataset = load_from_config(config.data, seed=config.train.seed)
    data = dataset.data.to(device)
    info = GraphInfo(num_nodes=data.num_nodes, num_features=data.num_features,
                     num_classes=dataset.num_classes, multilabel=dataset.multilabel)
    seed_everything(config.train.seed)
    method = build_method(config, info, Work(seed=config.train.seed, device=device)).to(device)
    method.configure_optimizers()
    method.prepare(data, WORK / "gpu-cache" / method.name)
    return method, dataset, data


def time_steps(method: Method, data: Any, steps: int, device: torch.device) -> float:
    """Seconds per optimizer step over ``steps`` steps (after one warm-up step on an
    accelerator: kernel selection, allocator; the CPU's first step is timed as it is)."""
    def batches():  # type: ignore[no-untyped-def]
        epoch = 1
        while True:
            yield from method.batches(data, epoch)
            epoch += 1

    it = batches()
    if device.type != "cpu":
        method.training_step(next(it))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        method.training_step(next(it))
    _sync(device)
    return (time.perf_counter() - start) / steps


def measure(name: str, config: Config, unit: str, device: torch.device, steps: int
            ) -> dict[str, Any]:
    """One timing row (and the method, for the probe)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    method, dataset, data = build(config, device)
    per_step = time_steps(method, data, steps, device)
    row: dict[str, Any] = {"method": name, "device": str(device), "steps_timed": steps}
    if unit == "epoch":
        row["seconds_per_epoch"] = round(per_step * method.steps_per_epoch(data), 5)
    else:
        row["steps_per_second"] = round(1.0 / per_step, 3)
    if device.type == "cuda":
        row["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["_method"], row["_dataset"], row["_config"] = method, dataset, config
    return row


def probe_row(row: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The ``eval.probe_seeds``-seed probe on ``row``'s embeddings, on ``device``."""
    method, dataset, config = row["_method"], row["_dataset"], row["_config"]
    z = node_embeddings(method.encoder, dataset.data)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    result, settings = probe_embeddings(z, dataset, config.eval, config.train.seed,
                                        device=device)
    _sync(device)
    out = {"method": f"{row['method']}+probe", "device": str(device),
           "probe": settings["probe"], "seeds": settings["seeds"],
           "seconds": round(settings["seconds"], 3), "accuracy_mean": round(result.mean, 2)}
    if device.type == "cuda":
        out["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["accuracy_mean"] = out["accuracy_mean"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the accelerated device (default: cuda)")
    ap.add_argument("--cpu-threads", type=int, default=1, help="threads of the CPU baseline")
    ap.add_argument("--steps", type=int, help="timed steps on --device (default: per method)")
    ap.add_argument("--cpu-steps", type=int, help="timed steps on the CPU (default: per method)")
    ap.add_argument("--methods", default="e2neg,nml,grace")
    ap.add_argument("--quick", action="store_true", help="small generated graph (smoke test)")
    ap.add_argument("--name", default="gpu", help="bench/results/<name>.json")
    ap.add_argument("--note", default="", help="text appended to the file's notes")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: --device cuda but torch sees no CUDA GPU (use --device cpu)")
    wanted = args.methods.split(",")
    rows: list[dict[str, Any]] = []
    for name, path, overrides, unit, steps, cpu_steps in (r for r in ROWS if r[0] in wanted):
        extra = [*overrides, *PROBE, "train.progress=false", *(QUICK if args.quick else [])]
        config = load_config(REPO / path, extra)
        fast = measure(name, config, unit, device, args.steps or steps)
        threads = torch.get_num_threads()
        torch.set_num_threads(args.cpu_threads)
        slow = measure(name, config, unit, torch.device("cpu"), args.cpu_steps or cpu_steps)
        key = "seconds_per_epoch" if unit == "epoch" else "steps_per_second"
        ratio = slow[key] / fast[key] if unit == "epoch" else fast[key] / slow[key]
        fast["speedup_vs_cpu"] = round(ratio, 2)
        slow["cpu_threads"] = args.cpu_threads
        probes = []
        if name == "nml":  # the probe on the NML row's embeddings, GPU against CPU
            probes = [probe_row(fast, device), probe_row(slow, torch.device("cpu"))]
            probes[0]["speedup_vs_cpu"] = round(probes[1]["seconds"] / probes[0]["seconds"], 2)
        torch.set_num_threads(threads)
        if name != "nml":
            probe_row(fast, device)
        rows += [fast, slow, *probes]
        print(f"{name}: {key} {fast[key]} on {device}, {slow[key]} on cpu", flush=True)
    for row in rows:
        for key in [k for k in row if k.startswith("_")]:
            del row[key]
    write_results(args.name + ("-quick" if args.quick else ""), rows,
                  notes="issue 17: in-process method API, warm-up step then timed steps; "
                        "CPU baseline with --cpu-threads threads; accuracy_mean is the probe "
                        "after these few steps only (a smoke value). " + args.note)


if __name__ == "__main__":
    main()
