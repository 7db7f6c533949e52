r"""Distributed training through Ray Train V2: the same epoch loop on N workers.

Driver (:func:`train_distributed`, what ``distgcl train CONFIG --num-workers N`` runs) only
launches and collects: it builds ``ScalingConfig`` / ``RunConfig(storage_path, name)`` /
``FailureConfig`` / ``CheckpointConfig`` and calls ``TorchTrainer.fit()``. Every worker runs
:func:`worker_loop`, which is :func:`distgcl.train.run_training` with a :class:`RayTrainRuntime`:

* the modules that get gradients are wrapped in DDP with a summing all-reduce
  (:func:`distgcl.distributed.ddp.wrap_ddp`); the bi-level NML steps run in lock-step on every rank;
* checkpoints (the chief writes ``step-N/`` with a checksum; every rank calls
  ``ray.train.report`` equally often) land in ``{storage_path}/{run_name}/step-N``;
* a worker failure restarts all workers from the newest intact checkpoint (``max_failures``); a
  job started again with the same ``(storage_path, run_name)`` resumes (Train V2: no
  ``TorchTrainer.restore``).

Run directory ``{storage_path}/{run_name}``: ``step-N-<session>/`` checkpoints, ``metrics.jsonl``,
``result.json``, ``training_curve.png``, ``workers/rank-R.pid`` (each rank's current pid).

``ray.train.report`` is a barrier that waits for the controller's poll, every 2 s by default:
:func:`train_distributed` lowers ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` to 0.25 s (unless set),
which also detects a dead worker sooner.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from distgcl.checkpoint import CheckpointManager, atomic_write_text, write_step_dir
from distgcl.config import Config
from distgcl.memory import peak_rss_mb
from distgcl.runtime import Runtime
from distgcl.work import GraphServices

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
DEFAULT_HEALTH_CHECK_S = "0.25"


class RayTrainRuntime(Runtime):
    """The runtime of one Ray Train worker (rank and process group from ``ray.train``)."""

    def __init__(self, run_dir: Path, keep_checkpoints: int = 2) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        super().__init__(run_dir, ray.train.torch.get_device(), keep_checkpoints)
        # one id per worker-group start, agreed by all ranks: checkpoint folders written after
        # a resume never reuse a path Ray already tracks (its retention deletes by path)
        self.session = self.all_gather_object(f"{time.time_ns():x}"[-8:])[0]
        pid_dir = run_dir / "workers"
        pid_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pid_dir / f"rank-{self.rank}.pid", str(os.getpid()))

    def graph_services(self, config: Config, cache_root: Path) -> GraphServices:
        """``dist.shards > 0``: E2Neg's spectral step over that many graph-shard actors
        (partitions cached under ``cache_root/partitions``)."""
        if not config.dist.shards:
            return GraphServices()
        from distgcl.distributed.services import ShardedEigensolver

        return GraphServices(eigensolver=ShardedEigensolver(str(cache_root / "partitions"),
                                                            config.dist.shards))

    # ------------------------------------------------------------------ collectives
    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        from distgcl.distributed.ddp import wrap_ddp

        return wrap_ddp(module, self.device)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(values)
        buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                           device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(buf)
        return dict(zip(keys, buf.cpu().tolist()))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_manager(self) -> CheckpointManager:
        # Ray Train V2 stores a reported checkpoint at {storage_path}/{name}/{checkpoint_dir_name}
        assert self.run_dir is not None
        return CheckpointManager(self.run_dir, keep_latest_k=self.keep_checkpoints)

    def save_checkpoint(self, step: int, state: dict[str, Any], metrics: dict[str, Any]) -> None:
        import ray.train

        name = f"step-{step}-{self.session}"
        if not self.is_chief:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        tmp = Path(tempfile.mkdtemp(prefix="distgcl-ckpt-"))
        try:
            folder = write_step_dir(tmp / name, step, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                             checkpoint_dir_name=name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def report(self, metrics: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(metrics)

    def worker_info(self) -> dict[str, Any]:
        import torch.distributed as dist

        return {"world_size": self.world_size, "backend": dist.get_backend(),
                "device": str(self.device)}


def worker_loop(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function: the one epoch loop with this worker's runtime."""
    from distgcl.config import config_from_dict
    from distgcl.train import run_training

    config = config_from_dict(loop_config["config"])
    run_dir = Path(loop_config["run_dir"])
    runtime = RayTrainRuntime(run_dir, keep_checkpoints=config.dist.keep_checkpoints)
    run_training(config, run_dir, runtime)
    # free the DDP modules now, while Ray Train's process group still exists: a DDP reducer
    # destroyed after destroy_process_group() can block its process forever
    gc.collect()


# ---------------------------------------------------------------------------------- driver

def default_storage() -> Path:
    return Path(os.environ.get("DISTGCL_STORAGE", "runs")).resolve()


def resolve_run_dir(config: Config, out: str | None = None) -> tuple[Path, str]:
    """``(storage_path, run_name)`` from ``dist.storage_path`` / ``dist.run_name`` (or ``--out``,
    read as ``storage_path/run_name``); a generated name never resumes anything."""
    d = config.dist
    if out is not None and d.run_name is None and d.storage_path is None:
        path = Path(out).resolve()
        return path.parent, path.name
    storage = Path(d.storage_path).resolve() if d.storage_path else default_storage()
    name = d.run_name or (f"{config.method}-{config.data.name}-"
                          f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    return storage, name


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray bound to
    127.0.0.1 (a laptop or one multi-GPU node needs nothing else)."""
    import ray

    os.environ.setdefault(HEALTH_CHECK_ENV, DEFAULT_HEALTH_CHECK_S)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Ray starts its workers at nice 15 unless told otherwise: on a machine shared with
        # anything else our training workers would lose every core to it
        os.environ.setdefault("RAY_worker_niceness", "0")
        # the dashboard (on 127.0.0.1) serves the state API Train V2's cleanup actor polls
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 _node_ip_address="127.0.0.1", log_to_driver=True)


def train_distributed(config: Config, out: str | None = None) -> dict[str, Any]:
    """Run ``config`` on ``dist.num_workers`` Ray Train workers; returns the run's result.json
    (plus the driver's peak RSS). Raises :class:`DistributedTrainingFailed` when the run fails
    after ``dist.max_failures`` recoveries."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    d = config.dist
    if d.num_workers is None:
        raise ValueError("dist.num_workers is not set: use distgcl.train.run_training")
    storage, name = resolve_run_dir(config, out)
    storage.mkdir(parents=True, exist_ok=True)
    run_dir = storage / name
    cpus = d.cpus_per_worker or config.train.threads or 1
    ensure_ray(d.address)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config.to_dict(), "run_dir": str(run_dir)},
        scaling_config=ScalingConfig(num_workers=d.num_workers, use_gpu=d.use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=d.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=d.keep_checkpoints)))
    outcome = trainer.fit()
    if outcome.error is not None:
        raise DistributedTrainingFailed(_error_line(outcome.error), run_dir) from outcome.error
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text())
    result["memory"]["driver_peak_rss_mb"] = peak_rss_mb()
    result["run_dir"] = str(run_dir)
    atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
    return result


class DistributedTrainingFailed(RuntimeError):
    """A Ray Train run that failed after its allowed recoveries; the message is one line."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message)
        self.run_dir = run_dir


def _error_line(error: BaseException) -> str:
    """The innermost worker error as one line (Ray wraps it in several layers)."""
    text = str(error).strip().splitlines()
    for line in reversed(text):
        if "Error" in line or "Diverged" in line:
            return line.strip()
    return text[-1].strip() if text else error.__class__.__name__
