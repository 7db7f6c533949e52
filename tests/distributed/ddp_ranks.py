"""Helpers for test_ddp.py: the same tiny methods built per rank, and one data-parallel step.

Kept out of the test module so that spawned ranks import only this (no pytest)."""
from __future__ import annotations

import faulthandler
import gc
import json
from datetime import timedelta
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from distgcl.config import load_config
from distgcl.data import load_dataset
from distgcl.methods import GraphInfo, build_method
from distgcl.runtime import Runtime
from distgcl.train import run_training, seed_everything, seed_model_noise
from distgcl.work import Work

SEED = 5
COMMON = ["data.csbm.num_nodes=240", "data.csbm.num_features=12", "data.csbm.num_classes=3",
          "model.out_dim=8", "model.activation=rrelu", f"train.seed={SEED}", "train.lr=0.01"]
"""The shipped activation (RReLU: random slopes in training, as in the NML configs and the NMN)."""
CONFIGS = {
    "grace": ["method=grace", "model.proj_dim=8", *COMMON],
    "nml": ["method=nml", "model.proj_dim=0", "model.hidden_dim=8", "model.activate_last=false",
            "nml.mode=minibatch", "nml.batch_size=40", "nml.num_negatives=30",
            "nml.num_neighbors=[4,4]", "nml.inner_steps=2", *COMMON],
    "e2neg+nml": ["method=e2neg", "model.layers=1", "model.proj_dim=8", "e2neg.clusters=6",
                  "e2neg.num_neighbors=10", "e2neg.min_neighbors=5", "e2neg.nml=true",
                  "e2neg.nml_inner_steps=2", "e2neg.nml_hidden=8", "e2neg.cache=false",
                  "train.progress=false", *COMMON],
}


def build(kind: str, rank: int, world: int, sum_over_ranks=dict):
    """The method of ``kind`` for ``rank`` of ``world`` (same initial parameters everywhere),
    prepared, its model noise seeded as the trainer seeds it (``train.seed_model_noise``)."""
    config = load_config(None, CONFIGS[kind])
    data = load_dataset("csbm", seed=SEED, csbm=config.data.csbm).data
    seed_everything(SEED)
    method = build_method(config, GraphInfo(data.num_nodes, data.num_features, 3),
                          Work(rank=rank, world_size=world, seed=SEED,
                               sum_over_ranks=sum_over_ranks))
    method.configure_optimizers()
    # SGD over the same parameter groups: Adam's first step is about lr * sign(g), blind to the
    # gradient's scale, so it could not tell a summed gradient from an averaged one
    method.optimizers = {name: torch.optim.SGD([p for g in opt.param_groups for p in g["params"]],
                                               lr=0.5)
                         for name, opt in method.optimizers.items()}
    method.prepare(data, None)
    seed_model_noise(method)
    return method, data


def first_batch(method, data):
    return next(iter(method.batches(data, 1)))


RANK_TIMEOUT_S = 150
"""A rank that has not finished by then prints every thread's stack to stderr and exits with
status 1, so a hang becomes a failure that shows where it hung (CI would otherwise sit at it
until its own cap); also the bound on each collective."""


def _init_group(rank: int, world: int, out: Path, timeout_s: float = RANK_TIMEOUT_S) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout_s))


class GlooRuntime(Runtime):
    """The trainer's runtime over a plain gloo process group (what Ray Train's runtime does,
    without Ray): barriers, gathers, sums and DDP wrapping over ``torch.distributed``."""

    def __init__(self, rank: int, world: int, run_dir: Path | None) -> None:
        super().__init__(run_dir)
        self.rank, self.world_size = rank, world

    def wrap(self, module):
        from distgcl.distributed.ddp import wrap_ddp

        return wrap_ddp(module, self.device)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def all_gather_object(self, obj):
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, values):
        import torch.distributed as dist

        keys = sorted(values)
        buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(buf)
        return dict(zip(keys, buf.tolist()))


def resume_rank_main(rank: int, world: int, out: str) -> None:
    """Load the checkpoint of ``out/rank<R>`` (this rank's view of the storage) through the
    runtime; save which step it got (or the error)."""
    import torch.distributed as dist

    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=True)
    _init_group(rank, world, Path(out))
    try:
        runtime = GlooRuntime(rank, world, Path(out) / f"rank{rank}")
        try:
            got = {"step": runtime.load_checkpoint()["step"]}
        except Exception as exc:  # noqa: BLE001 - the test compares what each rank got
            got = {"error": f"{type(exc).__name__}: {exc}"}
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


NAN_RANK, NAN_FROM_STEP = 1, 4
"""The divergence test: rank 1's NML loss becomes NaN from its 5th outer step (epoch 2)."""


def diverge_rank_main(rank: int, world: int, out: str) -> None:
    """``run_training`` (NML mini-batch, DDP over gloo) whose rank ``NAN_RANK`` alone gets a NaN
    loss; saves the exception each rank ended with."""
    import torch.distributed as dist

    from distgcl.methods.nml import NML

    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=True)
    torch.set_num_threads(1)
    _init_group(rank, world, Path(out), timeout_s=30)
    loss = NML.loss

    def poisoned(self, *args, **kwargs):
        value, parts = loss(self, *args, **kwargs)
        if self.work.rank == NAN_RANK and self.counters["outer_steps"] >= NAN_FROM_STEP:
            value = value * float("nan")
        return value, parts

    NML.loss = poisoned
    config = load_config(None, [*CONFIGS["nml"], "train.epochs=3", "train.progress=false"])
    try:
        run_training(config, Path(out) / "run", GlooRuntime(rank, world, Path(out) / "run"))
        got = "finished"
    except Exception as exc:  # noqa: BLE001 - the test compares what each rank ended with
        got = f"{type(exc).__name__}: {exc}"
    finally:
        gc.collect()
        dist.destroy_process_group()
    (Path(out) / f"rank{rank}.txt").write_text(got)
    faulthandler.cancel_dump_traceback_later()


def single_step_main(kind: str, out: str) -> None:
    """One single-process step of ``kind`` (world size 1); saves the parameters."""
    torch.set_num_threads(1)
    method, data = build(kind, 0, 1)
    method.training_step(first_batch(method, data))
    torch.save({k: v.detach().clone() for k, v in method.named_parameters()},
               Path(out) / "single.pt")


def rank_main(rank: int, world: int, kind: str, out: str) -> None:
    """One data-parallel training step on ``rank``; saves the resulting parameters.

    Rendezvous through a file in ``out`` rather than a TCP port picked in advance: a port that
    is free when the parent probes it can be taken (or self-connected to) before rank 0 binds.
    """
    import torch.distributed as dist

    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=True)
    _init_group(rank, world, Path(out))
    try:
        _step_and_save(rank, world, kind, Path(out))
        # the DDP modules die here, while their process group still exists: a reducer freed
        # after destroy_process_group() (at the caller's frame teardown) blocked rank 0 forever
        # on CI, with the parameters already saved
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
        if alive:
            raise RuntimeError(f"{len(alive)} DDP module(s) outlive the step")
    finally:
        dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


def _step_and_save(rank: int, world: int, kind: str, out: Path) -> None:
    from distgcl.distributed.ddp import wrap_ddp

    torch.set_num_threads(1)
    method, data = build(kind, rank, world, GlooRuntime(rank, world, None).all_reduce_sum)
    method.wrap_modules(lambda m: wrap_ddp(m, torch.device("cpu")))
    method.training_step(first_batch(method, data))
    torch.save({k: v.detach().clone() for k, v in method.named_parameters()},
               out / f"rank{rank}.pt")
