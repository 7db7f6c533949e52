"""What the one epoch loop (:func:`distgcl.train.run_training`) needs from the process it runs in.

:class:`Runtime` is the single-process implementation: one rank, no collectives, checkpoints in
``<out>/checkpoints``. The Ray Train implementation (:mod:`distgcl.distributed.trainer`) overrides
the same methods (DDP wrapping, barriers, gathers, checkpoints reported through
``ray.train.report``); the loop itself is the same code in both, and this module never imports Ray.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from distgcl.checkpoint import CheckpointManager, CorruptCheckpoint
from distgcl.work import GraphServices

T = TypeVar("T")


class Runtime:
    """Single-process runtime.

    Args:
        run_dir (Path, optional): the run's output folder (None: write nothing).
        device (torch.device, optional): the training device (default: CPU).
        keep_checkpoints (int, optional): complete checkpoints kept (default: ``2``).
    """

    rank: int = 0
    world_size: int = 1

    def __init__(self, run_dir: Path | None = None, device: torch.device | None = None,
                 keep_checkpoints: int = 2) -> None:
        self.run_dir = run_dir
        self.device = device if device is not None else torch.device("cpu")
        self.keep_checkpoints = keep_checkpoints

    @property
    def is_chief(self) -> bool:
        """Rank 0: writes the shared files, shows the progress bar, evaluates."""
        return self.rank == 0

    def graph_services(self, config: Any, cache_root: Path) -> GraphServices:
        """The graph operations this runtime runs for the method (here: none)."""
        if config.dist.shards:
            from distgcl.config import ConfigError

            raise ConfigError("dist.shards needs --num-workers N (dist.num_workers): graph "
                              "shards are Ray actors")
        return GraphServices()

    # ------------------------------------------------------------------ collectives
    def wrap(self, module: nn.Module) -> nn.Module:
        """The data-parallel wrapper of a module that gets gradients (here: the module)."""
        return module

    def barrier(self) -> None:
        """Wait for every rank."""

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        return [obj]

    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        """Element-wise sums over ranks (every rank must pass the same keys)."""
        return dict(values)

    def chief_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 first, then on the others (it fills a disk cache they reuse)."""
        if self.is_chief:
            out = fn()
            self.barrier()
            return out
        self.barrier()
        return fn()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_manager(self) -> CheckpointManager | None:
        """Where checkpoints are found and (by the chief) written."""
        if self.run_dir is None:
            return None
        return CheckpointManager(self.run_dir / "checkpoints", keep_latest_k=self.keep_checkpoints)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The newest usable checkpoint (damaged ones are skipped with one line), or None; the
        same one on every rank: the chief chooses it and tells the others, who load that one
        (storage may look different from another node). A rank that cannot read it stops every
        rank with :class:`~distgcl.checkpoint.CorruptCheckpoint`."""
        manager = self.checkpoint_manager()
        if manager is None:
            return None
        found = manager.newest_valid() if self.is_chief else None
        name = self.all_gather_object(found[0] if found is not None else None)[0]
        state, error = (found[1] if found is not None else None), ""
        if name is not None and not self.is_chief:
            try:
                state = manager.load_named(name)
            except CorruptCheckpoint as exc:
                error = f"rank {self.rank} cannot read checkpoint {name} chosen by rank 0 ({exc})"
        errors = [e for e in self.all_gather_object(error) if e]
        if errors:
            raise CorruptCheckpoint(errors[0])
        return state

    def save_checkpoint(self, step: int, state: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Called by every rank; the chief writes ``state`` (already gathered over ranks)."""
        manager = self.checkpoint_manager()
        if manager is not None and self.is_chief:
            manager.save(step, state)

    def report(self, metrics: dict[str, Any]) -> None:
        """Final metrics of the run (every rank calls it once)."""

    def worker_info(self) -> dict[str, Any]:
        """What result.json records about the process layout."""
        return {"world_size": self.world_size}
