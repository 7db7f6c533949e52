"""Graph augmentations used to draw two views: edge dropping and feature-column masking.

Pure functions with the semantics of PyG's ``dropout_edge`` and ``mask_feature(mode="col")``
(GRACE's augmentations); they never mutate their input. They are written here rather than
calling PyG because PyG's functions draw from torch's *global* generator, while every rank of a
distributed run needs its own seeded stream (``generator``, from :class:`distgcl.work.Work`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distgcl.typing import EdgeIndex


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` uniform draws from ``generator`` (on its own device), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def drop_edges(edge_index: EdgeIndex, p: float, *, generator: torch.Generator | None = None,
               training: bool = True) -> tuple[EdgeIndex, Tensor]:
    r"""Drop every edge independently with probability ``p``.

    Returns:
        (Tensor, Tensor): the kept edges :math:`(2, E')` and the keep mask :math:`(E,)`.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"edge drop probability has to be in [0, 1) (got {p})")
    if not training or p == 0.0:
        return edge_index, torch.ones(edge_index.size(1), dtype=torch.bool,
                                      device=edge_index.device)
    keep = _uniform(edge_index.size(1), generator, edge_index.device) >= p
    return edge_index[:, keep], keep


def mask_feature_columns(x: Tensor, p: float, *, generator: torch.Generator | None = None,
                         training: bool = True) -> tuple[Tensor, Tensor]:
    r"""Zero every feature column independently with probability ``p`` (the same columns for
    every node, as GRACE's ``drop_feature``).

    Returns:
        (Tensor, Tensor): a masked copy :math:`(N, F)` and the kept-column mask :math:`(F,)`.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"feature mask probability has to be in [0, 1) (got {p})")
    if not training or p == 0.0:
        return x, torch.ones(x.size(1), dtype=torch.bool, device=x.device)
    keep = _uniform(x.size(1), generator, x.device) >= p
    return x * keep.to(x.dtype), keep


def augment_view(x: Tensor, edge_index: EdgeIndex, edge_drop: float, feature_mask: float,
                 *, generator: torch.Generator | None = None, training: bool = True
                 ) -> tuple[Tensor, EdgeIndex]:
    r"""One augmented view: drop each edge with prob ``edge_drop`` and zero each feature column
    with prob ``feature_mask``; the edge draws come first, then the column draws.

    Returns new tensors; ``x`` and ``edge_index`` are left untouched.

    Shapes:
        - **input:** ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, F)`, :math:`(2, E')` with :math:`E' \le E`
    """
    for name, p in (("edge_drop", edge_drop), ("feature_mask", feature_mask)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} has to be in [0, 1) (got {p})")
    edge_index, _ = drop_edges(edge_index, edge_drop, generator=generator, training=training)
    x, _ = mask_feature_columns(x, feature_mask, generator=generator, training=training)
    return x, edge_index


@dataclass(frozen=True)
class ViewAugmentor:
    """The hyperparameters of one view; calling it draws a fresh augmented view."""

    edge_drop: float
    feature_mask: float

    def __call__(self, x: Tensor, edge_index: EdgeIndex,
                 generator: torch.Generator | None = None) -> tuple[Tensor, EdgeIndex]:
        return augment_view(x, edge_index, self.edge_drop, self.feature_mask,
                            generator=generator)
