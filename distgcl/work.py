r"""What one training process owns: its share of the anchors and its random-number streams.

The trainer hands every method a :class:`Work` (the *rank context*). A method never asks how many
processes run it; it asks its :class:`Work` for

* **its anchors** — :meth:`Work.share` (a contiguous block of a fixed id list: the rows of a
  full-batch objective, the centres of E2Neg) or :meth:`Work.epoch_batches` (mini-batches of one
  seeded permutation of all anchors, shared by every rank, of which each rank takes its slice);
* **its random streams** — :meth:`Work.generator` with ``shared=True`` draws the same numbers on
  every rank (the two augmented views of a full-batch objective, so that the ranks' rows add up to
  the single-process objective), ``shared=False`` draws a stream of its own, derived from the seed
  and the rank (negative blocks, neighbour sampling, the views of a sampled subgraph).

Every :class:`Share` carries ``total``, the number of anchors of the *whole* step over all ranks.
A method's loss is ``sum over its own anchors / total``; the data-parallel wrapper sums the ranks'
gradients (:mod:`distgcl.distributed.ddp`), so the gradient is exactly the single-process one for
full-batch objectives and the mean over the global batch for mini-batches. With one process
(``Work()``) every share is everything and ``total`` is its size: the plain mean.

Heavy graph operations the trainer may run elsewhere come as :class:`GraphServices` on the
:class:`Work` (e.g. the spectral step over graph-shard actors); a method uses a service when it is
there and its own single-process code otherwise, so it never knows what runs it.

Streams are derived with :class:`numpy.random.SeedSequence` from ``(seed, purpose, rank)``, so they
are independent across purposes and ranks and identical across runs with the same seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

# Purposes of the random streams (any distinct integers; fixed so runs stay reproducible).
STREAM_AUGMENT = 1
STREAM_NEGATIVES = 2
STREAM_SAMPLING = 3
STREAM_EPOCH_ORDER = 4
STREAM_GLOBAL = 5


def derive_seed(seed: int, purpose: int, rank: int | None = None) -> int:
    """A 63-bit seed from ``(seed, purpose[, rank])``; ``rank=None`` gives the shared stream."""
    entropy = [int(seed) % 2**63, int(purpose)] + ([] if rank is None else [int(rank) + 1])
    return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).view(np.uint64)[0]
               % 2**63)


@dataclass(frozen=True)
class Share:
    """This rank's part of one step: its anchor ids and the step's anchor count over all ranks."""

    ids: Tensor
    """``[B]`` anchor ids owned by this rank (may be empty on a rank with nothing left)."""
    total: int
    """Anchors of the whole step, summed over ranks (the loss normaliser)."""
    complete: bool = False
    """True when ``ids`` are all the anchors of the step (one process)."""
    step: int = 0
    """Index of this step within its epoch."""


@dataclass(frozen=True)
class GraphServices:
    """Graph operations a trainer provides beside the rank context (default: none).

    ``eigensolver(adjacency, k, *, solver, tol, maxiter, seed, pad, max_matvecs, dtype,
    progress) -> Eigenpairs``: the :math:`k` smallest eigenpairs of the normalized Laplacian of
    the symmetric ``adjacency`` (scipy CSR), trivial ones first, as
    :func:`~distgcl.spectral.eigensolvers.smallest_eigenpairs` with the null space of its
    components; its ``cache_tag`` attribute enters the caller's cache key.

    ``store``: a :class:`~distgcl.store.BaseGraphStore` the method's mini-batches come from
    (features, labels, sampled subgraphs, induced edges in original ids), e.g. a
    :class:`~distgcl.store.ShardedGraphStore` over the job's graph-shard actors; none: the
    method wraps its ``Data`` in a :class:`~distgcl.store.LocalGraphStore`.

    ``dataset_info``: with a ``store``, the :class:`~distgcl.data.DatasetInfo` of its graph (name,
    sizes, split), so that the worker need not load the dataset.
    """

    eigensolver: Callable[..., Any] | None = None
    store: Any = None
    dataset_info: Any = None


@dataclass(frozen=True)
class Work:
    """The rank context (see the module docstring).

    Args:
        rank (int, optional): this process's rank (default: ``0``).
        world_size (int, optional): number of processes (default: ``1``).
        seed (int, optional): the run seed, ``train.seed`` (default: ``0``).
        device (torch.device, optional): where generators for on-device draws live
            (default: CPU).
        services (GraphServices, optional): graph operations the trainer runs for the method
            (default: none: the method's own code).
        sum_over_ranks (callable, optional): element-wise sums of a ``{name: float}`` dict over
            all ranks, a collective every rank calls at the same point (the trainer's
            ``Runtime.all_reduce_sum``; default: one process, the dict itself).
    """

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    services: GraphServices = field(default_factory=GraphServices)
    sum_over_ranks: Callable[[dict[str, float]], dict[str, float]] = dict

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size (got rank={self.rank}, "
                             f"world_size={self.world_size})")

    # ------------------------------------------------------------------ random streams
    def generator(self, purpose: int, *, shared: bool = False,
                  device: torch.device | str | None = None) -> torch.Generator:
        """A fresh seeded generator; ``shared=True``: the same on every rank."""
        dev = torch.device(device) if device is not None else self.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(derive_seed(self.seed, purpose, None if shared else self.rank))
        return gen

    def global_seed(self, shared: bool = False) -> int:
        """Seed of the global RNGs (torch, numpy, random: RReLU's slopes, dropout);
        ``shared=True``: the same on every rank (a full-batch objective, where every rank runs
        the whole forward and must draw the single-process noise)."""
        return derive_seed(self.seed, STREAM_GLOBAL, None if shared else self.rank)

    # ------------------------------------------------------------------ anchors
    def share(self, ids: Tensor) -> Share:
        """This rank's contiguous block of ``ids`` (sizes differ by at most one; no padding, so
        the blocks of all ranks are exactly ``ids``)."""
        n = ids.numel()
        lo = (n * self.rank) // self.world_size
        hi = (n * (self.rank + 1)) // self.world_size
        return Share(ids[lo:hi], total=n, complete=self.world_size == 1)

    def epoch_order(self, num_anchors: int, epoch: int) -> Tensor:
        """The seeded permutation of ``range(num_anchors)`` of ``epoch``, identical on all ranks
        and a pure function of ``(seed, epoch)`` (so a resume needs no sampler state)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed + epoch, STREAM_EPOCH_ORDER))
        return torch.randperm(num_anchors, generator=gen)

    def steps_per_epoch(self, num_anchors: int, batch_size: int, max_steps: int = 0) -> int:
        """Optimizer steps of one epoch: every anchor once over all ranks."""
        per_rank = math.ceil(num_anchors / self.world_size)
        steps = math.ceil(per_rank / batch_size)
        return min(steps, max_steps) if max_steps else steps

    def epoch_batches(self, num_anchors: int, epoch: int, batch_size: int, *,
                      max_steps: int = 0, start_step: int = 0) -> Iterator[Share]:
        """Mini-batches of ``epoch``: rank ``r`` takes slice ``r`` of :meth:`epoch_order`
        (padded by wrapping around, like ``DistributedSampler``, so every rank takes the same
        number of equally sized steps: DDP needs lock-step), cut into ``batch_size`` pieces.

        ``start_step`` skips the first steps (a mid-epoch resume) without drawing anything.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        order = self.epoch_order(num_anchors, epoch)
        per_rank = math.ceil(num_anchors / self.world_size)
        padded = per_rank * self.world_size
        if padded > num_anchors:
            order = torch.cat([order, order[:padded - num_anchors]])
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        steps = self.steps_per_epoch(num_anchors, batch_size, max_steps)
        for step in range(start_step, steps):
            ids = mine[step * batch_size:(step + 1) * batch_size]
            yield Share(ids, total=ids.numel() * self.world_size,
                        complete=self.world_size == 1 and ids.numel() == num_anchors, step=step)


__all__ = ["GraphServices", "Share", "Work", "derive_seed", "STREAM_AUGMENT", "STREAM_NEGATIVES",
           "STREAM_SAMPLING", "STREAM_EPOCH_ORDER", "STREAM_GLOBAL"]
