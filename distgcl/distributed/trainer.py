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

Failures are one line each: a request the local Ray cannot hold (workers x CPUs/GPUs per worker)
fails before any worker starts, one a cluster does not start within ``dist.startup_timeout_s``
fails then (:class:`InfeasibleRequest`); a :class:`~distgcl.config.ConfigError` or
:class:`~distgcl.data.DatasetError` raised in a worker is not retried (the worker leaves
``.fatal.json`` and a restarted group ends at once); any other failure names the rank that failed
first (:class:`DistributedTrainingFailed`). Ray's own log lines (the controller's, Ray Train's
per-report lines) go to ``ray.log`` in the run directory, the workers' own output to the console
(``verbose=True``: Ray's lines too).
"""
from __future__ import annotations

import datetime as dt
import functools
import gc
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from distgcl.checkpoint import CheckpointManager, atomic_write_text, write_step_dir
from distgcl.config import Config, ConfigError
from distgcl.memory import peak_rss_mb
from distgcl.runtime import Runtime
from distgcl.work import GraphServices

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
DEFAULT_HEALTH_CHECK_S = "0.25"
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
RAY_LOG = "ray.log"
"""Ray's log lines of a run (the controller's, Ray Train's), in the run directory."""
FATAL_FILE = ".fatal.json"
"""Written by a worker that raised an error a restart cannot fix; a restarted group stops."""
RAY_LOGGERS = ("ray", "ray.train")


class RayTrainRuntime(Runtime):
    """The runtime of one Ray Train worker (rank and process group from ``ray.train``)."""

    def __init__(self, run_dir: Path, keep_checkpoints: int = 2,
                 shards: dict[str, Any] | None = None) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        super().__init__(run_dir, ray.train.torch.get_device(), keep_checkpoints)
        self.shards = shards  # the job's shard actors (JobShards.handoff), started by the driver
        # one id per worker-group start, agreed by all ranks: checkpoint folders written after
        # a resume never reuse a path Ray already tracks (its retention deletes by path)
        self.session = self.all_gather_object(f"{time.time_ns():x}"[-8:])[0]
        pid_dir = run_dir / "workers"
        pid_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pid_dir / f"rank-{self.rank}.pid", str(os.getpid()))

    def graph_services(self, config: Config, cache_root: Path) -> GraphServices:
        """``dist.shards > 0``: the job's graph-shard actors as the methods' graph store and
        E2Neg's spectral step on them (without the driver's actors: the spectral step starts
        its own, partitions cached under ``cache_root/partitions``)."""
        if not config.dist.shards:
            return GraphServices()
        from distgcl.distributed.services import graph_services_from_handoff

        return graph_services_from_handoff(self.shards, config.dist.shards, cache_root)

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
    """The Ray Train worker function: the one epoch loop with this worker's runtime. A
    :class:`ConfigError` / ``DatasetError`` is written to ``.fatal.json`` before it is raised:
    the group Ray Train restarts after it returns at once, so it is never retried."""
    from distgcl.config import config_from_dict
    from distgcl.data import DatasetError
    from distgcl.methods import TrainingDiverged
    from distgcl.train import run_training

    run_dir = Path(loop_config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not loop_config.get("verbose"):
        # Ray Train logs each report through the root logger too (a logger named by file)
        log_to_file(run_dir / RAY_LOG, ("", *RAY_LOGGERS))
    if (run_dir / FATAL_FILE).exists():
        return  # a restart after a bad-input error: nothing to retry
    config = config_from_dict(loop_config["config"])
    runtime = RayTrainRuntime(run_dir, keep_checkpoints=config.dist.keep_checkpoints,
                              shards=loop_config.get("shards"))
    try:
        run_training(config, run_dir, runtime)
    except (ConfigError, DatasetError, TrainingDiverged) as exc:
        # not transient: a restarted group would hit it again (every rank raises a divergence
        # at the same step, the finite flag is all-reduced before backward)
        atomic_write_text(run_dir / FATAL_FILE, json.dumps(
            {"rank": runtime.rank, "error": str(exc).splitlines()[0],
             "kind": "diverged" if isinstance(exc, TrainingDiverged) else "config"}))
        raise
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


def ensure_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, passing on the ``DISTGCL_*``
    environment variables), else start a local Ray bound to 127.0.0.1 (a laptop or one
    multi-GPU node needs nothing else). True when it started the
    local Ray (whose resources are all there will be)."""
    import ray

    os.environ.setdefault(HEALTH_CHECK_ENV, DEFAULT_HEALTH_CHECK_S)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # the workers of a running cluster do not inherit this process's environment; inside a
        # submitted job the job's own env_vars reach them already, and Ray refuses a driver
        # runtime env that names one of those keys again
        in_job = _job_env_vars()
        forward = {k: v for k, v in os.environ.items()
                   if k.startswith("DISTGCL_") and k not in in_job}
        ray.init(address=address, log_to_driver=True,
                 runtime_env={"env_vars": forward} if forward else None)
        return False
    # Ray starts its workers at nice 15 unless told otherwise: on a machine shared with
    # anything else our training workers would lose every core to it
    os.environ.setdefault("RAY_worker_niceness", "0")
    # the dashboard (on 127.0.0.1) serves the state API Train V2's cleanup actor polls
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             _node_ip_address="127.0.0.1", log_to_driver=True)
    return True


def _job_env_vars() -> dict[str, str]:
    """The ``env_vars`` of the Ray job this driver runs in (``ray job submit``), else ``{}``."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        env = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
    return dict(env)


class InfeasibleRequest(RuntimeError):
    """Workers the Ray cluster cannot start (too few CPUs/GPUs); the message is one line."""


def _request(num_workers: int, cpus: int, use_gpu: bool) -> dict[str, float]:
    return {"CPU": float(num_workers * cpus), "GPU": float(num_workers if use_gpu else 0)}


def _count(n: float, what: str) -> str:
    return f"{n:g} {what}" + ("" if n == 1 else "s")


def _describe(num_workers: int, cpus: int, use_gpu: bool) -> str:
    per = _count(cpus, "CPU") + (" + 1 GPU" if use_gpu else "")
    need = _request(num_workers, cpus, use_gpu)
    total = _count(need["CPU"], "CPU") + (" and " + _count(need["GPU"], "GPU") if use_gpu else "")
    return f"{_count(num_workers, 'worker')} x {per} each need{'s' if num_workers == 1 else ''} " \
           f"{total}"


def _have(resources: dict[str, float]) -> str:
    return f"{_count(resources.get('CPU', 0), 'CPU')} and {_count(resources.get('GPU', 0), 'GPU')}"


def check_resources(num_workers: int, cpus: int, use_gpu: bool,
                    resources: dict[str, float], where: str) -> None:
    """Raise :class:`InfeasibleRequest` when ``resources`` (``ray.cluster_resources()``) cannot
    hold the workers."""
    need = _request(num_workers, cpus, use_gpu)
    short = [k for k in need if need[k] > resources.get(k, 0.0)]
    if short:
        fix = ("lower --num-workers or drop --use-gpu" if short == ["GPU"] else
               "lower --num-workers or dist.cpus_per_worker")
        raise InfeasibleRequest(f"{_describe(num_workers, cpus, use_gpu)}, but {where} has "
                                f"{_have(resources)}: {fix}")


def check_placement(config: Config, resources: dict[str, float]) -> None:
    """Raise :class:`InfeasibleRequest` when ``resources`` (``ray.cluster_resources()``) lack
    the custom resources of ``dist.worker_resources`` (each, times the workers) or
    ``dist.shard_resources`` (each, times ``dist.shards``): Ray would wait for them forever."""
    d = config.dist
    asks = [("dist.worker_resources", d.worker_resources, d.num_workers or 0, "worker"),
            ("dist.shard_resources", d.shard_resources, d.shards, "shard actor")]
    for key, each, count, what in asks:
        for name, amount in each.items():
            need, have = amount * count, resources.get(name, 0.0)
            if need > have:
                raise InfeasibleRequest(
                    f"{key}: {_count(count, what)} x {amount:g} {name!r} need {need:g}, but "
                    f"the Ray cluster has {have:g}: start nodes with --resources "
                    f"'{{\"{name}\": N}}' or change {key}")


def start_job_shards(config: Config) -> Any:
    """``dist.shards: P``: partition the dataset (or reuse its cached partition) and start the
    job's :math:`P` graph-shard actors (:class:`~distgcl.distributed.services.JobShards`);
    None without ``dist.shards``."""
    if not config.dist.shards:
        return None
    from distgcl.data import default_cache
    from distgcl.distributed.services import JobShards

    cache_root = Path(config.data.cache) if config.data.cache else default_cache()
    return JobShards.start(config, cache_root)


def check_before_start(config: Config) -> None:
    """The checks a worker would only make once Ray runs, made on the driver first (one
    :class:`ConfigError` instead of a failing worker group)."""
    config.validate()
    solver = getattr(config.section(config.method), "solver", None)
    if config.dist.shards and solver is not None:
        from distgcl.distributed.services import BLOCK_METHODS

        if solver not in BLOCK_METHODS:
            raise ConfigError(f"dist.shards needs a block eigensolver: {config.method}.solver "
                              f"must be one of {', '.join(BLOCK_METHODS)} (got {solver!r})")


def log_to_file(path: Path | None, names: tuple[str, ...] = RAY_LOGGERS) -> None:
    """Send the console output of loggers ``names`` (Ray's) of this process to ``path``
    instead (None: back to the console)."""
    handler = None
    if path is not None:
        handler = logging.FileHandler(path, delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.distgcl = True  # type: ignore[attr-defined]
    for name in names:
        logger = logging.getLogger(name or None)
        for old in list(logger.handlers):
            if getattr(old, "distgcl", False):
                logger.removeHandler(old)
                old.close()
            elif handler is not None and type(old).__name__ in ("StreamHandler", "PlainRayHandler"):
                _CONSOLE_HANDLERS.setdefault(name, []).append(old)
                logger.removeHandler(old)
        if handler is None:
            for old in _CONSOLE_HANDLERS.pop(name, []):
                logger.addHandler(old)
        else:
            logger.addHandler(handler)


_CONSOLE_HANDLERS: dict[str, list[logging.Handler]] = {}
_ROUTE: dict[str, Any] = {"path": None}
# What Ray Train and torch's process group print in every training worker, once per rank and
# restart: it goes to ray.log with Ray's own lines (the console keeps distgcl's lines and bar).
WORKER_NOISE = re.compile(
    r"Setting up process group for|hostname of the client socket cannot be retrieved"
    r"|^\[W\d{4} |^\[Gloo\]|ProcessGroupGloo|Moving model to device|Wrapping provided model")


def _split_noise(lines: list[str]) -> tuple[list[str], list[str]]:
    """``lines`` as (for the console, for the log file) by :data:`WORKER_NOISE`."""
    keep: list[str] = []
    noise: list[str] = []
    for line in lines:
        (noise if WORKER_NOISE.search(line) else keep).append(line)
    return keep, noise


def route_worker_output(path: Path | None) -> None:
    """Forwarded output of Ray's own actors (controller, cleaners) to ``path``; the training
    workers' output (rank 0's progress bar, distgcl's lines) still to the console (None:
    everything to the console)."""
    from ray._private import worker as ray_worker

    _ROUTE["path"] = path
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    console = dict(getattr(dispatcher, "handlers", [])).get("ray_print_logs")
    if console is None or getattr(console, "distgcl_route", False):
        return

    def route(data: dict[str, Any], show: Callable[[dict[str, Any]], None]) -> None:
        target = _ROUTE["path"]
        if target is None:
            show(data)
            return
        lines = list(data.get("lines", []))
        keep: list[str] = []
        if data.get("actor_name") == "RayTrainWorker":
            keep, lines = _split_noise(lines)
        if keep:
            show({**data, "lines": keep})
        if lines:
            name = data.get("actor_name") or data.get("task_name") or ""
            with open(target, "a") as f:
                f.writelines(f"({name} pid={data.get('pid')}) {line}\n" for line in lines)

    # the raylet's error messages ("A worker died ...") are printed past the dispatcher
    to_stdstream = ray_worker.print_to_stdstream
    ray_worker.print_to_stdstream = lambda data, ignore_prefix: route(
        data, lambda d: to_stdstream(d, ignore_prefix))
    routed = functools.partial(route, show=console)
    routed.distgcl_route = True  # type: ignore[attr-defined]
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", routed)


def train_distributed(config: Config, out: str | None = None,
                      verbose: bool = False) -> dict[str, Any]:
    """Run ``config`` on ``dist.num_workers`` Ray Train workers; returns the run's result.json
    (plus the driver's peak RSS). Raises :class:`ConfigError` for bad input (found here before
    Ray starts, or by a worker: never retried), :class:`InfeasibleRequest` for workers the
    cluster cannot start, :class:`DistributedTrainingFailed` when the run fails after
    ``dist.max_failures`` recoveries. ``verbose``: Ray's log lines on the console too (always
    in ``ray.log`` of the run directory)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    d = config.dist
    if d.num_workers is None:
        raise ValueError("dist.num_workers is not set: use distgcl.train.run_training")
    check_before_start(config)
    storage, name = resolve_run_dir(config, out)
    run_dir = storage / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {run_dir} (dist.storage_path): "
                          f"{exc.strerror or exc}") from None
    (run_dir / FATAL_FILE).unlink(missing_ok=True)
    cpus = d.cpus_per_worker or config.train.threads or 1
    log_to_file(None if verbose else run_dir / RAY_LOG)
    started = ensure_ray(d.address)
    import ray

    if started:
        check_resources(d.num_workers, cpus, d.use_gpu, ray.cluster_resources(),
                        "the local Ray (this machine)")
    check_placement(config, ray.cluster_resources())  # a custom resource no node has
    route_worker_output(None if verbose else run_dir / RAY_LOG)
    os.environ[START_TIMEOUT_ENV] = f"{d.startup_timeout_s:g}"  # passed on to the controller
    # print() in a worker stays print(): Ray Train's patch would show every line twice
    os.environ.setdefault(PRINT_PATCH_ENV, "0")
    # the job's shard actors start before the worker group and outlive its restarts
    shards = start_job_shards(config)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config.to_dict(), "run_dir": str(run_dir),
                           "verbose": verbose,
                           "shards": shards.handoff() if shards is not None else None},
        scaling_config=ScalingConfig(num_workers=d.num_workers, use_gpu=d.use_gpu,
                                     resources_per_worker={"CPU": cpus,
                                                           **d.worker_resources}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             # a worker group that does not start in time is not retried
                             failure_config=FailureConfig(max_failures=d.max_failures,
                                                          controller_failure_limit=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=d.keep_checkpoints)))
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - ray.train.TrainingFailedError and its wrappers
        _raise_failure(exc, config, cpus, run_dir)
    finally:
        if shards is not None:
            shards.shutdown()
    _raise_fatal(run_dir)  # a restarted group that stopped at once
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


def _raise_fatal(run_dir: Path) -> None:
    """The :class:`ConfigError` (or :class:`TrainingDiverged`) a worker left in
    ``.fatal.json``, if any."""
    from distgcl.methods import TrainingDiverged

    fatal = run_dir / FATAL_FILE
    if fatal.exists():
        info = json.loads(fatal.read_text())
        if info.get("kind") == "diverged":
            raise TrainingDiverged(info["error"])
        raise ConfigError(info["error"])


def _raise_failure(exc: BaseException, config: Config, cpus: int, run_dir: Path) -> None:
    """Turn what ``fit()`` raised into one of this module's one-line errors."""
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    _raise_fatal(run_dir)
    d = config.dist
    if isinstance(exc, ControllerError) and isinstance(exc.controller_failure,
                                                       WorkerGroupStartupTimeoutError):
        import ray

        raise InfeasibleRequest(
            f"{_describe(d.num_workers, cpus, d.use_gpu)}: the Ray cluster did not start them "
            f"within {d.startup_timeout_s:g} s (dist.startup_timeout_s); it has "
            f"{_have(ray.cluster_resources())}") from None
    if isinstance(exc, WorkerGroupError):
        raise DistributedTrainingFailed(_first_failure(exc.worker_failures), run_dir) from None
    if isinstance(exc, ControllerError):
        raise DistributedTrainingFailed(_error_line(exc.controller_failure), run_dir) from None
    raise exc


def _first_failure(failures: dict[int, BaseException]) -> str:
    """``rank R: why`` for the rank that failed first: a rank whose process died, else one
    whose error is not the broken connection to a dead peer, else the lowest rank."""
    def order(rank: int) -> tuple[int, int]:
        error = failures[rank]
        if _died(error):
            return 0, rank
        return (2 if _is_collateral(_error_line(error)) else 1), rank

    rank = min(failures, key=order)
    error = failures[rank]
    if _died(error):
        return f"rank {rank}: its process died ({_death_reason(error)})"
    return f"rank {rank}: {_error_line(error)}"


def _died(error: BaseException) -> bool:
    """The worker's process died (Ray's actor error), rather than raised."""
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError) or "process has died" in str(error)


def _is_collateral(line: str) -> bool:
    """An error a surviving rank sees when a peer died (not the cause)."""
    return any(s in line for s in ("Connection reset", "Connection closed", "Broken pipe",
                                   "Gloo", "gloo", "NCCL", "timed out", "Timed out"))


def _death_reason(error: BaseException) -> str:
    """Ray's ``Worker exit detail`` of a dead worker actor, up to its first sentence."""
    text = " ".join(str(error).split())
    key = "Worker exit detail:"
    if key in text:
        return text[text.index(key) + len(key):].strip().split(". ")[0].rstrip(".")
    return "the worker actor died unexpectedly"


def _error_line(error: BaseException) -> str:
    """The innermost error as one line (Ray wraps a worker's error in several layers; the
    last line of the innermost traceback is ``Type: message``)."""
    text = str(error).strip().splitlines()
    for line in reversed(text):
        if "Error" in line or "Diverged" in line or "Exception" in line:
            return line.strip()
    return text[-1].strip() if text else error.__class__.__name__
