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
from typing import Callable, Literal, Optional, Protocol, Sequence, Tuple

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


class FeatureSource(Protocol):
    """Anything that serves feature rows by global node id (a tensor's ``__getitem__`` does;
    :class:`distgcl.distributed.sampling.ShardedNeighborSampler` serves them from shards)."""

    def features(self, ids: NodeIds) -> Tensor: ...


def _check_fanout(num_neighbors: Sequence[int]) -> list[int]:
    fan = [int(k) for k in num_neighbors]
    if not fan:
        raise ValueError("num_neighbors needs at least one hop")
    for k in fan:
        if k == 0 or k < -1:
            raise ValueError(f"num_neighbors entries must be >= 1 or -1 for all (got {fan})")
    return fan


def select_neighbors(degree: Tensor, k: int, replace: bool = False,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Which in-edges to keep for one hop, from the in-degrees of the frontier alone.

    For frontier node :math:`f` with in-degree :math:`d_f`: all of its in-edges when ``k`` is
    -1 or (without replacement) when every :math:`d_f \le k`; else ``k`` of them uniformly
    without replacement (Floyd's algorithm on the nodes with :math:`d_f > k`: O(F k^2)
    work, not a sort over :math:`\sum_f d_f`), or ``k`` with replacement. The random draws
    depend only on ``degree``, ``k`` and ``replace``, so any caller that knows the degrees
    draws the same edges, wherever the lists are stored.

    Args:
        degree (Tensor): :math:`(F,)` in-degrees of the frontier nodes.
        k (int): fan-out, -1 for all.
        replace (bool, optional): sample with replacement (default: :obj:`False`).
        generator (torch.Generator, optional): source of the keys (default: global).

    Returns:
        (Tensor, Tensor): ``owner`` (index into the frontier) and ``offset`` (position in that
        node's in-edge list) of every kept edge, grouped by owner.
    """
    f, dev = degree.numel(), degree.device
    if k < 0 or (not replace and bool((degree <= k).all())):
        return _every_in_edge(torch.arange(f, device=dev), degree)
    if replace:
        has = degree > 0
        owner = torch.repeat_interleave(torch.arange(f, device=dev)[has], k)
        r = _uniform((owner.numel(),), generator, dev)
        offset = (r * degree[owner]).long().clamp_max(degree[owner] - 1)
        return owner, offset
    # Without replacement: Robert Floyd's algorithm, vectorized over the frontier nodes with
    # more than k in-edges: step s draws t uniform in [0, d - k + s] and keeps t, or d - k + s
    # when t was kept before; that yields a uniform k-subset. O(F k^2) work and k draws per
    # node, where a random key per candidate edge (a sort over sum(deg)) cost 60x the kept
    # edges at proteins' average degree ~600 with k = 10.
    small = degree <= k
    owner_small, offset_small = _every_in_edge(torch.arange(f, device=dev)[small], degree[small])
    rows_big = torch.arange(f, device=dev)[~small]
    last = degree[~small].unsqueeze(1) - k + torch.arange(k, device=dev)  # [B, k]: d - k + s
    draws = _uniform((rows_big.numel(), k), generator, dev)
    chosen = torch.minimum((draws * (last + 1)).long(), last)
    for step in range(1, k):
        taken = (chosen[:, :step] == chosen[:, step:step + 1]).any(1)
        chosen[:, step] = torch.where(taken, last[:, step], chosen[:, step])
    owner = torch.cat([owner_small, rows_big.repeat_interleave(k)])
    offset = torch.cat([offset_small, chosen.flatten()])
    order = torch.argsort(owner, stable=True)  # grouped by owner, as the other branches
    return owner[order], offset[order]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """float64 uniforms drawn on the generator's device (the same numbers wherever the caller's
    tensors live), returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=where).to(device)


def _every_in_edge(rows: Tensor, degree: Tensor) -> tuple[Tensor, Tensor]:
    """``owner`` / ``offset`` of every in-edge of ``rows`` (in-degrees ``degree``)."""
    owner = torch.repeat_interleave(rows, degree)
    offset = torch.arange(owner.numel(), device=rows.device) - torch.repeat_interleave(
        torch.cumsum(degree, 0) - degree, degree)
    return owner, offset


InDegree = Callable[[Tensor, Optional[Tensor]], Tensor]
InEdges = Callable[[Tensor, Optional[Tensor], Tensor, Tensor],
                   Tuple[Tensor, Tensor, Optional[Tensor]]]


def sample_from_lists(seeds: NodeIds, num_neighbors: Sequence[int], in_degree: InDegree,
                      in_edges: InEdges, *, replace: bool = False,
                      generator: torch.Generator | None = None,
                      seed_aux: Tensor | None = None) -> SampledSubgraph:
    r"""Multi-hop neighbour sampling from per-node in-edge lists served by callbacks.

    Hop :math:`h` asks ``in_degree(frontier, aux)`` for the frontier's in-degrees, selects
    edges with :func:`select_neighbors`, and asks ``in_edges(frontier, aux, owner, offset)``
    for the sources (global ids), edge ids and an optional per-source ``aux`` tensor (carried
    along with the node, e.g. its id in a partition) of exactly those edges. Nodes seen before
    keep their local id and are not expanded again; newly reached nodes get local ids in
    increasing global-id order (PyG's non-disjoint ``NeighborSampler`` layout). The id map is a
    sorted array of the nodes seen so far: memory O(sampled nodes), nothing O(N).

    Args:
        seeds (Tensor): :math:`(B,)` distinct global ids (validated by the caller).
        num_neighbors (list[int]): fan-out per hop; -1 takes every neighbour.
        in_degree, in_edges: the callbacks above.
        replace (bool, optional): sample with replacement (default: :obj:`False`).
        generator (torch.Generator, optional): source of the random keys (default: global).
        seed_aux (Tensor, optional): ``aux`` of the seeds (default: :obj:`None`).

    Returns:
        SampledSubgraph: the subgraph (seeds first).
    """
    seeds = seeds.long().flatten()
    b = seeds.numel()
    seen, seen_local = torch.sort(seeds)
    dev = seeds.device
    seen_local = torch.arange(b, device=dev)[seen_local]
    nodes, srcs, dsts, eids = [seeds], [], [], []
    num_nodes_hop, num_edges_hop = [b], []
    frontier, frontier_aux, frontier_local, count = seeds, seed_aux, torch.arange(b, device=dev), b

    def lookup(ids: Tensor) -> Tensor:
        pos = torch.searchsorted(seen, ids).clamp_max(max(seen.numel() - 1, 0))
        hit = seen[pos] == ids if seen.numel() else torch.zeros_like(ids, dtype=torch.bool)
        return torch.where(hit, seen_local[pos], torch.full_like(ids, -1))

    for k in num_neighbors:
        if frontier.numel() == 0:
            num_nodes_hop.append(0)
            num_edges_hop.append(0)
            continue
        owner, offset = select_neighbors(in_degree(frontier, frontier_aux), k, replace,
                                         generator)
        src, eid, src_aux = in_edges(frontier, frontier_aux, owner, offset)
        src = src.long()
        unseen = lookup(src) < 0
        new, inverse = torch.unique(src[unseen], return_inverse=True)  # sorted global ids
        new_local = torch.arange(count, count + new.numel(), device=dev)
        new_aux = None
        if src_aux is not None:
            new_aux = torch.empty(new.numel(), dtype=src_aux.dtype, device=src_aux.device)
            new_aux[inverse] = src_aux[unseen]
        count += new.numel()
        seen, order = torch.sort(torch.cat([seen, new]))
        seen_local = torch.cat([seen_local, new_local])[order]
        nodes.append(new)
        srcs.append(lookup(src))
        dsts.append(frontier_local[owner])
        eids.append(eid.long())
        num_nodes_hop.append(new.numel())
        num_edges_hop.append(src.numel())
        frontier, frontier_aux, frontier_local = new, new_aux, new_local
    empty = torch.empty(0, dtype=torch.long, device=dev)
    edge_index = torch.stack([torch.cat(srcs) if srcs else empty,
                              torch.cat(dsts) if dsts else empty])
    return SampledSubgraph(n_id=torch.cat(nodes), edge_index=edge_index, batch_size=b,
                           e_id=torch.cat(eids) if eids else empty,
                           num_sampled_nodes=num_nodes_hop, num_sampled_edges=num_edges_hop)


def check_seeds(seeds: NodeIds, num_nodes: int) -> Tensor:
    """``seeds`` as a flat long tensor; ValueError unless distinct ids in ``[0, num_nodes)``."""
    seeds = seeds.long().flatten()
    if seeds.numel() and (seeds.min() < 0 or seeds.max() >= num_nodes):
        raise ValueError(f"seed ids must be in [0, {num_nodes})")
    if torch.unique(seeds).numel() != seeds.numel():
        raise ValueError("seeds must be distinct")
    return seeds


class CSRNeighborSampler:
    r"""Vectorized pure-torch uniform neighbour sampler (no ``pyg-lib`` / ``torch-sparse``).

    Hop :math:`h` draws, for every node added at hop :math:`h-1` (the seeds for :math:`h=1`),
    ``num_neighbors[h-1]`` of its in-neighbours uniformly without replacement (all of them when it
    has fewer, or when the fan-out is -1; with replacement if ``replace``). Nodes seen before keep
    their local id and are not expanded again, as in PyG's (non-disjoint) ``NeighborSampler``.
    Within a hop, newly reached nodes get local ids in increasing global-id order.

    Sampling without replacement is done for all frontier nodes at once
    (:func:`select_neighbors`): every candidate edge gets a uniform random key, edges are sorted
    by (frontier node, key) and the first :math:`k` of each segment are kept. Cost O(sum of
    frontier degrees * log) per hop. The hop loop is :func:`sample_from_lists` on this CSR;
    :class:`distgcl.distributed.sampling.ShardedNeighborSampler` runs the same loop on lists
    served by graph-shard actors, so both give the same subgraph for the same generator state.

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
        self.rowptr = torch.zeros(self.num_nodes + 1, dtype=torch.long, device=col.device)
        torch.cumsum(counts, 0, out=self.rowptr[1:])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
                f"num_neighbors={self.num_neighbors}, replace={self.replace})")

    def _in_degree(self, frontier: Tensor, aux: Tensor | None) -> Tensor:
        return self.rowptr[frontier + 1] - self.rowptr[frontier]

    def _in_edges(self, frontier: Tensor, aux: Tensor | None, owner: Tensor, offset: Tensor
                  ) -> tuple[Tensor, Tensor, None]:
        pos = self.rowptr[frontier[owner]] + offset
        return self.nbr[pos], self.eid[pos], None

    def sample(self, seeds: NodeIds, generator: torch.Generator | None = None
               ) -> SampledSubgraph:
        seeds = check_seeds(seeds, self.num_nodes)
        return sample_from_lists(seeds, self.num_neighbors, self._in_degree, self._in_edges,
                                 replace=self.replace, generator=generator)


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
    return torch.randint(0, num_nodes, (k,), generator=generator,
                         device=generator.device if generator is not None else None)


__all__ = ["SampledSubgraph", "CSRNeighborSampler", "PyGNeighborSampler", "check_seeds",
           "make_neighbor_sampler", "pyg_sampling_available", "sample_from_lists",
           "select_neighbors", "uniform_negatives"]
