"""Graph augmentations used to draw two views: edge dropping and feature-column masking.

Pure functions over PyG's ``dropout_edge`` / ``mask_feature`` (which never mutate their input);
randomness comes from torch's global generator, which the trainer seeds per run.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch_geometric.utils import dropout_edge, mask_feature

from distgcl.typing import EdgeIndex


def augment_view(x: Tensor, edge_index: EdgeIndex, edge_drop: float, feature_mask: float,
                 *, training: bool = True) -> tuple[Tensor, EdgeIndex]:
    r"""One augmented view: drop each edge with prob ``edge_drop`` and zero each feature column
    with prob ``feature_mask`` (the same columns for every node, as in GRACE's ``drop_feature``).

    Returns new tensors; ``x`` and ``edge_index`` are left untouched.

    Shapes:
        - **input:** ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, F)`, :math:`(2, E')` with :math:`E' \le E`
    """
    for name, p in (("edge_drop", edge_drop), ("feature_mask", feature_mask)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} has to be in [0, 1) (got {p})")
    edge_index, _ = dropout_edge(edge_index, p=edge_drop, training=training and edge_drop > 0)
    x, _ = mask_feature(x, p=feature_mask, mode="col", training=training and feature_mask > 0)
    return x, edge_index


@dataclass(frozen=True)
class ViewAugmentor:
    """The hyperparameters of one view; calling it draws a fresh augmented view."""

    edge_drop: float
    feature_mask: float

    def __call__(self, x: Tensor, edge_index: EdgeIndex) -> tuple[Tensor, EdgeIndex]:
        return augment_view(x, edge_index, self.edge_drop, self.feature_mask)
