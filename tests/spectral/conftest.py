"""Fixtures shared by the spectral tests."""
from __future__ import annotations

import pytest
import torch

from spectral_graphs import planted_partition


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
