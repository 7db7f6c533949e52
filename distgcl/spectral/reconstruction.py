r"""Topology reconstruction (E2Neg, step B): one star per cluster centre.

Around every centre :math:`c` the candidate set is its :math:`h`-hop ball without centres,

.. math::
    S_h(c) = \{\, v : 1 \le \operatorname{dist}(c, v) \le h \,\} \setminus \mathcal{C},

with :math:`h` starting at ``start_hops`` (2) and growing by one while
:math:`|S_h(c)| <` ``min_neighbors``, up to ``max_hops``. Up to ``max_neighbors`` nodes are drawn
from :math:`S_h(c)` uniformly without replacement (seeded ``torch.Generator``); a node drawn by
several centres is kept by the first centre in centre order (the official code's first-come
rule), so every node belongs to at most one star and centres belong only to their own. The new
graph has directed edges **neighbour → centre** only (under PyG's source-to-target flow only the
centres aggregate; leaves keep their own features through the encoder's self-loops).

Differences from the official code (documented, deliberate): distances follow the symmetrized
graph; candidates exclude *all* centres (the official code can sample a centre, even the centre
itself, and duplicates because of a set-of-tensors bug); the ball size counts distinct nodes;
every centre stays in the graph even when all its candidates went to earlier centres.

Vectorized: all centres expand together as rows of a sparse :math:`K \times N` frontier matrix
(one sparse product with :math:`\mathbf{A}` per hop, a Python loop over hops only); sampling is one
random key per candidate plus sorts. Cost per hop: the sum of degrees of the frontier nodes; memory:
the visited :math:`K \times N` boolean CSR.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distgcl.spectral.laplacian import adjacency
from distgcl.typing import EdgeIndex


@dataclass
class StarGraph:
    """The reconstructed graph, in the ids of the original graph."""

    centres: Tensor
    """:math:`(K,)` centre node ids (star ``s`` is centred at ``centres[s]``)."""
    members: Tensor
    """:math:`(M,)` leaf node ids (distinct, disjoint from ``centres``)."""
    member_star: Tensor
    """:math:`(M,)` the star (index into ``centres``) of every leaf."""
    hops: Tensor
    """:math:`(K,)` the final radius :math:`h` of every star."""
    num_candidates: Tensor
    """:math:`(K,)` :math:`|S_h(c)|` at the final radius."""

    @property
    def edge_index(self) -> EdgeIndex:
        """:math:`(2, M)` directed edges leaf → centre, original ids."""
        return torch.stack([self.members, self.centres[self.member_star]])

    def subgraph(self) -> tuple[Tensor, EdgeIndex, Tensor]:
        """The star graph relabelled to :math:`K + M` local nodes: centres first.

        Returns:
            (Tensor, Tensor, Tensor): original ids of the local nodes :math:`(K + M,)`, local
            edges leaf → centre :math:`(2, M)`, local positions of the centres :math:`(K,)`
            (``arange(K)``).
        """
        k = self.centres.numel()
        node_ids = torch.cat([self.centres, self.members])
        dev = self.members.device
        local = torch.stack([torch.arange(k, k + self.members.numel(), device=dev),
                             self.member_star])
        return node_ids, local, torch.arange(k, device=dev)


Expand = Callable[[sp.csr_matrix], sp.spmatrix]
"""One hop of the ball growth: the :math:`K \times N` boolean frontier :math:`\mathbf{F}` (rows
of finished stars zeroed) to :math:`\mathbf{F}\mathbf{A}`, the nodes adjacent to each row's
frontier. :func:`reconstruct_stars` multiplies by an in-process adjacency; a graph store answers
it from the frontier nodes' neighbour lists (:func:`distgcl.methods.e2neg.stars_from_store`)."""


def reconstruct_stars(edge_index: EdgeIndex, num_nodes: int, centres: Tensor, *,
                      max_neighbors: int = 100, min_neighbors: int = 50, max_hops: int = 10,
                      start_hops: int = 2, generator: torch.Generator | None = None,
                      adj: sp.spmatrix | None = None) -> StarGraph:
    r"""Build the E2Neg star graph around ``centres`` (module docstring).

    Args:
        edge_index (Tensor): original edges :math:`(2, E)` (symmetrized here).
        num_nodes (int): :math:`N`.
        centres (Tensor): distinct centre ids :math:`(K,)`.
        max_neighbors (int, optional): leaves sampled per centre, at most (default: ``100``).
        min_neighbors (int, optional): grow the radius until at least this many candidates
            (default: ``50``).
        max_hops (int, optional): largest radius (default: ``10``).
        start_hops (int, optional): first radius (default: ``2``, as E2Neg).
        generator (torch.Generator, optional): source of the sampling keys (default: torch's
            global generator).
        adj (scipy.sparse matrix, optional): a prebuilt
            :func:`~distgcl.spectral.laplacian.adjacency`
            to reuse (default: built from ``edge_index``).

    Returns:
        StarGraph: centres, leaves, star of every leaf, radius and candidate count per star.
    """
    _check_options(max_neighbors, min_neighbors, max_hops, start_hops)
    if adj is None:
        adj = adjacency(edge_index, num_nodes, dtype=bool)
    adj = sp.csr_matrix(adj, dtype=bool)
    return grow_stars(lambda frontier: frontier @ adj, num_nodes, centres,
                      max_neighbors=max_neighbors, min_neighbors=min_neighbors,
                      max_hops=max_hops, start_hops=start_hops, generator=generator)


def _check_options(max_neighbors: int, min_neighbors: int, max_hops: int, start_hops: int
                   ) -> None:
    if not 1 <= start_hops <= max_hops:
        raise ValueError(f"need 1 <= start_hops <= max_hops (got {start_hops}, {max_hops})")
    if max_neighbors < 1 or min_neighbors < 0:
        raise ValueError(f"max_neighbors must be >= 1 and min_neighbors >= 0 "
                         f"(got {max_neighbors}, {min_neighbors})")


def grow_stars(expand: Expand, num_nodes: int, centres: Tensor, *, max_neighbors: int = 100,
               min_neighbors: int = 50, max_hops: int = 10, start_hops: int = 2,
               generator: torch.Generator | None = None) -> StarGraph:
    r""":func:`reconstruct_stars` with the graph behind ``expand`` (:data:`Expand`): the balls
    grow one ``expand`` per hop, then the leaves are sampled. Any ``expand`` that returns the
    same :math:`\mathbf{F}\mathbf{A}` gives the same stars. Memory: the visited
    :math:`K \times N` boolean CSR and one key per candidate; no :math:`O(E)` structure beyond
    what ``expand`` keeps."""
    _check_options(max_neighbors, min_neighbors, max_hops, start_hops)
    centres = centres.detach().cpu().long()
    k = centres.numel()
    cent = centres.numpy()
    if np.unique(cent).size != k:
        raise ValueError("centres must be distinct")
    visited, hops, count = _grow_balls(expand, num_nodes, cent, min_neighbors=min_neighbors,
                                       max_hops=max_hops, start_hops=start_hops)
    is_centre = np.zeros(num_nodes, dtype=bool)
    is_centre[cent] = True
    # Candidates: visited minus centres, as (star, node) pairs sorted by star, then node (the
    # canonical order, whatever order ``expand`` left the columns in: the keys follow it).
    visited.sort_indices()
    cand = visited.tocoo()
    keep = ~is_centre[cand.col]
    star = torch.from_numpy(cand.row[keep].astype(np.int64))
    node = torch.from_numpy(cand.col[keep].astype(np.int64))
    del cand, keep, visited
    star, node = _sample_leaves(star, node, k, max_neighbors, generator)
    return StarGraph(centres=centres, members=node, member_star=star,
                     hops=torch.from_numpy(hops), num_candidates=torch.from_numpy(count))


def _grow_balls(expand: Expand, num_nodes: int, cent: np.ndarray, *, min_neighbors: int,
                max_hops: int, start_hops: int
                ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The visited :math:`K \times N` CSR, final radius and candidate count of every star."""
    k = cent.size
    visited = sp.csr_matrix((np.ones(k, dtype=bool), (np.arange(k), cent)),
                            shape=(k, num_nodes))
    frontier = visited
    hops = np.zeros(k, dtype=np.int64)
    active = np.ones(k, dtype=bool)
    count = np.zeros(k, dtype=np.int64)
    for h in range(1, max_hops + 1):
        if not active.any():
            break
        # Expand only the active stars: zero the frontier rows of finished ones.
        step = (sp.diags(active.astype(np.int8), dtype=bool) @ frontier).tocsr()
        step.eliminate_zeros()
        reached = sp.csr_matrix(expand(step), dtype=bool)
        new = (reached > visited).tocsr()  # reached and not yet visited
        visited = (visited + new).tocsr()
        frontier = new
        hops[active] = h
        # |S_h| = visited nodes that are not centres (the centre itself is visited).
        per_row_centres = np.asarray(visited[:, cent].sum(axis=1)).ravel()
        count = visited.getnnz(axis=1) - per_row_centres
        if h >= start_hops:
            grew = new.getnnz(axis=1) > 0  # a ball that stopped growing never will
            active &= (count < min_neighbors) & (h < max_hops) & grew
    return visited, hops, count


def _sample_leaves(star: Tensor, node: Tensor, k: int, max_neighbors: int,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Up to ``max_neighbors`` candidates per star, uniformly without replacement; a node drawn
    by several stars stays with the first; leaves grouped by star."""
    # Uniform sample without replacement per star: random key, sort by (star, key), keep rank < m.
    keys = torch.rand(star.numel(), generator=generator,
                      device=generator.device if generator is not None else star.device).cpu()
    perm = torch.argsort(keys)
    perm = perm[torch.argsort(star[perm], stable=True)]
    star, node = star[perm], node[perm]
    starts = torch.zeros(k + 1, dtype=torch.long, device=star.device)
    starts[1:] = torch.cumsum(torch.bincount(star, minlength=k), 0)
    rank = torch.arange(star.numel(), device=star.device) - starts[star]
    chosen = rank < max_neighbors
    star, node = star[chosen], node[chosen]
    # One star per node: the first star in centre order wins.
    order = torch.argsort(star, stable=True)
    order = order[torch.argsort(node[order], stable=True)]
    star, node = star[order], node[order]
    first = torch.ones(node.numel(), dtype=torch.bool, device=node.device)
    first[1:] = node[1:] != node[:-1]
    star, node = star[first], node[first]
    # Present leaves grouped by star.
    order = torch.argsort(star, stable=True)
    return star[order], node[order]


def attach_leaves(graph: StarGraph, nodes: Tensor, stars: Tensor) -> StarGraph:
    r"""The star graph with extra leaves: node ``nodes[i]`` joins star ``stars[i]`` (an edge
    ``nodes[i]`` → ``centres[stars[i]]``), beyond ``max_neighbors``. Used for the nodes no star
    can reach (isolated nodes, components without a centre), see :mod:`distgcl.methods.e2neg`.

    Shapes:
        - **input:** ``nodes`` :math:`(A,)` distinct ids not yet in the graph, ``stars``
          :math:`(A,)` in :math:`[0, K)`
        - **output:** :class:`StarGraph` with :math:`M + A` leaves, grouped by star
    """
    nodes, stars = nodes.long().flatten(), stars.long().flatten()
    if nodes.numel() != stars.numel():
        raise ValueError(f"{nodes.numel()} nodes but {stars.numel()} star ids")
    if nodes.numel() == 0:
        return graph
    taken = torch.cat([graph.centres, graph.members])
    if bool(torch.isin(nodes, taken).any()) or torch.unique(nodes).numel() != nodes.numel():
        raise ValueError("attached leaves must be distinct and not yet in a star")
    if bool((stars < 0).any()) or bool((stars >= graph.centres.numel()).any()):
        raise ValueError(f"star ids must be in [0, {graph.centres.numel()})")
    members = torch.cat([graph.members, nodes])
    member_star = torch.cat([graph.member_star, stars])
    order = torch.argsort(member_star, stable=True)
    return StarGraph(centres=graph.centres, members=members[order],
                     member_star=member_star[order], hops=graph.hops,
                     num_candidates=graph.num_candidates)
