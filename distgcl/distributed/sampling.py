r"""Mini-batch subgraphs sampled from graph-shard actors instead of a local copy of the graph.

:class:`ShardedNeighborSampler` has the interface of
:class:`~distgcl.sampling.CSRNeighborSampler` (``.sample(seeds, generator) ->``
:class:`~distgcl.sampling.SampledSubgraph`, global original ids, seeds first) plus
``.features(ids)`` / ``.labels(ids)``. It runs the same hop loop
(:func:`~distgcl.sampling.sample_from_lists`) and draws the same random keys, in the same order
and number, on the caller's side (:func:`~distgcl.sampling.select_neighbors` needs only the
frontier's in-degrees), so for the same seeds and generator state it returns **exactly** the
subgraph the local sampler returns on the graph that was partitioned.

Per hop it makes two rounds of calls, each to the shards that own part of the frontier: the
in-degrees of the frontier nodes, then only the selected in-edges (source ids in the original
and in the partition numbering, edge ids). Seeds are located (original -> partition id) by
asking every shard which of them it owns; features likewise. The caller keeps O(batch) memory:
no O(N) or O(E) array, so a Ray Train worker's RSS does not grow with the graph.

The sampler holds only actor handles and the partition bounds, so it pickles: build it on the
driver and hand it to workers.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import ray
import torch
from torch import Tensor

from distgcl.distributed.shards import GraphShards, _tensor
from distgcl.sampling import (SampledSubgraph, _check_fanout, check_seeds, sample_from_lists,
                              select_neighbors)
from distgcl.typing import NodeIds


class ShardedNeighborSampler:
    r"""Uniform neighbour sampling through graph-shard actors (module docstring).

    Args:
        shards (GraphShards): started actors of the partition (or use :meth:`from_actors`).
        num_neighbors (list[int]): fan-out per hop; -1 takes every neighbour.
        replace (bool, optional): sample with replacement (default: :obj:`False`).
        timeout (float, optional): seconds to wait for one round of calls (default: ``120``).

    Shapes:
        - **input:** ``seeds`` :math:`(B,)` distinct original ids
        - **output:** :class:`~distgcl.sampling.SampledSubgraph`
    """

    def __init__(self, shards: GraphShards, num_neighbors: Sequence[int], replace: bool = False,
                 timeout: float = 120.0) -> None:
        self._setup(list(shards.actors), list(shards.manifest.bounds), num_neighbors, replace,
                    timeout)

    @classmethod
    def from_actors(cls, actors: Sequence[Any], bounds: Sequence[int],
                    num_neighbors: Sequence[int], replace: bool = False,
                    timeout: float = 120.0) -> "ShardedNeighborSampler":
        """A sampler on actor handles and the partition's ``bounds`` (e.g. inside a worker)."""
        self = cls.__new__(cls)
        self._setup(list(actors), list(bounds), num_neighbors, replace, timeout)
        return self

    def _setup(self, actors: list[Any], bounds: list[int], num_neighbors: Sequence[int],
               replace: bool, timeout: float) -> None:
        if len(bounds) != len(actors) + 1:
            raise ValueError(f"{len(actors)} actors need {len(actors) + 1} bounds")
        self.actors = actors
        self.bounds = torch.tensor(bounds, dtype=torch.long)
        self.num_nodes = int(bounds[-1])
        self.num_neighbors = _check_fanout(num_neighbors)
        self.replace = replace
        self.timeout = float(timeout)
        self.calls = 0

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(shards={len(self.actors)}, "
                f"num_nodes={self.num_nodes}, num_neighbors={self.num_neighbors}, "
                f"replace={self.replace})")

    # ------------------------------------------------------------------ routing

    def _by_owner(self, new_ids: Tensor) -> list[tuple[int, Tensor]]:
        """``(shard, positions)`` for every shard that owns some of ``new_ids``."""
        owner = torch.searchsorted(self.bounds, new_ids, right=True) - 1
        order = torch.argsort(owner, stable=True)
        counts = torch.bincount(owner, minlength=len(self.actors)).tolist()
        out, start = [], 0
        for p, c in enumerate(counts):
            if c:
                out.append((p, order[start:start + c]))
            start += c
        return out

    def _get(self, refs: list[Any]) -> list[Any]:
        self.calls += 1
        return ray.get(refs, timeout=self.timeout)

    def _broadcast(self, method: str, ids: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        arr = ids.numpy()
        return self._get([getattr(a, method).remote(arr) for a in self.actors])

    def locate(self, ids: NodeIds) -> Tensor:
        """Partition ids of original ids (asks every shard which of them it owns)."""
        ids = ids.long().flatten()
        new = torch.full((ids.numel(),), -1, dtype=torch.long)
        for pos, found in self._broadcast("locate", ids):
            new[_tensor(pos)] = _tensor(found)
        if bool((new < 0).any()):
            raise ValueError(f"node ids not in the partition: {ids[new < 0][:5].tolist()}")
        return new

    def _in_degree(self, frontier: Tensor, new: Tensor | None) -> Tensor:
        assert new is not None
        groups = self._by_owner(new)
        parts = self._get([self.actors[p].in_degree.remote(new[pos].numpy())
                           for p, pos in groups])
        deg = torch.empty(new.numel(), dtype=torch.long)
        for (_, pos), d in zip(groups, parts):
            deg[pos] = _tensor(d).long()
        return deg

    def _in_edges(self, frontier: Tensor, new: Tensor | None, owner: Tensor, offset: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor]:
        assert new is not None
        target = new[owner]
        groups = self._by_owner(target)
        parts = self._get([self.actors[p].in_edges.remote(target[pos].numpy(),
                                                          offset[pos].numpy())
                           for p, pos in groups])
        e = target.numel()
        src_old = torch.empty(e, dtype=torch.long)
        src_new = torch.empty(e, dtype=torch.long)
        eid = torch.empty(e, dtype=torch.long)
        for (_, pos), (so, sn, ei) in zip(groups, parts):
            src_old[pos], src_new[pos], eid[pos] = _tensor(so), _tensor(sn), _tensor(ei)
        return src_old, eid, src_new

    # ------------------------------------------------------------------ public

    def sample(self, seeds: NodeIds, generator: torch.Generator | None = None
               ) -> SampledSubgraph:
        """The sampled subgraph of ``seeds`` (same as the local sampler's for the same seeds and
        generator state)."""
        seeds = check_seeds(seeds, self.num_nodes)
        return sample_from_lists(seeds, self.num_neighbors, self._in_degree, self._in_edges,
                                 replace=self.replace, generator=generator,
                                 seed_aux=self.locate(seeds) if seeds.numel() else seeds)

    def _rows(self, method: str, ids: NodeIds) -> Tensor:
        ids = ids.long().flatten()
        parts = self._broadcast(method, ids)
        out: Tensor | None = None
        filled = torch.zeros(ids.numel(), dtype=torch.bool)
        for pos, rows in parts:
            rows_t = _tensor(rows)
            if out is None:
                out = torch.empty((ids.numel(), *rows_t.shape[1:]), dtype=rows_t.dtype)
            p = _tensor(pos)
            out[p] = rows_t
            filled[p] = True
        if out is None or not bool(filled.all()):
            raise ValueError(f"node ids not in the partition: {ids[~filled][:5].tolist()}")
        return out

    def features(self, ids: NodeIds) -> Tensor:
        """Feature rows :math:`(n, F)` (float32) of original ids ``ids``, from the shards."""
        return self._rows("features", ids)

    def labels(self, ids: NodeIds) -> Tensor:
        """Labels of original ids ``ids``, from the shards."""
        return self._rows("labels", ids)

    def induced_edges(self, ids: NodeIds) -> tuple[Tensor, Tensor]:
        """The directed edges among the distinct original ids ``ids`` :math:`(n,)`:
        ``(edge_index [2, e] local ids into ids, e_id [e])`` ordered by edge id, as
        :func:`torch_geometric.utils.subgraph` on the partitioned graph.

        Three rounds: locate, in-degrees, every in-edge of the set's nodes (sources filtered
        here: the transfer is the set's in-edges, including those from outside it)."""
        ids = check_seeds(ids, self.num_nodes)
        if not ids.numel():
            empty = torch.empty(0, dtype=torch.long)
            return torch.stack([empty, empty]), empty
        new = self.locate(ids)
        owner, offset = select_neighbors(self._in_degree(ids, new), -1)
        src_old, eid, _ = self._in_edges(ids, new, owner, offset)
        order_ids, pos_sorted = torch.sort(ids)
        where = torch.searchsorted(order_ids, src_old).clamp_max(ids.numel() - 1)
        inside = order_ids[where] == src_old
        src_local, dst_local, eid = pos_sorted[where[inside]], owner[inside], eid[inside]
        by_eid = torch.argsort(eid)
        return torch.stack([src_local[by_eid], dst_local[by_eid]]), eid[by_eid]
