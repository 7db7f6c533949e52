"""Seeded graph generators for the spectral tests (imported by conftest and the tests)."""
from __future__ import annotations

import numpy as np
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
