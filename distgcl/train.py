"""The single-process training run: config -> dataset -> method -> epochs -> evaluation -> results.

``run_training(config, out_dir)`` is what ``distgcl train`` calls. It writes into ``out_dir``:

- ``metrics.jsonl``: one line per epoch (``epoch``, ``loss``, ``seconds`` and method stats),
- ``result.json``: method, dataset, seed, resolved config, metrics, timing, memory,
- ``training_curve.png``: loss and seconds per epoch,
- ``checkpoints/step-N`` when ``train.checkpoint_every > 0`` (a rerun with the same ``out_dir``
  resumes from the newest one and reproduces the uninterrupted run exactly on CPU),
- ``last_good.pt`` if the loss diverged (the state before the bad epoch).
"""
from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distgcl.checkpoint import CheckpointManager
from distgcl.config import Config
from distgcl.data import GraphDataset, default_cache, load_from_config
from distgcl.eval import clustering_scores, linear_probe, normalize_embeddings
from distgcl.memory import PhasePeak, peak_rss_mb
from distgcl.methods import GraphInfo, Method, TrainingDiverged, build_method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _snapshot(method: Method) -> dict[str, Any]:
    return {"model": copy.deepcopy(method.state_dict()),
            "optimizers": copy.deepcopy(method.optimizer_state())}


def evaluate(method: Method, dataset: GraphDataset, config: Config,
             out: Path | None = None) -> dict[str, Any]:
    """Linear probe over ``eval.probe_seeds`` seeds, plus clustering for single-label data."""
    e = config.eval
    data = dataset.data
    z = method.embed(data).detach().cpu()
    if out is not None and e.save_embeddings:
        torch.save(z, out / "embeddings.pt")
    splits = [dataset.split_masks(config.train.seed * 1000 + s) for s in range(e.probe_seeds)]
    probe = linear_probe(normalize_embeddings(z, e.normalize), data.y.cpu(), splits,
                         epochs=e.probe_epochs, lr=e.probe_lr, weight_decay=e.probe_weight_decay,
                         eval_every=e.probe_eval_every, seed=config.train.seed,
                         multilabel=dataset.multilabel)
    metrics: dict[str, Any] = {}
    if dataset.multilabel:
        metrics.update(rocauc_mean=probe.mean, rocauc_std=probe.std, rocauc_per_seed=probe.scores)
    else:
        metrics.update(accuracy_mean=probe.mean, accuracy_std=probe.std,
                       accuracy_per_seed=probe.scores)
        if e.clustering:
            metrics.update(clustering_scores(z, data.y.cpu(), dataset.num_classes,
                                             e.clustering_runs, seed=config.train.seed))
        if hasattr(method, "false_negative_diagnostic"):
            metrics["false_negative"] = method.false_negative_diagnostic(data)
    return metrics


def plot_curve(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["loss"] for r in records], lw=1.5)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [r["seconds"] for r in records], lw=1.0, color="tab:orange")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("seconds per epoch")
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_training(config: Config, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train ``config.method`` on ``config.data`` and evaluate; see the module docstring."""
    t = config.train
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    dataset = load_from_config(config.data, seed=t.seed)
    device = torch.device(t.device)
    data = dataset.data.to(device)
    info = GraphInfo(num_nodes=data.num_nodes, num_features=data.num_features,
                     num_classes=dataset.num_classes, multilabel=dataset.multilabel)
    method = build_method(config, info).to(device)
    method.configure_optimizers()
    cache_root = Path(config.data.cache) if config.data.cache else default_cache()

    prep_start = time.perf_counter()
    method.prepare(data, cache_root / "methods" / method.name)
    prepare_seconds = time.perf_counter() - prep_start

    records: list[dict[str, Any]] = []
    start_epoch = 1
    manager = CheckpointManager(out / "checkpoints") if out is not None else None
    if manager is not None and t.resume:
        state = manager.load()
        if state is not None:
            method.load_state_dict(state["model"])
            method.load_optimizer_state(state["optimizers"])
            _set_rng_state(state["rng"])
            records = state["records"]
            start_epoch = state["epoch"] + 1

    metrics_path = out / "metrics.jsonl" if out is not None else None
    if metrics_path is not None:
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    last_good = _snapshot(method)
    bar = tqdm(range(start_epoch, t.epochs + 1), desc=f"{method.name}/{dataset.name}",
               disable=not t.progress, dynamic_ncols=True, mininterval=1.0, initial=start_epoch - 1,
               total=t.epochs)
    training_memory = PhasePeak().start()
    for epoch in bar:
        tick = time.perf_counter()
        try:
            sums: dict[str, float] = {}
            steps = 0
            for batch in method.batches(data):
                for key, value in method.training_step(batch).items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        except TrainingDiverged as exc:
            method.load_state_dict(last_good["model"])
            method.load_optimizer_state(last_good["optimizers"])
            where = ""
            if out is not None:
                torch.save({**last_good, "epoch": epoch - 1}, out / "last_good.pt")
                where = f"; last good state (epoch {epoch - 1}) saved to {out / 'last_good.pt'}"
            raise TrainingDiverged(f"epoch {epoch}: {exc}{where}") from None
        record = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()},
                  "seconds": time.perf_counter() - tick}
        records.append(record)
        if metrics_path is not None:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        last_good = _snapshot(method)
        if manager is not None and t.checkpoint_every and epoch % t.checkpoint_every == 0:
            manager.save(epoch, {"model": method.state_dict(),
                                 "optimizers": method.optimizer_state(), "rng": _rng_state(),
                                 "records": records, "epoch": epoch})
    bar.close()
    training_memory.stop()
    train_seconds = sum(r["seconds"] for r in records)

    eval_start = time.perf_counter()
    metrics = evaluate(method, dataset, config, out)
    eval_seconds = time.perf_counter() - eval_start
    result = {
        "method": config.method,
        "dataset": dataset.name,
        "seed": t.seed,
        "config": config.to_dict(),
        "metrics": metrics,
        "timing": {"train_seconds": train_seconds,
                   "seconds_per_epoch": train_seconds / max(len(records), 1),
                   "prepare_seconds": prepare_seconds, "eval_seconds": eval_seconds},
        "memory": {"peak_rss_mb": peak_rss_mb(), **training_memory.as_dict("training")},
        "epochs_run": len(records),
    }
    if hasattr(method, "describe"):  # method-specific statistics (E2Neg: centres, purity, ...)
        result["method_info"] = method.describe()
    if out is not None:
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        if records:
            plot_curve(records, out / "training_curve.png", f"{config.method} on {dataset.name}")
    return result
