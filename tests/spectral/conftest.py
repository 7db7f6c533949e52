"""Small seeded graphs shared by the spectral tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def planted_partition(block_sizes: list[int], p_in: float, p_out: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Undirected planted-partition graph: ``(edge_index [2, E], block label [N])``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(block_sizes)), block_sizes)
    n = labels.size
    prob = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < prob, k=1)
    row, col = np.nonzero(upper)
    ei = torch.from_numpy(np.stack([np.r_[row, col], np.r_[col, row]])).long()
    return ei, torch.from_numpy(labels)


@pytest.fixture
def three_components() -> tuple[torch.Tensor, int, int]:
    """Three planted-partition components (300, 250, 200 nodes) plus two isolated nodes:
    ``(edge_index, num_nodes, number of components = 5)``."""
    parts, offset = [], 0
    for i, size in enumerate((300, 250, 200)):
        ei, _ = planted_partition([size // 2, size - size // 2], 0.1, 0.01, seed=i)
        parts.append(ei + offset)
        offset += size
    return torch.cat(parts, dim=1), offset + 2, 5
