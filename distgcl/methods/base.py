"""The one interface every GCL method implements (GRACE, NML-GCL, E2Neg, ...).

The single-process trainer (:mod:`distgcl.train`) and, later, the distributed trainer drive a
method only through this interface; a method never knows how many processes run it.

Life cycle, per run::

    method = Method(config, info)             # builds modules
    method.configure_optimizers()             # named optimizers; the trainer checkpoints them
    method.prepare(data, cache_dir)           # one-off preprocessing (E2Neg's spectral step)
    for epoch in range(epochs):
        for batch in method.batches(data):    # full-batch: the graph once; mini-batch: samples
            stats = method.training_step(batch)   # does its own backward()/optimizer steps
    embeddings = method.embed(data)           # frozen embeddings for evaluation

``training_step`` owns the optimizer steps because bi-level methods (NML-GCL) take several
optimizer steps of different parameter groups per outer step. It must use plain
``loss.backward()`` + ``optimizer.step()`` (no ``torch.autograd.grad``) so that wrapping modules
in DDP later works unchanged.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from distgcl.config import Config


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

    def __init__(self, config: Config, info: GraphInfo) -> None:
        super().__init__()
        self.config = config
        self.info = info
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @abc.abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create, store in :attr:`optimizers` and return the named optimizers."""

    def prepare(self, data: Data, cache_dir: Path | None = None) -> None:
        """One-off preprocessing before the first epoch (default: nothing)."""

    def batches(self, data: Data) -> Iterator[Any]:
        """The training batches of one epoch (default: the whole graph once, full-batch)."""
        yield data

    @abc.abstractmethod
    def training_step(self, batch: Any) -> dict[str, float]:
        """One training step on ``batch``; returns at least ``{"loss": float}``."""

    @abc.abstractmethod
    def embed(self, data: Data) -> Tensor:
        """Frozen node embeddings ``[N, d]`` of the whole graph (no projection head)."""

    @staticmethod
    def check_finite(loss: Tensor, what: str = "loss") -> None:
        """Stop training with a clear error on a NaN/inf loss (before any optimizer step)."""
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"{what} became {loss.item()} (not finite); "
                                   "try a lower learning rate or a higher temperature")

    def get_extra_state(self) -> dict[str, Any]:
        """Checkpoint every ``torch.Generator`` attribute (samplers), so resumes are exact."""
        return {k: v.get_state() for k, v in vars(self).items() if isinstance(v, torch.Generator)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).set_state(value)

    def optimizer_state(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
