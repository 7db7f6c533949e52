r"""Random node partitions: the batches ogbn-proteins' leaderboard entries train on.

At mean degree ~600 a multi-hop neighbourhood covers most of the graph, so instead of fan-out
sampling the nodes are split into ``num_parts`` random parts per epoch and each step trains on the
subgraph induced by one part (PyG's ``RandomNodeLoader`` does the same; it is not used here
because it re-filters the whole edge list for every part, :math:`O(E)` per step).
:class:`InducedSubgraphs` keeps a CSR by target once and extracts a part's induced edges from its
rows only: :math:`O(\sum_{v \in P} d_v) = O(E / \text{parts})` per step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from distgcl.typing import EdgeIndex, NodeIds


class InducedSubgraphs:
    r"""Induced subgraphs of node sets, from a CSR (by target) built once.

    Args:
        edge_index (Tensor): :math:`(2, E)` edges source -> target.
        num_nodes (int): :math:`N`.

    Shapes:
        - **input:** ``nodes`` :math:`(n,)` distinct ids
        - **output:** local edges :math:`(2, e)` among ``nodes`` (row ``i`` of the output ids is
          ``nodes[i]``), oriented as the input
    """

    def __init__(self, edge_index: EdgeIndex, num_nodes: int) -> None:
        row, col = edge_index[0].long().cpu(), edge_index[1].long().cpu()
        order = torch.argsort(col, stable=True)
        self.sources = row[order]
        counts = torch.bincount(col, minlength=num_nodes)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        self.num_nodes = int(num_nodes)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    def __call__(self, nodes: NodeIds) -> EdgeIndex:
        nodes = nodes.long().cpu()
        start, end = self.rowptr[nodes], self.rowptr[nodes + 1]
        deg = end - start
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), deg)  # local target
        offset = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg,
                                                                      deg)
        src = self.sources[start[owner] + offset]
        local = self._local
        local[nodes] = torch.arange(nodes.numel())
        try:
            src_local = local[src]
        finally:
            local[nodes] = -1
        keep = src_local >= 0
        return torch.stack([src_local[keep], owner[keep]])


def random_parts(order: Tensor, num_parts: int) -> list[Tensor]:
    """Split a permutation into ``num_parts`` parts of (almost) equal size, each sorted."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1 (got {num_parts})")
    return [part.sort().values for part in order.tensor_split(num_parts)]


__all__ = ["InducedSubgraphs", "random_parts"]
