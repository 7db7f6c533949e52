"""The in-process backend: a graph store over a ``torch_geometric.data.Data``."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from distgcl.sampling import SampledSubgraph, make_neighbor_sampler
from distgcl.store.base import BaseGraphStore, check_ids
from distgcl.typing import NodeIds


class LocalGraphStore(BaseGraphStore):
    r"""A :class:`~distgcl.store.base.BaseGraphStore` over an in-process graph.

    Sampling runs :func:`~distgcl.sampling.make_neighbor_sampler` (one sampler per fan-out,
    built on first use: O(N + E) for its CSR); induced edges are PyG's
    :func:`~torch_geometric.utils.subgraph`. Node ids are ``data``'s own.

    Args:
        data (Data): the graph (``x``; ``y`` optional).
        num_classes (int, optional): classes or tasks (default: from ``data.y``).
        multilabel (bool, optional): (default: ``data.y`` is 2-D with more than one column).
        sampler (str, optional): ``auto | pyg | torch`` sampler backend (default: ``auto``).
    """

    def __init__(self, data: Data, num_classes: int | None = None,
                 multilabel: bool | None = None,
                 sampler: Literal["auto", "pyg", "torch"] = "auto") -> None:
        super().__init__()
        if getattr(data, "x", None) is None:
            raise ValueError("LocalGraphStore needs data.x (node features)")
        y = getattr(data, "y", None)
        if multilabel is None:
            multilabel = y is not None and y.dim() > 1 and y.size(-1) > 1
        if num_classes is None:
            num_classes = 0 if y is None else (
                int(y.size(-1)) if multilabel else int(y.max()) + 1 if y.numel() else 0)
        self.data = data
        self._num_classes, self._multilabel = int(num_classes), bool(multilabel)
        self.sampler_backend = sampler
        self._samplers: dict[tuple[tuple[int, ...], bool], Any] = {}

    @property
    def num_nodes(self) -> int:
        return int(self.data.num_nodes)

    @property
    def num_features(self) -> int:
        return int(self.data.num_features)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def multilabel(self) -> bool:
        return self._multilabel

    def features(self, ids: NodeIds) -> Tensor:
        x = self.data.x
        return x[torch.as_tensor(ids).long().to(x.device)]

    def labels(self, ids: NodeIds) -> Tensor:
        y = getattr(self.data, "y", None)
        if y is None:
            raise ValueError("this graph has no labels")
        return y[torch.as_tensor(ids).long().to(y.device)]

    def _sampler(self, num_neighbors: Sequence[int], replace: bool) -> Any:
        key = (tuple(int(k) for k in num_neighbors), bool(replace))
        if key not in self._samplers:
            self._samplers[key] = make_neighbor_sampler(
                self.data.edge_index.cpu(), self.num_nodes, list(key[0]), self.sampler_backend,
                replace=replace)
        return self._samplers[key]

    def sample(self, seeds: NodeIds, num_neighbors: Sequence[int],
               generator: torch.Generator | None = None, replace: bool = False
               ) -> SampledSubgraph:
        return self._sampler(num_neighbors, replace).sample(seeds, generator)

    def induced_edges(self, ids: NodeIds) -> tuple[Tensor, Tensor]:
        ei = self.data.edge_index
        ids = check_ids(ids, self.num_nodes).to(ei.device)
        local, _, mask = subgraph(ids, ei, relabel_nodes=True, num_nodes=self.num_nodes,
                                  return_edge_mask=True)
        return local, torch.nonzero(mask).flatten()


__all__ = ["LocalGraphStore"]
