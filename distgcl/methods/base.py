"""The one interface every GCL method implements (GRACE, NML-GCL, E2Neg, ...).

The single-process trainer (:mod:`distgcl.train`) and, later, the distributed trainer drive a
method only through this interface; a method never knows how many processes run it.

Life cycle, per run::

    method = Method(config, info, work)       # builds modules; work: this rank's share (Work)
    method.configure_optimizers()             # named optimizers; the trainer checkpoints them
    method.wrap_modules(wrap)                 # distributed runs: DDP around ddp_modules
    method.prepare(data, cache_dir)           # one-off preprocessing (E2Neg's spectral step)
    for epoch in range(1, epochs + 1):
        for batch in method.batches(data, epoch):   # full-batch: once; mini-batch: samples
            stats = method.training_step(batch)      # its own backward()/optimizer steps
    embeddings = method.embed(data)           # frozen embeddings for evaluation

A method never knows how many processes run it. Its :class:`~distgcl.work.Work` says which
anchors and which random streams are its own, and every :class:`~distgcl.work.Share` gives the
step's global anchor count, by which the method divides its summed per-anchor loss.

``training_step`` owns the optimizer steps because bi-level methods (NML-GCL) take several
optimizer steps of different parameter groups per outer step. It uses plain
``loss.backward()`` + ``optimizer.step()`` (no ``torch.autograd.grad``, no ``requires_grad``
toggling), and calls every module that gets gradients through :meth:`Method.module` (its
``forward``), so the data-parallel wrapper synchronises every gradient.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from distgcl.config import Config
from distgcl.work import Work


@dataclass(frozen=True)
class GraphInfo:
    """What a method may know about the dataset when it builds its modules."""

    num_nodes: int
    num_features: int
    num_classes: int
    multilabel: bool = False


class TrainingDiverged(RuntimeError):
    """Raised when a loss becomes NaN or infinite."""


class Method(nn.Module, abc.ABC):
    """Base class of GCL methods; subclasses set :attr:`name` and implement the abstract hooks."""

    name: ClassVar[str]
    shared_model_noise: bool = True
    """The global random stream (RReLU's slopes, dropout) draws the same numbers on every rank:
    right for a full-batch objective (every rank runs the whole forward, so data-parallel equals
    one process); a method whose ranks each run their own mini-batch sets it False (each rank
    its own noise, like its own samples)."""
    ddp_modules: ClassVar[tuple[str, ...]] = ()
    """Names of the child modules that get gradients (each is wrapped for data parallelism)."""
    prefetch_batches: bool = False
    """:meth:`batches` may run on a background thread while the step runs
    (:mod:`distgcl.prefetch`): true only where it draws from no global random stream (torch's,
    numpy's, python's: the step draws RReLU/dropout noise from torch's concurrently), only
    from the generators named in :attr:`batch_generators`, and calls no module."""
    batch_generators: ClassVar[tuple[str, ...]] = ()
    """The ``torch.Generator`` attributes :meth:`batches` draws from (and nothing else does):
    their states after each prefetched batch are what a checkpoint saves
    (:meth:`batch_state`)."""

    def can_train_from_store(self) -> bool:
        """Whether this method, as configured, trains with ``data=None`` from the trainer's
        graph store (``work.services.store``) alone: :meth:`prepare`, :meth:`batches` and the
        step then never touch a ``Data``. The trainer's workers then never load the graph."""
        return False

    def __init__(self, config: Config, info: GraphInfo, work: Work | None = None) -> None:
        super().__init__()
        self.config = config
        self.info = info
        self.work = work if work is not None else Work(seed=config.train.seed)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.counters: dict[str, int] = {"steps": 0}
        # wrapped modules live outside the module tree: state_dict() stays wrapper-free
        object.__setattr__(self, "_wrapped", {})

    def wrap_modules(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap every module of :attr:`ddp_modules` that has parameters (e.g. in DDP)."""
        for name in self.ddp_modules:
            module = getattr(self, name, None)
            if module is not None and any(True for _ in module.parameters()):
                self._wrapped[name] = wrap(module)

    def module(self, name: str) -> nn.Module:
        """The module ``name`` as training must call it: its wrapper if wrapped, else itself."""
        return self._wrapped.get(name) or getattr(self, name)

    @abc.abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create, store in :attr:`optimizers` and return the named optimizers."""

    def prepare(self, data: Data, cache_dir: Path | None = None,
                prepared: dict[str, Any] | None = None) -> None:
        """One-off preprocessing before the first epoch (default: nothing). ``prepared`` is what
        :meth:`prepared_state` returned before a checkpoint: a resume reuses it."""

    def prepared_state(self) -> dict[str, Any] | None:
        """The result of :meth:`prepare` worth keeping in a checkpoint (default: None)."""
        return None

    def steps_per_epoch(self, data: Data) -> int:
        """Optimizer (outer) steps per epoch; equal on every rank (default: 1, full batch)."""
        return 1

    def batches(self, data: Data, epoch: int, start_step: int = 0) -> Iterator[Any]:
        """The training batches of ``epoch`` from step ``start_step`` on (a mid-epoch resume
        skips the first steps without drawing anything) (default: the whole graph once)."""
        if start_step == 0:
            yield data

    @abc.abstractmethod
    def training_step(self, batch: Any) -> dict[str, float]:
        """One training step on ``batch``; returns at least ``{"loss": float}``."""

    @abc.abstractmethod
    def embed(self, data: Data) -> Tensor:
        """Frozen node embeddings ``[N, d]`` of the whole graph (no projection head)."""

    def check_finite(self, loss: Tensor, what: str = "loss") -> None:
        """Stop training with a clear error on a NaN/inf loss, before its ``backward()``: every
        rank learns whether any rank's loss is not finite (:attr:`Work.sum_over_ranks`), so all
        ranks stop at the same step with the same message instead of one rank stopping while
        the others wait in the gradient all-reduce."""
        bad = not bool(torch.isfinite(loss).all())
        value = float(loss.detach().sum()) if bad else 0.0
        total = self.work.sum_over_ranks({"nonfinite": float(bad), "value": value})
        if total["nonfinite"]:
            raise TrainingDiverged(f"{what} became {total['value']} (not finite); "
                                   "try a lower learning rate or a higher temperature")

    def get_extra_state(self) -> dict[str, Any]:
        """Every ``torch.Generator`` attribute (augmentations, samplers) and the step counters,
        so resumes are exact."""
        gens = {k: v.get_state() for k, v in vars(self).items() if isinstance(v, torch.Generator)}
        return {"generators": gens, "counters": dict(self.counters)}

    def batch_state(self) -> dict[str, Tensor]:
        """The states of :attr:`batch_generators` (taken by the prefetch thread after each batch;
        they replace the live ones in a checkpoint's :meth:`get_extra_state`)."""
        return {k: getattr(self, k).get_state() for k in self.batch_generators}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for key, value in state["generators"].items():
            gen = getattr(self, key)
            if value.numel() != gen.get_state().numel():  # a CPU state for a CUDA one, or back
                print(f"distgcl: {key}: checkpoint state is from another device type than "
                      f"{gen.device}; restarted from seed", flush=True)
                continue
            gen.set_state(value)
        self.counters = dict(state["counters"])

    def optimizer_state(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
