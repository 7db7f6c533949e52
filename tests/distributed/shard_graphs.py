"""Seeded graphs for the partition and shard tests (imported by the test modules)."""
from __future__ import annotations

import numpy as np
import torch


def planted_partition(block_sizes: list[int], p_in: float, p_out: float, seed: int
                      ) -> torch.Tensor:
    """Undirected planted-partition graph ``edge_index [2, E]``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(block_sizes)), block_sizes)
    prob = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    row, col = np.nonzero(np.triu(rng.random((labels.size, labels.size)) < prob, k=1))
    return torch.from_numpy(np.stack([np.r_[row, col], np.r_[col, row]])).long()


def multi_component_graph(seed: int = 0) -> tuple[torch.Tensor, int, int]:
    """Three planted-partition components (200, 160, 120 nodes), a triangle, a single edge and
    6 isolated nodes, node ids shuffled: ``(edge_index, N = 491, components = 11)``."""
    parts, offset = [], 0
    for i, size in enumerate((200, 160, 120)):
        parts.append(planted_partition([size // 2, size - size // 2], 0.12, 0.015, seed + i)
                     + offset)
        offset += size
    tri = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]]) + offset
    offset += 3
    pair = torch.tensor([[0, 1], [1, 0]]) + offset
    offset += 2
    n = offset + 6
    ei = torch.cat([*parts, tri, pair], dim=1)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return perm[ei], n, 3 + 1 + 1 + 6


def directed_multigraph(n: int = 400, seed: int = 0) -> torch.Tensor:
    """A directed graph with duplicate edges, self-loops and nodes without in-edges."""
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(0, 12, (n,), generator=g)
    deg[:20] = 0
    dst = torch.repeat_interleave(torch.arange(n), deg)
    src = torch.randint(0, n, (dst.numel(),), generator=g)
    dup = torch.randint(0, dst.numel(), (50,), generator=g)
    loops = torch.arange(30, 40)
    return torch.stack([torch.cat([src, src[dup], loops]), torch.cat([dst, dst[dup], loops])])


def mixed_graph(seed: int = 0) -> tuple[torch.Tensor, int, int]:
    """:func:`multi_component_graph` plus one-way edges inside the components, duplicated edges
    and self-loops: the operator sees the symmetrized simple graph (same components), the
    sampler sees the directed multigraph as given. ``(edge_index, N = 491, components = 11)``."""
    ei, n, c = multi_component_graph(seed)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, ei.size(1), (300,), generator=g)
    one_way = torch.stack([ei[1, pick[:150]], ei[0, pick[:150]]])  # reversed copies: duplicates
    two_hop = ei[:, pick[150:]]  # exact duplicates
    has_edge = torch.unique(ei[0])
    loops = has_edge[:15].repeat(2, 1)
    return torch.cat([ei, one_way, two_hop, loops], dim=1), n, c


def clustered_graph(seed: int = 0) -> tuple[torch.Tensor, int, int]:
    """One component of 4 well-separated planted blocks (60 nodes each), a triangle and 4
    isolated nodes, ids shuffled: ``(edge_index, N = 247, components = 6)``. The spectral step
    sees the big component alone, so every eigenvector column is supported on the rows k-means
    clusters (no numerically-zero columns for the standardization to blow up)."""
    ei = planted_partition([60, 60, 60, 60], 0.3, 0.005, seed)
    tri = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]]) + 240
    n = 240 + 3 + 4
    perm = torch.from_numpy(np.random.default_rng(seed + 7).permutation(n))
    return perm[torch.cat([ei, tri], dim=1)], n, 1 + 1 + 4
