"""The one training loop: config -> dataset -> method -> epochs -> evaluation -> results.

``run_training(config, out_dir)`` is what ``distgcl train`` runs in one process; every Ray Train
worker runs the same function with its own :class:`~distgcl.runtime.Runtime`
(:mod:`distgcl.distributed.trainer`), so there is exactly one epoch loop. It writes into the run
directory (rank 0 only):

- ``metrics.jsonl``: one line per epoch (``epoch``, ``loss``, ``seconds``, method stats; summed
  over ranks), each epoch exactly once, also across resumes,
- ``result.json``: method, dataset, seed, resolved config, metrics (``metrics["skipped"]``: what
  was not computed and why, e.g. no labels), timing, memory, world size, outputs,
- ``embeddings.pt`` (float32 ``[N, d]``; ``.npy`` too on request) and ``encoder.pt`` (the trained
  encoder and what rebuilds it; ``distgcl embed`` reads it): :mod:`distgcl.export`,
- ``training_curve.png``: loss and seconds per epoch,
- checkpoints every ``train.checkpoint_every`` optimizer steps (``<out>/checkpoints/step-N``, or
  ``{storage}/{run}/step-N`` under Ray): a rerun with the same directory resumes from the newest
  intact one and reproduces the uninterrupted run exactly on CPU (mid-epoch too),
- ``progress.json``: a heartbeat ``{"global_step", "epoch", "time"}`` refreshed at most once a
  second, and ``resumes.jsonl``: one line per resume (the step it resumed from, when the
  checkpoint was loaded and when the first new step finished),
- ``last_good.pt`` if the loss diverged (a recent state before the bad step).
"""
from __future__ import annotations

import copy
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from distgcl.checkpoint import atomic_torch_save, atomic_write_text
from distgcl.health import report_health
from distgcl.config import Config
from distgcl.data import DatasetInfo, GraphDataset, default_cache, load_from_config
from distgcl.eval import clustering_scores
from distgcl.export import (EMBEDDINGS_FILE, ENCODER_FILE, node_embeddings, save_embeddings,
                            save_encoder)
from distgcl.memory import PhasePeak, peak_rss_mb
from distgcl.methods import GraphInfo, Method, TrainingDiverged, build_method
from distgcl.prefetch import method_batches
from distgcl.protocols import probe_embeddings, probe_scored_rows
from distgcl.runtime import Runtime
from distgcl.work import Work

FAIL_AT_ENV = "DISTGCL_FAIL_AT"
"""Test switch: ``rank:step[,rank:step...]`` makes that rank exit once after that global step."""
NAN_AT_ENV = "DISTGCL_NAN_AT"
"""Test switch: ``rank:step[,...]`` sets that rank's parameters to NaN before that global step."""
STEP_DELAY_ENV = "DISTGCL_STEP_DELAY"
"""Test/demo switch: sleep this many seconds after every step (a window to kill a process in)."""
CLUSTER_MAX_ROWS = 100_000
"""A worker that trained from the graph shards clusters (k-means over all rows, read from
``embeddings.pt``) only up to this many nodes; beyond, ``metrics.skipped`` says so."""
HEALTH_ROWS = 100_000
"""Rows of ``embeddings.pt`` the health check reads on a label-free sharded run."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_model_noise(method: Method) -> None:
    """Seed the global RNGs (RReLU's slopes, dropout) after the initial parameters: one stream
    shared by all ranks where the objective is full-batch (so data-parallel draws the
    single-process noise), one per rank where each rank runs its own mini-batch
    (:attr:`Method.shared_model_noise`)."""
    seed_everything(method.work.global_seed(shared=method.shared_model_noise))


def _rng_state() -> dict[str, Any]:
    """This process's global RNG states: torch (CPU), numpy, random, and one CUDA state per
    visible GPU (``cuda``: a list, empty on a machine without CUDA)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    state["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return state


def _set_rng_state(state: dict[str, Any]) -> str | None:
    """Restore :func:`_rng_state`'s states. The CUDA states are restored for the GPUs both the
    checkpoint and this run have (device ``i`` from saved state ``i``); on another layout (fewer
    or more GPUs, CPU <-> GPU) the others keep their seeded state, and one line says so (also
    returned; ``None`` when everything was restored)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    saved = list(state.get("cuda") or [])
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(min(len(saved), here)):
        torch.cuda.set_rng_state(saved[i], device=i)
    if len(saved) == here:
        return None
    line = (f"distgcl: cuda RNG: checkpoint has {len(saved)} devices, this run {here}; "
            f"restored {min(len(saved), here)}, "
            + (f"restarted {here - len(saved)} from seed" if here > len(saved)
               else f"dropped {len(saved) - here}"))
    print(line, flush=True)
    return line


def write_outputs(method: Method, dataset: GraphDataset | DatasetInfo, config: Config,
                  out: Path | None, progress: bool = False, store: Any = None
                  ) -> tuple[torch.Tensor | Path, dict[str, Any]]:
    """The run's product, computed and written once (by the chief): ``embeddings.pt`` (float32
    ``[N, d]``, + ``.npy`` with ``eval.save_embeddings_npy``) and ``encoder.pt``
    (:mod:`distgcl.export`). Returns the embeddings and what ``result.json`` records of them.

    With ``store`` (the worker trained from the graph shards, no ``Data`` here) the embeddings
    are computed layer by layer on the shards and streamed into the file
    (:func:`_write_from_shards`); the file's path is returned instead of a tensor."""
    if store is not None:
        return _write_from_shards(method, dataset, config, out, store)
    e, data = config.eval, dataset.data
    z = node_embeddings(method.encoder, data, e.embed_batch_size,
                        progress and 0 < e.embed_batch_size < data.num_nodes)
    outputs: dict[str, Any] = {"embedding_shape": list(z.shape)}
    if out is not None:
        outputs.update(_save_encoder(method, dataset, config, out))
        if e.save_embeddings:
            written = save_embeddings(z, out / EMBEDDINGS_FILE, npy=e.save_embeddings_npy)
            outputs["embeddings"] = [p.name for p in written]
    return z, outputs


def _save_encoder(method: Method, dataset: GraphDataset | DatasetInfo, config: Config,
                  out: Path) -> dict[str, Any]:
    save_encoder(out / ENCODER_FILE, method.encoder, config.to_dict(), dataset=dataset.name,
                 num_nodes=dataset.num_nodes)
    return {"encoder": ENCODER_FILE}


def _write_from_shards(method: Method, info: DatasetInfo, config: Config, out: Path | None,
                       store: Any) -> tuple[Path, dict[str, Any]]:
    """``embeddings.pt`` computed on the shard actors behind ``store`` and written streamed
    (:func:`distgcl.distributed.inference.sharded_embeddings`: no process holds graph +
    features + all layers). Without ``eval.save_embeddings`` the file is a temporary one the
    evaluation reads and :func:`_finish` removes."""
    from distgcl.distributed.inference import copy_rows, sharded_embeddings, store_shards

    e = config.eval
    folder = out if out is not None else Path(tempfile.gettempdir())
    path = folder / (EMBEDDINGS_FILE if e.save_embeddings and out is not None
                     else f".embeddings-eval-{os.getpid()}-{time.time_ns():x}.pt")
    start = time.perf_counter()
    done = sharded_embeddings(store_shards(store), method.encoder, path)
    outputs: dict[str, Any] = {
        "embedding_shape": [done.num_nodes, done.dim],
        "inference": {"backend": "sharded", "shards": len(store.actors),
                      "shard_calls": done.shard_calls, "max_chunk_rows": done.max_chunk_rows,
                      "seconds": round(time.perf_counter() - start, 3)}}
    if out is not None:
        outputs.update(_save_encoder(method, info, config, out))
        if e.save_embeddings:
            written = [path] + ([copy_rows(path, path.with_suffix(".npy"))]
                                if e.save_embeddings_npy else [])
            outputs["embeddings"] = [p.name for p in written]
    return path, outputs


def _label_free(name: str) -> dict[str, Any]:
    reason = "the graph has no labels (data.y)"
    print(f"distgcl: {name}: {reason}: linear probe and clustering skipped; "
          f"the embeddings are the result", flush=True)
    return {"skipped": {"linear_probe": reason, "clustering": reason}}


def _probe_metrics(probe: Any, settings: dict[str, Any], multilabel: bool,
                   skipped: dict[str, str]) -> dict[str, Any]:
    """What ``result.json`` records of a probe (ROC-AUC for multi-label data, else accuracy)."""
    metrics: dict[str, Any] = {"probe": settings}
    if multilabel:
        metrics.update(rocauc_mean=probe.mean, rocauc_std=probe.std, rocauc_per_seed=probe.scores)
        skipped["clustering"] = "multi-label data (k-means needs one class per node)"
    else:
        metrics.update(accuracy_mean=probe.mean, accuracy_std=probe.std,
                       accuracy_per_seed=probe.scores)
        metrics["probe_predicted_classes"] = probe.predicted_classes  # for distgcl.health
    return metrics


def evaluate(method: Method, dataset: GraphDataset, config: Config,
             z: torch.Tensor) -> dict[str, Any]:
    """Linear probe over ``eval.probe_seeds`` seeds, plus clustering for single-label data, on
    the embeddings ``z`` (those written to ``embeddings.pt``). ``metrics["skipped"]`` names each
    metric not computed and why (a label-free graph skips both, saying so in one line)."""
    e = config.eval
    data = dataset.data
    if not dataset.has_labels:
        return _label_free(dataset.name)
    skipped: dict[str, str] = {}
    # the split rule, probe and normalization of eval.protocol (distgcl/protocols.py)
    # on the run's device (the encoder's: Ray Train picks the GPU, config.train.device is CPU)
    probe, settings = probe_embeddings(z, dataset, e, config.train.seed,
                                       device=next(method.encoder.parameters()).device)
    metrics = _probe_metrics(probe, settings, dataset.multilabel, skipped)
    if not dataset.multilabel:
        if e.clustering:
            metrics.update(clustering_scores(z, data.y.cpu(), dataset.num_classes,
                                             e.clustering_runs, seed=config.train.seed))
        else:
            skipped["clustering"] = "eval.clustering is false"
        if hasattr(method, "false_negative_diagnostic"):
            metrics["false_negative"] = method.false_negative_diagnostic(data)
    metrics["skipped"] = skipped
    return metrics


def evaluate_from_store(method: Method, info: DatasetInfo, config: Config, path: Path,
                        store: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """:func:`evaluate` of a worker without the graph: the probe reads only the rows it scores
    from the embeddings file ``path`` and their labels from ``store``
    (:func:`~distgcl.protocols.probe_scored_rows`: the numbers :func:`evaluate` gives on the
    same embeddings). Clustering reads every row (up to :data:`CLUSTER_MAX_ROWS`); the
    false-negative diagnostic needs the graph and is skipped. Returns the metrics and the
    rows read (for the health check)."""
    from distgcl.distributed.inference import column_stats, read_rows

    e = config.eval
    if not info.has_labels:
        return _label_free(info.name), read_rows(path, torch.arange(
            min(info.num_nodes, HEALTH_ROWS)))
    skipped: dict[str, str] = {}
    probe, settings, rows = probe_scored_rows(
        lambda ids: (read_rows(path, ids), store.labels(ids)), info, e, config.train.seed,
        device=next(method.encoder.parameters()).device,
        column_stats=lambda: column_stats(path))
    metrics = _probe_metrics(probe, settings, info.multilabel, skipped)
    if not info.multilabel:
        if not e.clustering:
            skipped["clustering"] = "eval.clustering is false"
        elif info.num_nodes > CLUSTER_MAX_ROWS:
            skipped["clustering"] = (f"{info.num_nodes} nodes > {CLUSTER_MAX_ROWS}: k-means over "
                                     f"every row of the sharded graph is not run")
        else:
            ids = torch.arange(info.num_nodes)
            rows = read_rows(path, ids)
            metrics.update(clustering_scores(rows, store.labels(ids).cpu(), info.num_classes,
                                             e.clustering_runs, seed=config.train.seed))
        if hasattr(method, "false_negative_diagnostic"):
            skipped["false_negative"] = ("needs the whole graph: this worker trained from the "
                                         "graph shards and holds no Data")
    metrics["skipped"] = skipped
    return metrics, rows


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


def checkpoint_interval(config: Config, world_size: int, total_steps: int) -> int:
    """Optimizer steps between checkpoints (0: none). A distributed run always keeps a
    resumable state: ``dist.checkpoint_every``, else ``train.checkpoint_every``, else about 20
    checkpoints over the run (each one is a ``ray.train.report`` barrier)."""
    if world_size > 1 or config.dist.num_workers is not None:
        every = config.dist.checkpoint_every or config.train.checkpoint_every
        return every or max(1, -(-total_steps // 20))
    return config.train.checkpoint_every


class _LineBar(tqdm):
    """tqdm that prints whole lines (a Ray worker's output is forwarded line by line, so the
    usual carriage-return updates would arrive as one line at the end)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs, mininterval=10.0, ascii=True)

    _last = ""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = (self.__str__() if msg is None else msg).strip()
        if line and line != self._last:
            print(line, flush=True)
            self._last = line
        return True


def progress_bar(total: int, initial: int, desc: str, *, enabled: bool, lines: bool) -> tqdm:
    if lines and enabled:
        return _LineBar(total=total, initial=initial, desc=desc, unit="step")
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled,
                dynamic_ncols=True, mininterval=1.0, unit="step")


def _poison_points(rank: int) -> set[int]:
    """Global steps before which this rank's parameters become NaN (``DISTGCL_NAN_AT``)."""
    return _fail_points(rank, NAN_AT_ENV)


def _maybe_poison(method: Method, step: int, points: set[int]) -> None:
    """Fault injection for the divergence guard: NaN parameters on this rank only, so only its
    loss is not finite (the finite flag is all-reduced: every rank must stop)."""
    if step not in points:
        return
    print(f"distgcl: {NAN_AT_ENV}: parameters set to NaN before step {step}", flush=True)
    with torch.no_grad():
        for opt in method.optimizers.values():
            for group in opt.param_groups:
                for param in group["params"]:
                    param.fill_(float("nan"))


def _fail_points(rank: int, env: str = FAIL_AT_ENV) -> set[int]:
    """Global steps after which this rank must exit once (``DISTGCL_FAIL_AT``)."""
    out = set()
    for item in filter(None, os.environ.get(env, "").split(",")):
        r, s = item.split(":")
        if int(r) == rank:
            out.add(int(s))
    return out


def _maybe_fail(run_dir: Path | None, rank: int, step: int, points: set[int]) -> None:
    if step not in points or run_dir is None:
        return
    marker = run_dir / f".fail-injected-rank{rank}-step{step}"
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    print(f"distgcl: {FAIL_AT_ENV}: rank {rank} exits after step {step}", flush=True)
    os._exit(3)


class _Snapshot:
    """The last good model/optimizer state for the divergence guard, refreshed at most every
    ``20 x`` the time a copy takes (at least every second), so it costs under 5 % of training."""

    def __init__(self, method: Method) -> None:
        self.method, self.state, self.epoch = method, None, 0
        self.cost, self.taken = 0.0, -float("inf")

    def maybe_take(self, epoch: int) -> None:
        now = time.perf_counter()
        if now - self.taken < max(1.0, 20.0 * self.cost):
            return
        self.state = {"model": copy.deepcopy(self.method.state_dict()),
                      "optimizers": copy.deepcopy(self.method.optimizer_state())}
        self.epoch, self.taken = epoch, time.perf_counter()
        self.cost = self.taken - now


class _Heartbeat:
    """The chief's ``progress.json`` (at most once a second) and ``resumes.jsonl``."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir, self.last = run_dir, 0.0

    def beat(self, global_step: int, epoch: int) -> None:
        now = time.time()
        if self.run_dir is None or now - self.last < 1.0:
            return
        self.last = now
        atomic_write_text(self.run_dir / "progress.json", json.dumps(
            {"global_step": global_step, "epoch": epoch, "time": now}) + "\n")

    def resumed(self, info: dict[str, Any], global_step: int) -> None:
        if self.run_dir is None:
            return
        with (self.run_dir / "resumes.jsonl").open("a") as fh:
            fh.write(json.dumps({**info, "first_step": global_step,
                                 "first_step_done": time.time(), "pid": os.getpid()}) + "\n")


def _load_dataset(config: Config, runtime: Runtime) -> GraphDataset:
    # rank 0 first: it processes the raw files into the cache the others then read
    return runtime.chief_first(lambda: load_from_config(config.data, seed=config.train.seed))


@dataclass
class _Run:
    """What one process trains (built by :func:`_setup`, the same on every rank)."""

    config: Config
    out: Path | None
    runtime: Runtime
    dataset: GraphDataset | DatasetInfo
    """The loaded dataset, or its :class:`DatasetInfo` where the method trains from ``store``."""
    data: Data | None
    """The graph on this process's device; None: this worker never loaded it."""
    method: Method
    state: dict[str, Any] | None
    """The checkpoint this run resumes from (None: a fresh start)."""
    prepare_seconds: float
    store: Any = None
    """The job's graph store the method trains from instead of ``data`` (None: ``data``)."""


def _graph_info(info: DatasetInfo) -> GraphInfo:
    return GraphInfo(num_nodes=info.num_nodes, num_features=info.num_features,
                     num_classes=info.num_classes, multilabel=info.multilabel)


def _store_info(work: Work) -> DatasetInfo | None:
    """The graph's :class:`DatasetInfo` when the trainer hands over a graph store with it
    (the job's shards): then the method may train without the dataset being loaded."""
    services = work.services
    return services.dataset_info if services.store is not None else None


def _why_load(config: Config, work: Work, method: Method) -> str | None:
    """Why a worker with ``dist.shards`` loads the graph all the same (None: no shards)."""
    services = work.services
    if not config.dist.shards:
        return None
    if services.store is None:
        return "no graph store from the job (the spectral step partitions the graph itself)"
    if services.dataset_info is None:
        return "the job's shards came without the dataset's DatasetInfo"
    return (f"{method.name} as configured cannot train from the graph store "
            f"(Method.can_train_from_store is false)")


def _graph_source(config: Config, runtime: Runtime, work: Work, method: Method,
                  dataset: GraphDataset | None) -> tuple[GraphDataset | DatasetInfo, Any]:
    """``(DatasetInfo, store)`` where the built method trains from the trainer's graph store,
    else ``(the loaded dataset, None)``, saying in one line why a worker with shards loads it."""
    info = _store_info(work)
    if dataset is None and info is not None and method.can_train_from_store():
        return info, work.services.store
    reason = _why_load(config, work, method)
    if reason is not None and runtime.is_chief:
        print(f"distgcl: every worker loads the whole graph: {reason}", flush=True)
    return (dataset if dataset is not None else _load_dataset(config, runtime)), None


def _setup(config: Config, out_dir: str | Path | None, runtime: Runtime | None) -> _Run:
    """This process's place, the graph on its device (or the job's graph store, when the method
    trains from it: the dataset is then never loaded here), the method with its optimizers, the
    checkpoint to resume from and the method's one-off preparation (E2Neg's spectral step)."""
    t = config.train
    out = Path(out_dir) if out_dir is not None else None
    runtime = runtime if runtime is not None else Runtime(
        out, torch.device(t.device), keep_checkpoints=max(2, config.dist.keep_checkpoints))
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    if out is not None and runtime.is_chief:
        out.mkdir(parents=True, exist_ok=True)
    device = runtime.device
    cache_root = Path(config.data.cache) if config.data.cache else default_cache()
    work = Work(rank=runtime.rank, world_size=runtime.world_size, seed=t.seed, device=device,
                services=runtime.graph_services(config, cache_root),
                sum_over_ranks=runtime.all_reduce_sum)

    # the method is built from the graph's sizes: the handed-over DatasetInfo, else the dataset
    loaded = None if _store_info(work) is not None else _load_dataset(config, runtime)
    seed_everything(t.seed)  # identical initial parameters on every rank
    method = build_method(config, _graph_info(_store_info(work) if loaded is None
                                              else loaded.info()), work).to(device)
    method.configure_optimizers()
    dataset, store = _graph_source(config, runtime, work, method, loaded)
    data = dataset.data.to(device) if isinstance(dataset, GraphDataset) else None
    seed_model_noise(method)

    state = runtime.load_checkpoint() if t.resume else None
    prep_start = time.perf_counter()
    prepared = state.get("prepared") if state is not None else None
    runtime.chief_first(lambda: method.prepare(data, cache_root / "methods" / method.name,
                                               prepared=prepared))
    return _Run(config, out, runtime, dataset, data, method, state,
                time.perf_counter() - prep_start, store)


class _EpochLoop:
    """The epochs of one run on every rank: where it resumes, the steps, mid-epoch and
    end-of-epoch checkpoints, fault-injection switches, the records of ``metrics.jsonl``."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        config, runtime, method = run.config, run.runtime, run.method
        t = config.train
        self.steps_per_epoch = method.steps_per_epoch(run.data)
        self.total_steps = t.epochs * self.steps_per_epoch
        self.every = checkpoint_interval(config, runtime.world_size, self.total_steps)
        self.records: list[dict[str, Any]] = []
        self.start_epoch, self.start_step, self.global_step = 1, 0, 0
        self.partial = _empty_partial()
        self.anchors_done, self.train_seconds = 0.0, 0.0
        if run.state is not None:
            self._resume(run.state)
        method.wrap_modules(runtime.wrap)
        out, chief = run.out, runtime.is_chief
        self.metrics_path = out / "metrics.jsonl" if out is not None and chief else None
        if self.metrics_path is not None:
            atomic_write_text(self.metrics_path,
                              "".join(json.dumps(r) + "\n" for r in self.records))
        self.snapshot = _Snapshot(method)
        self.fail_points = _fail_points(runtime.rank)
        self.poison_points = _poison_points(runtime.rank)
        self.step_delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
        self.heartbeat = _Heartbeat(out if chief else None)
        self.resumed = ({"from_step": self.global_step, "loaded": time.time()}
                        if run.state is not None else None)
        self.bar = progress_bar(self.total_steps, self.global_step,
                                f"{method.name}/{run.dataset.name}",
                                enabled=t.progress and chief, lines=runtime.world_size > 1)

    def _resume(self, state: dict[str, Any]) -> None:
        """Weights, optimizers, and (same world size) each rank's streams and epoch sums."""
        method, runtime = self.run.method, self.run.runtime
        method.load_state_dict(state["model"])
        method.load_optimizer_state(state["optimizers"])
        if len(state["ranks"]) == runtime.world_size:
            mine = state["ranks"][runtime.rank]
            method.set_extra_state(mine["extra"])
            _set_rng_state(mine["rng"])
            self.partial = mine["partial"]
        elif runtime.is_chief:  # elastic resize: weights and optimizers carry over, not streams
            print(f"distgcl: checkpoint written by {len(state['ranks'])} ranks, resuming on "
                  f"{runtime.world_size}: random streams restart from the seed", flush=True)
        self.records = state["records"]
        self.start_epoch, self.start_step = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        if self.start_step >= self.steps_per_epoch:
            self.start_epoch, self.start_step = self.start_epoch + 1, 0
            self.partial = _empty_partial()

    def run_all(self) -> None:
        training_memory = PhasePeak().start()
        for epoch in range(self.start_epoch, self.run.config.train.epochs + 1):
            self._epoch(epoch)
        self.bar.close()
        training_memory.stop()
        self.memory = training_memory.as_dict("training")

    def _epoch(self, epoch: int) -> None:
        run, method = self.run, self.run.method
        first = self.start_step if epoch == self.start_epoch else 0
        if first == 0:
            self.partial = _empty_partial()
        self.snapshot.maybe_take(epoch - 1)
        self.tick = time.perf_counter()
        self.step_in_epoch, due = first, False
        loader = method_batches(method, run.data, epoch, first, prefetch=run.config.train.prefetch,
                                device=run.runtime.device)
        try:
            with loader:  # leaving early (divergence, exit) stops the prefetch thread
                for batch in loader:
                    due = self._step(batch, epoch, loader.state)
        except TrainingDiverged as exc:
            self.bar.close()
            _diverged(run.runtime, method, self.snapshot, run.out, f"epoch {epoch}: {exc}")
        self._end_epoch(epoch, due, loader.state)

    def _step(self, batch: Any, epoch: int, batch_state: dict[str, Any] | None) -> bool:
        """One training step and what follows it; True when it is a checkpoint step."""
        run = self.run
        _maybe_poison(run.method, self.global_step + 1, self.poison_points)
        stats = run.method.training_step(batch)
        if self.step_delay:
            time.sleep(self.step_delay)
        sums = self.partial["sums"]
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        self.partial["steps"] += 1
        self.step_in_epoch += 1
        self.global_step += 1
        self.anchors_done += stats.get("anchors", 0.0)
        self.bar.update(1)
        self.heartbeat.beat(self.global_step, epoch)
        if self.resumed is not None:
            self.heartbeat.resumed(self.resumed, self.global_step)
            self.resumed = None
        due = bool(self.every) and self.global_step % self.every == 0
        if self.step_in_epoch < self.steps_per_epoch:  # the epoch's last step: _end_epoch
            if due:  # mid-epoch checkpoint
                self._clock()
                _checkpoint(run.runtime, run.method, run.config, self.global_step, epoch,
                            self.step_in_epoch, self.partial, self.records, batch_state)
                self.tick = time.perf_counter()
            _maybe_fail(run.out, run.runtime.rank, self.global_step, self.fail_points)
        return due

    def _clock(self) -> None:
        """Add the time since :attr:`tick` to the epoch's and the run's training seconds."""
        elapsed = time.perf_counter() - self.tick
        self.partial["seconds"] += elapsed
        self.train_seconds += elapsed

    def _end_epoch(self, epoch: int, due: bool, batch_state: dict[str, Any] | None) -> None:
        """The epoch's record (means over its steps, summed over ranks), and its checkpoint
        when its last step was a checkpoint step."""
        run = self.run
        self._clock()
        steps = max(self.partial["steps"], 1)
        means = {k: (v if k == "anchors" else v / steps)
                 for k, v in self.partial["sums"].items()}
        record = {"epoch": epoch, **run.runtime.all_reduce_sum(means),
                  "seconds": self.partial["seconds"]}
        self.records.append(record)
        if self.metrics_path is not None:
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.bar.set_postfix(epoch=epoch, loss=f"{record['loss']:.4f}", refresh=False)
        if due:
            _checkpoint(run.runtime, run.method, run.config, self.global_step, epoch,
                        self.step_in_epoch, _empty_partial(), self.records, batch_state)
        _maybe_fail(run.out, run.runtime.rank, self.global_step, self.fail_points)


def run_training(config: Config, out_dir: str | Path | None = None,
                 runtime: Runtime | None = None) -> dict[str, Any]:
    """Train ``config.method`` on ``config.data`` and evaluate; see the module docstring.

    ``runtime`` is this process's place in the run (default: the single-process
    :class:`~distgcl.runtime.Runtime` writing into ``out_dir``).
    """
    run = _setup(config, out_dir, runtime)
    loop = _EpochLoop(run)
    loop.run_all()
    runtime = run.runtime
    info_by_rank = runtime.all_gather_object({
        "rank": runtime.rank, "pid": os.getpid(), "peak_rss_mb": peak_rss_mb(),
        "train_seconds": loop.train_seconds, "anchors": loop.anchors_done,
        "anchors_per_second": (loop.anchors_done / loop.train_seconds
                               if loop.train_seconds > 0 else None),
        "loaded_dataset": run.data is not None})
    result = _finish(run, loop, info_by_rank) if runtime.is_chief else {}
    runtime.barrier()
    records = loop.records
    runtime.report({"epochs_run": len(records), "global_step": loop.global_step,
                    **({"loss": records[-1]["loss"]} if records else {})})
    return result


def _finish(run: _Run, loop: _EpochLoop, info_by_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The chief's outputs, evaluation and ``result.json``."""
    config, method, dataset, out = run.config, run.method, run.dataset, run.out
    records = loop.records
    eval_start = time.perf_counter()
    z, metrics, outputs = _outputs_and_metrics(run)
    eval_seconds = time.perf_counter() - eval_start
    epoch_seconds = sum(r["seconds"] for r in records)
    result: dict[str, Any] = {
        "method": config.method,
        "dataset": dataset.name,
        "seed": config.train.seed,
        "config": config.to_dict(),
        "metrics": metrics,
        "timing": {"train_seconds": epoch_seconds,
                   "seconds_per_epoch": epoch_seconds / max(len(records), 1),
                   "prepare_seconds": run.prepare_seconds, "eval_seconds": eval_seconds,
                   "steps_per_epoch": loop.steps_per_epoch},
        "memory": {"peak_rss_mb": peak_rss_mb(), **loop.memory,
                   "workers_peak_rss_mb": [r["peak_rss_mb"] for r in info_by_rank]},
        "throughput": {"anchors_per_second_per_rank":
                       [r["anchors_per_second"] for r in info_by_rank],
                       "anchors_per_second": sum(r["anchors_per_second"] or 0.0
                                                 for r in info_by_rank)},
        "epochs_run": len(records),
        "outputs": outputs,
        "graph": {"backend": "sharded" if run.store is not None else "local",
                  "worker_loaded_dataset": any(r["loaded_dataset"] for r in info_by_rank)},
        **run.runtime.worker_info(),
    }
    # one line if bad (a worker without the graph: over the rows its evaluation read)
    result["health"] = report_health(z, metrics, dataset.num_classes)
    if hasattr(method, "describe"):  # method-specific statistics (E2Neg: centres, purity)
        result["method_info"] = method.describe()
    if out is not None:
        atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
        if records:
            plot_curve(records, out / "training_curve.png", f"{config.method} on {dataset.name}")
    return result


def _outputs_and_metrics(run: _Run) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
    """``(embeddings or the rows of them evaluation read, metrics, outputs)``: the files
    written, then the evaluation, from the graph in this process or from the shards."""
    config, method, dataset = run.config, run.method, run.dataset
    z, outputs = write_outputs(method, dataset, config, run.out,
                               progress=config.train.progress, store=run.store)
    if run.store is None:
        return z, evaluate(method, dataset, config, z), outputs
    try:
        metrics, rows = evaluate_from_store(method, dataset, config, z, run.store)
    finally:
        if "embeddings" not in outputs:  # a temporary file only the evaluation read
            z.unlink(missing_ok=True)
    return rows, metrics, outputs


def _diverged(runtime: Runtime, method: Method, snapshot: _Snapshot, out: Path | None,
              message: str) -> None:
    """Every rank stops here at the same step (the loss check is agreed over ranks): restore the
    last good state, let the chief save it as ``last_good.pt``, raise the chief's one line."""
    where = ""
    if snapshot.state is not None:
        method.load_state_dict(snapshot.state["model"])
        method.load_optimizer_state(snapshot.state["optimizers"])
        if out is not None and runtime.is_chief:
            atomic_torch_save({**snapshot.state, "epoch": snapshot.epoch}, out / "last_good.pt")
            where = (f"; last good state (epoch {snapshot.epoch}) saved to "
                     f"{out / 'last_good.pt'}")
    # the chief's line on every rank (their snapshots may be of different epochs)
    raise TrainingDiverged(runtime.all_gather_object(message + where)[0]) from None


def _empty_partial() -> dict[str, Any]:
    """Running sums of the current epoch (per rank; part of the checkpoint for mid-epoch resumes)."""
    return {"sums": {}, "steps": 0, "seconds": 0.0}


def _checkpoint(runtime: Runtime, method: Method, config: Config, global_step: int, epoch: int,
                step_in_epoch: int, partial: dict[str, Any], records: list[dict[str, Any]],
                batch_state: dict[str, Any] | None = None) -> None:
    """Gather every rank's RNG streams and epoch sums, let the chief write the state (weights,
    both optimizers, counters, records, E2Neg's prepared stars), report on all ranks.

    ``batch_state``: the batch generators' states as of the batch consumed last (the prefetch
    thread is ahead of the step: :mod:`distgcl.prefetch`); they replace the live states."""
    extra = method.get_extra_state()
    extra["generators"].update(batch_state or {})
    ranks = runtime.all_gather_object({"extra": extra, "rng": _rng_state(),
                                       "partial": copy.deepcopy(partial)})
    state = None
    if runtime.is_chief:
        state = {"model": method.state_dict(), "optimizers": method.optimizer_state(),
                 "ranks": ranks, "world_size": runtime.world_size, "epoch": epoch,
                 "step_in_epoch": step_in_epoch, "global_step": global_step,
                 "records": list(records), "prepared": method.prepared_state(),
                 "config": config.to_dict()}
    runtime.save_checkpoint(global_step, state or {}, {"epoch": epoch,
                                                       "global_step": global_step})
