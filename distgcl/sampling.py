r"""Neighbour sampling and negative blocks for mini-batch training.

:func:`make_neighbor_sampler` returns a sampler that maps a batch of seed nodes to a sampled
multi-hop subgraph (GraphSAGE-style, as PyG's ``NeighborLoader``):

* PyG's :class:`torch_geometric.sampler.NeighborSampler` when ``pyg-lib`` or ``torch-sparse`` is
  importable (``torch_geometric.typing.WITH_PYG_LIB`` / ``WITH_TORCH_SPARSE``), since those are
  compiled and fast;
* otherwise :class:`CSRNeighborSampler`, a vectorized pure-torch sampler on a CSR
  (by target node) copy of the graph, which needs no extension.

Both return a :class:`SampledSubgraph` with the same layout as a ``NeighborLoader`` batch:
``n_id`` (global ids, **seeds first**), ``batch_size`` (number of seeds) and ``edge_index`` in
local ids, oriented neighbour -> sampled node (``source_to_target`` message flow, so a GNN run
on the subgraph computes the seed rows from their sampled neighbourhoods).

Memory is O(sampled nodes + sampled edges) per call plus the O(N + E) CSR built once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch
from torch import Tensor

from distgcl.typing import EdgeIndex, NodeIds


@dataclass
class SampledSubgraph:
    """A sampled neighbourhood of a batch of seeds (layout of a PyG ``NeighborLoader`` batch)."""

    n_id: NodeIds
    """``[n]`` global node ids; the first ``batch_size`` are the seeds, in input order."""
    edge_index: EdgeIndex
    """``[2, e]`` local ids into ``n_id``; ``edge_index[0]`` is the sampled neighbour (source),
    ``edge_index[1]`` the node it was sampled for (target)."""
    batch_size: int
    """Number of seeds."""
    e_id: NodeIds | None = None
    """``[e]`` global ids of the sampled edges (columns of the input ``edge_index``)."""
    num_sampled_nodes: list[int] | None = None
    """Nodes added per hop, starting with the seeds."""
    num_sampled_edges: list[int] | None = None
    """Edges sampled per hop."""

    @property
    def num_nodes(self) -> int:
        return self.n_id.numel()


class NeighborSamplerLike(Protocol):
    def sample(self, seeds: NodeIds, generator: torch.Generator | None = None
               ) -> SampledSubgraph: ...


def _check_fanout(num_neighbors: Sequence[int]) -> list[int]:
    fan = [int(k) for k in num_neighbors]
    if not fan:
        raise ValueError("num_neighbors needs at least one hop")
    for k in fan:
        if k == 0 or k < -1:
            raise ValueError(f"num_neighbors entries must be >= 1 or -1 for all (got {fan})")
    return fan


class CSRNeighborSampler:
    r"""Vectorized pure-torch uniform neighbour sampler (no ``pyg-lib`` / ``torch-sparse``).

    Hop :math:`h` draws, for every node added at hop :math:`h-1` (the seeds for :math:`h=1`),
    ``num_neighbors[h-1]`` of its in-neighbours uniformly without replacement (all of them when it
    has fewer, or when the fan-out is -1; with replacement if ``replace``). Nodes seen before keep
    their local id and are not expanded again, as in PyG's (non-disjoint) ``NeighborSampler``.
    Within a hop, newly reached nodes get local ids in increasing global-id order.

    Sampling without replacement is done for all frontier nodes at once: every candidate edge
    gets a uniform random key, edges are sorted by (frontier node, key) and the first
    :math:`k` of each segment are kept. Cost O(sum of frontier degrees * log) per hop.

    Args:
        edge_index (Tensor): :math:`(2, E)` graph edges, source -> target.
        num_nodes (int): :math:`N`.
        num_neighbors (list[int]): fan-out per hop; -1 takes every neighbour.
        replace (bool, optional): sample with replacement (default: :obj:`False`).

    Shapes:
        - **input:** ``seeds`` :math:`(B,)` distinct global ids
        - **output:** :class:`SampledSubgraph`
    """

    def __init__(self, edge_index: EdgeIndex, num_nodes: int, num_neighbors: Sequence[int],
                 replace: bool = False) -> None:
        self.num_neighbors = _check_fanout(num_neighbors)
        self.num_nodes = int(num_nodes)
        self.replace = replace
        row, col = edge_index[0].long(), edge_index[1].long()
        perm = torch.argsort(col, stable=True)
        self.nbr = row[perm]  # [E] sources grouped by target
        self.eid = perm  # [E] original edge ids
        counts = torch.bincount(col, minlength=self.num_nodes)
        self.rowptr = torch.zeros(self.num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        # global -> local id map, reset after each call (O(N) once, not per batch)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
                f"num_neighbors={self.num_neighbors}, replace={self.replace})")

    def _sample_hop(self, frontier: Tensor, k: int, generator: torch.Generator | None
                    ) -> tuple[Tensor, Tensor]:
        """Positions (into ``nbr``) of the sampled in-edges and their frontier index."""
        start = self.rowptr[frontier]
        deg = self.rowptr[frontier + 1] - start  # [F]
        if k < 0 or (not self.replace and bool((deg <= k).all())):
            take = deg
            owner = torch.repeat_interleave(torch.arange(frontier.numel()), take)
            offset = torch.arange(owner.numel()) - torch.repeat_interleave(
                torch.cumsum(take, 0) - take, take)
            return start[owner] + offset, owner
        if self.replace:
            has = deg > 0
            owner = torch.repeat_interleave(torch.arange(frontier.numel())[has], k)
            r = torch.rand(owner.numel(), generator=generator, dtype=torch.float64)
            offset = (r * deg[owner]).long().clamp_max(deg[owner] - 1)
            return start[owner] + offset, owner
        # without replacement: random key per candidate edge, keep the k smallest per segment
        owner = torch.repeat_interleave(torch.arange(frontier.numel()), deg)  # [sum deg]
        seg_start = torch.cumsum(deg, 0) - deg
        offset = torch.arange(owner.numel()) - seg_start[owner]
        key = owner.to(torch.float64) + torch.rand(owner.numel(), generator=generator,
                                                   dtype=torch.float64)
        order = torch.argsort(key)  # segments stay contiguous, shuffled inside
        rank = torch.arange(owner.numel()) - seg_start[owner[order]]
        keep = order[rank < k]
        return start[owner[keep]] + offset[keep], owner[keep]

    def sample(self, seeds: NodeIds, generator: torch.Generator | None = None
               ) -> SampledSubgraph:
        seeds = seeds.long().flatten()
        if seeds.numel() and (seeds.min() < 0 or seeds.max() >= self.num_nodes):
            raise ValueError(f"seed ids must be in [0, {self.num_nodes})")
        if torch.unique(seeds).numel() != seeds.numel():
            raise ValueError("seeds must be distinct")
        local = self._local
        local[seeds] = torch.arange(seeds.numel())
        nodes = [seeds]
        srcs, dsts, eids = [], [], []
        num_nodes_hop, num_edges_hop = [seeds.numel()], []
        frontier, count = seeds, seeds.numel()
        try:
            for k in self.num_neighbors:
                if frontier.numel() == 0:
                    num_nodes_hop.append(0)
                    num_edges_hop.append(0)
                    continue
                pos, owner = self._sample_hop(frontier, k, generator)
                src = self.nbr[pos]  # global ids of sampled neighbours
                new = torch.unique(src[local[src] < 0])  # sorted global ids, not yet seen
                local[new] = torch.arange(count, count + new.numel())
                count += new.numel()
                nodes.append(new)
                srcs.append(local[src])
                dsts.append(local[frontier[owner]])
                eids.append(self.eid[pos])
                num_nodes_hop.append(new.numel())
                num_edges_hop.append(pos.numel())
                frontier = new
            n_id = torch.cat(nodes)
        finally:
            local[torch.cat(nodes)] = -1  # reset only what we touched
        empty = torch.empty(0, dtype=torch.long)
        edge_index = torch.stack([torch.cat(srcs) if srcs else empty,
                                  torch.cat(dsts) if dsts else empty])
        return SampledSubgraph(n_id=n_id, edge_index=edge_index, batch_size=seeds.numel(),
                               e_id=torch.cat(eids) if eids else empty,
                               num_sampled_nodes=num_nodes_hop, num_sampled_edges=num_edges_hop)


class PyGNeighborSampler:
    """PyG's compiled ``NeighborSampler`` (needs ``pyg-lib`` or ``torch-sparse``), same output.

    The ``generator`` argument is ignored: the compiled samplers draw from their own RNG, which
    ``torch.manual_seed`` seeds; runs are reproducible per process, not per call.
    """

    def __init__(self, edge_index: EdgeIndex, num_nodes: int, num_neighbors: Sequence[int],
                 replace: bool = False) -> None:
        from torch_geometric.data import Data
        from torch_geometric.sampler import NeighborSampler

        self.num_neighbors = _check_fanout(num_neighbors)
        self._sampler = NeighborSampler(Data(edge_index=edge_index, num_nodes=num_nodes),
                                        num_neighbors=self.num_neighbors, replace=replace)

    def sample(self, seeds: NodeIds, generator: torch.Generator | None = None
               ) -> SampledSubgraph:
        from torch_geometric.sampler import NodeSamplerInput

        seeds = seeds.long().flatten()
        out = self._sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds))
        return SampledSubgraph(n_id=out.node, edge_index=torch.stack([out.row, out.col]),
                               batch_size=seeds.numel(), e_id=out.edge,
                               num_sampled_nodes=out.num_sampled_nodes,
                               num_sampled_edges=out.num_sampled_edges)


def pyg_sampling_available() -> bool:
    """Whether PyG's compiled neighbour sampling can run here."""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def make_neighbor_sampler(edge_index: EdgeIndex, num_nodes: int, num_neighbors: Sequence[int],
                          backend: Literal["auto", "pyg", "torch"] = "auto",
                          replace: bool = False) -> NeighborSamplerLike:
    """PyG's sampler when its extensions are importable (``auto``/``pyg``), else the pure-torch one.

    Raises:
        ImportError: ``backend='pyg'`` without ``pyg-lib`` or ``torch-sparse``.
    """
    if backend not in ("auto", "pyg", "torch"):
        raise ValueError(f"unknown sampler backend {backend!r}; known: auto, pyg, torch")
    if backend == "pyg" or (backend == "auto" and pyg_sampling_available()):
        if not pyg_sampling_available():
            raise ImportError("sampler backend 'pyg' needs 'pyg-lib' or 'torch-sparse' "
                              "(use 'torch' or 'auto')")
        return PyGNeighborSampler(edge_index, num_nodes, num_neighbors, replace)
    return CSRNeighborSampler(edge_index, num_nodes, num_neighbors, replace)


def uniform_negatives(num_nodes: int, k: int, generator: torch.Generator | None = None
                      ) -> NodeIds:
    """``k`` negative candidates drawn uniformly (with replacement) from all nodes, O(k)."""
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    return torch.randint(0, num_nodes, (k,), generator=generator)


__all__ = ["SampledSubgraph", "CSRNeighborSampler", "PyGNeighborSampler",
           "make_neighbor_sampler", "pyg_sampling_available", "uniform_negatives"]
