"""Contextual stochastic block model (CSBM): a labelled graph generated on the fly, no files.

Nodes get one of ``C`` planted classes. Each of the ``N * avg_degree / 2`` undirected edges picks a
uniform source and, with probability ``homophily``, a target of the same class, otherwise a target
of another class (uniform). Features are ``x_i = mu_{y_i} + eps_i`` with ``eps ~ N(0, I)`` and
class means of pairwise distance about ``feature_signal`` (in noise-std units).
"""
from __future__ import annotations

import math

import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected


def _pick_in_class(classes: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                   counts: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A uniform node of each requested class (vectorized)."""
    u = torch.rand(classes.numel(), generator=g)
    pos = offsets[classes] + (u * counts[classes]).long().clamp_max(counts[classes] - 1)
    return order[pos]


def csbm_graph(num_nodes: int, num_classes: int, homophily: float, avg_degree: float,
               num_features: int, feature_signal: float, seed: int) -> Data:
    """Generate a CSBM graph as an undirected PyG ``Data`` with ``x``, ``edge_index``, ``y``."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(num_nodes) % num_classes)[torch.randperm(num_nodes, generator=g)]
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=num_classes)
    offsets = torch.cumsum(counts, 0) - counts

    num_edges = max(1, int(round(num_nodes * avg_degree / 2)))
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    same = torch.rand(num_edges, generator=g) < homophily
    shift = torch.randint(1, num_classes, (num_edges,), generator=g)
    target_class = torch.where(same, y[src], (y[src] + shift) % num_classes)
    dst = _pick_in_class(target_class, order, offsets, counts, g)
    edge_index, _ = remove_self_loops(torch.stack([src, dst]))
    edge_index = coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)

    directions = torch.randn(num_classes, num_features, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    means = directions * feature_signal / math.sqrt(2.0)
    x = means[y] + torch.randn(num_nodes, num_features, generator=g)
    return Data(x=x, edge_index=edge_index, y=y, num_nodes=num_nodes)
