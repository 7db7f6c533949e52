"""Helpers for test_ddp.py: the same tiny methods built per rank, and one data-parallel step.

Kept out of the test module so that spawned ranks import only this (no pytest)."""
from __future__ import annotations

import faulthandler
import gc
from datetime import timedelta
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from distgcl.config import load_config
from distgcl.data import load_dataset
from distgcl.methods import GraphInfo, build_method
from distgcl.train import seed_everything
from distgcl.work import Work

SEED = 5
COMMON = ["data.csbm.num_nodes=240", "data.csbm.num_features=12", "data.csbm.num_classes=3",
          "model.out_dim=8", "model.activation=prelu", f"train.seed={SEED}", "train.lr=0.01"]
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


def build(kind: str, rank: int, world: int):
    """The method of ``kind`` for ``rank`` of ``world`` (same initial parameters everywhere),
    prepared, with a deterministic NMN activation so that a reference can replay the step."""
    config = load_config(None, CONFIGS[kind])
    data = load_dataset("csbm", seed=SEED, csbm=config.data.csbm).data
    seed_everything(SEED)
    method = build_method(config, GraphInfo(data.num_nodes, data.num_features, 3),
                          Work(rank=rank, world_size=world, seed=SEED))
    method.configure_optimizers()
    # SGD over the same parameter groups: Adam's first step is about lr * sign(g), blind to the
    # gradient's scale, so it could not tell a summed gradient from an averaged one
    method.optimizers = {name: torch.optim.SGD([p for g in opt.param_groups for p in g["params"]],
                                               lr=0.5)
                         for name, opt in method.optimizers.items()}
    if getattr(method, "nmn", None) is not None and hasattr(method.nmn, "act"):
        method.nmn.act = torch.nn.LeakyReLU(0.2)  # RReLU draws random slopes in training
    method.prepare(data, None)
    return method, data


def first_batch(method, data):
    return next(iter(method.batches(data, 1)))


RANK_TIMEOUT_S = 150
"""A rank that has not finished by then prints every thread's stack to stderr and exits with
status 1, so a hang becomes a failure that shows where it hung (CI would otherwise sit at it
until its own cap); also the bound on each collective."""


def rank_main(rank: int, world: int, kind: str, out: str) -> None:
    """One data-parallel training step on ``rank``; saves the resulting parameters.

    Rendezvous through a file in ``out`` rather than a TCP port picked in advance: a port that
    is free when the parent probes it can be taken (or self-connected to) before rank 0 binds.
    """
    import torch.distributed as dist

    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=True)
    dist.init_process_group("gloo", init_method=f"file://{Path(out) / 'rendezvous'}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=RANK_TIMEOUT_S))
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
    method, data = build(kind, rank, world)
    method.wrap_modules(lambda m: wrap_ddp(m, torch.device("cpu")))
    method.training_step(first_batch(method, data))
    torch.save({k: v.detach().clone() for k, v in method.named_parameters()},
               out / f"rank{rank}.pt")
