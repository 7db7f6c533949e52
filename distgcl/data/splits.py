"""Node splits: fixed (public / OGB) or seeded random train/val/test fractions."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SplitMasks:
    """Boolean ``[N]`` masks of one split."""

    train: Tensor
    val: Tensor
    test: Tensor


def random_split(num_nodes: int, seed: int, train: float = 0.1, val: float = 0.1) -> SplitMasks:
    """Seeded random split; the rest after ``train`` and ``val`` is test (1:1:8 by default)."""
    if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
        raise ValueError(f"bad split fractions train={train}, val={val}")
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(round(train * num_nodes)), int(round(val * num_nodes))
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][perm[:n_train]] = True
    masks[1][perm[n_train:n_train + n_val]] = True
    masks[2][perm[n_train + n_val:]] = True
    return SplitMasks(*masks)


def index_to_mask(index: Tensor, num_nodes: int) -> Tensor:
    mask = torch.zeros(num_nodes, dtype=torch.bool)
    mask[index] = True
    return mask
