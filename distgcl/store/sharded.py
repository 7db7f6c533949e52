r"""The sharded backend: a graph store over :data:`~distgcl.distributed.shards.GraphShard`
actors (started elsewhere: by the job's driver, or a test).

It holds only the actor handles, the partition bounds and the sizes, so it pickles (Ray actor
handles do) and costs O(1) memory beyond one batch; every answer comes from the shards through
:class:`~distgcl.distributed.sampling.ShardedNeighborSampler`, which speaks original ids (the
partition's renumbering stays inside the shards) and draws the same random keys as the local
sampler. Ray is imported only when the first call is made, by that module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from distgcl.sampling import SampledSubgraph
from distgcl.store.base import BaseGraphStore
from distgcl.typing import NodeIds


class ShardedGraphStore(BaseGraphStore):
    r"""A :class:`~distgcl.store.base.BaseGraphStore` over graph-shard actors.

    Args:
        actors (list): the :math:`P` started actor handles, shard order (serving ``sampling``
            or ``all``).
        bounds (list[int]): the partition's :math:`P + 1` row bounds (``manifest.bounds``).
        num_features (int): :math:`F` (``manifest.num_features``).
        num_classes (int, optional): classes or tasks of the labels (default: ``0``).
        multilabel (bool, optional): (default: :obj:`False`).
        timeout (float, optional): seconds per round of calls (default: ``120``).
        manifest_path (str, optional): the partition's ``manifest.json``, for services that
            need more than sampling (default: none).
    """

    def __init__(self, actors: Sequence[Any], bounds: Sequence[int], num_features: int,
                 num_classes: int = 0, multilabel: bool = False, timeout: float = 120.0,
                 manifest_path: str | Path | None = None) -> None:
        super().__init__()
        if len(bounds) != len(actors) + 1:
            raise ValueError(f"{len(actors)} shard actors need {len(actors) + 1} bounds "
                             f"(got {len(bounds)})")
        self.actors = list(actors)
        self.bounds = [int(b) for b in bounds]
        self._num_features, self._num_classes = int(num_features), int(num_classes)
        self._multilabel = bool(multilabel)
        self.timeout = float(timeout)
        self.manifest_path = None if manifest_path is None else str(manifest_path)
        self._samplers: dict[tuple[tuple[int, ...], bool], Any] = {}

    @classmethod
    def from_shards(cls, shards: Any, num_classes: int = 0, multilabel: bool = False,
                    timeout: float = 120.0) -> "ShardedGraphStore":
        """The store of started :class:`~distgcl.distributed.shards.GraphShards`."""
        m = shards.manifest
        return cls(shards.actors, m.bounds, m.num_features, num_classes, multilabel, timeout,
                   manifest_path=m.path)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_samplers"] = {}  # rebuilt on first use (their call counters stay here)
        return state

    @property
    def num_shards(self) -> int:
        return len(self.actors)

    @property
    def num_nodes(self) -> int:
        return self.bounds[-1]

    @property
    def num_features(self) -> int:
        return self._num_features

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def multilabel(self) -> bool:
        return self._multilabel

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self._samplers.values())

    def _sampler(self, num_neighbors: Sequence[int] = (1,), replace: bool = False) -> Any:
        from distgcl.distributed.sampling import ShardedNeighborSampler  # imports Ray

        key = (tuple(int(k) for k in num_neighbors), bool(replace))
        if key not in self._samplers:
            self._samplers[key] = ShardedNeighborSampler.from_actors(
                self.actors, self.bounds, list(key[0]), replace=replace, timeout=self.timeout)
        return self._samplers[key]

    def features(self, ids: NodeIds) -> Tensor:
        return self._sampler().features(torch.as_tensor(ids).cpu())

    def labels(self, ids: NodeIds) -> Tensor:
        return self._sampler().labels(torch.as_tensor(ids).cpu())

    def sample(self, seeds: NodeIds, num_neighbors: Sequence[int],
               generator: torch.Generator | None = None, replace: bool = False
               ) -> SampledSubgraph:
        return self._sampler(num_neighbors, replace).sample(torch.as_tensor(seeds).cpu(),
                                                            generator)

    def induced_edges(self, ids: NodeIds) -> tuple[Tensor, Tensor]:
        return self._sampler().induced_edges(torch.as_tensor(ids).cpu())


__all__ = ["ShardedGraphStore"]
