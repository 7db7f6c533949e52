r"""The graph-store interface: what methods and the epoch loop ask of the graph.

A :class:`BaseGraphStore` answers, in **original node ids** (the ids of the dataset, whatever
numbering a backend keeps inside):

* sizes: :attr:`~BaseGraphStore.num_nodes`, :attr:`~BaseGraphStore.num_features`,
  :attr:`~BaseGraphStore.num_classes`, :attr:`~BaseGraphStore.multilabel`;
* rows: :meth:`~BaseGraphStore.features` :math:`(n, F)` and :meth:`~BaseGraphStore.labels` of ids;
* :meth:`~BaseGraphStore.sample`: the multi-hop sampled subgraph of seeds
  (:class:`~distgcl.sampling.SampledSubgraph`, seeds first, as PyG's ``NeighborLoader``);
* :meth:`~BaseGraphStore.induced_edges`: the edges among a node set, local ids into it.

Backends: :class:`~distgcl.store.local.LocalGraphStore` (an in-process ``Data``) and
:class:`~distgcl.store.sharded.ShardedGraphStore` (graph-shard actors). A method holds a store and
never knows which.

It is also PyG's remote-backend interface: a store *is* a
:class:`torch_geometric.data.FeatureStore` (group ``None``, attributes ``x`` and ``y``, rows by
original id) and a :class:`torch_geometric.data.GraphStore` (one COO edge type, ``edge_index``
in original ids, in input column order), so ``NeighborLoader(data=(store, store), ...)`` can run
on either backend where ``pyg-lib`` is installed. The store is read-only: ``put``/``remove``
raise. This module imports neither Ray nor a backend.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import torch
from torch import Tensor
from torch_geometric.data import FeatureStore, GraphStore
from torch_geometric.data.feature_store import TensorAttr
from torch_geometric.data.graph_store import EdgeAttr, EdgeLayout

from distgcl.sampling import SampledSubgraph
from distgcl.typing import NodeIds

FEATURES, LABELS = "x", "y"
"""The FeatureStore attribute names of the feature and label rows."""


class ReadOnlyStoreError(RuntimeError):
    """A put/remove on a graph store (the graph is fixed for a run)."""


class BaseGraphStore(FeatureStore, GraphStore, abc.ABC):
    """The graph-store interface (module docstring); subclasses implement the abstract methods."""

    def __init__(self) -> None:
        super().__init__()

    # ------------------------------------------------------------------ the interface
    @property
    @abc.abstractmethod
    def num_nodes(self) -> int:
        """:math:`N`."""

    @property
    @abc.abstractmethod
    def num_features(self) -> int:
        """:math:`F`."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Classes (multilabel: tasks) of the labels; 0 without labels."""

    @property
    @abc.abstractmethod
    def multilabel(self) -> bool:
        """Labels are :math:`(N, T)` binary tasks rather than :math:`(N,)` classes."""

    @abc.abstractmethod
    def features(self, ids: NodeIds) -> Tensor:
        """Feature rows :math:`(n, F)` of original ids ``ids`` :math:`(n,)`, in that order."""

    @abc.abstractmethod
    def labels(self, ids: NodeIds) -> Tensor:
        """Label rows of original ids ``ids``, in that order."""

    @abc.abstractmethod
    def sample(self, seeds: NodeIds, num_neighbors: Sequence[int],
               generator: torch.Generator | None = None, replace: bool = False
               ) -> SampledSubgraph:
        """The sampled subgraph of distinct original ids ``seeds`` :math:`(B,)` (fan-out per
        hop, -1: all); ``n_id`` original ids, seeds first. Both backends draw the same random
        keys, so the same generator state gives the same subgraph."""

    @abc.abstractmethod
    def induced_edges(self, ids: NodeIds) -> tuple[Tensor, Tensor]:
        """The directed edges with both ends in the distinct original ids ``ids`` :math:`(n,)`:
        ``(edge_index [2, e] in local ids (positions in ids), e_id [e] input column ids)``,
        ordered by ``e_id`` (as :func:`torch_geometric.utils.subgraph`)."""

    @property
    def calls(self) -> int:
        """Round trips to remote storage so far (0 for an in-process graph)."""
        return 0

    # ------------------------------------------------------------------ PyG FeatureStore
    def _rows(self, attr: TensorAttr) -> Tensor:
        if attr.group_name is not None or attr.attr_name not in (FEATURES, LABELS):
            raise KeyError(f"graph store has tensors (None, 'x') and (None, 'y'), not "
                           f"({attr.group_name!r}, {attr.attr_name!r})")
        index = attr.index
        if index is None or isinstance(index, slice):
            index = torch.arange(self.num_nodes)[index if isinstance(index, slice) else slice(None)]
        index = torch.as_tensor(index).long()
        return self.features(index) if attr.attr_name == FEATURES else self.labels(index)

    def _get_tensor(self, attr: TensorAttr) -> Tensor:
        return self._rows(attr)

    def _get_tensor_size(self, attr: TensorAttr) -> tuple[int, ...]:
        if attr.attr_name == FEATURES:
            return (self.num_nodes, self.num_features)
        if attr.attr_name == LABELS:
            return (self.num_nodes, self.num_classes) if self.multilabel else (self.num_nodes,)
        raise KeyError(f"graph store has no tensor {attr.attr_name!r}")

    def get_all_tensor_attrs(self) -> list[TensorAttr]:
        attrs = [TensorAttr(group_name=None, attr_name=FEATURES)]
        if self.num_classes:
            attrs.append(TensorAttr(group_name=None, attr_name=LABELS))
        return attrs

    def _put_tensor(self, tensor: Any, attr: TensorAttr) -> bool:
        raise ReadOnlyStoreError("graph stores are read-only: put_tensor is not supported")

    def _remove_tensor(self, attr: TensorAttr) -> bool:
        raise ReadOnlyStoreError("graph stores are read-only: remove_tensor is not supported")

    # ------------------------------------------------------------------ PyG GraphStore
    def _edge_attr(self) -> EdgeAttr:
        return EdgeAttr(edge_type=None, layout=EdgeLayout.COO, is_sorted=False,
                        size=(self.num_nodes, self.num_nodes))

    def _get_edge_index(self, edge_attr: EdgeAttr) -> tuple[Tensor, Tensor] | None:
        """All edges ``(row, col)`` in original ids and input column order. Sharded: gathers
        O(E) from the shards (what PyG's samplers build their CSC from)."""
        if edge_attr.edge_type is not None or edge_attr.layout != EdgeLayout.COO:
            return None
        edge_index, _ = self.induced_edges(torch.arange(self.num_nodes))
        return edge_index[0], edge_index[1]  # local ids of arange(N) are the original ids

    def get_all_edge_attrs(self) -> list[EdgeAttr]:
        return [self._edge_attr()]

    def _put_edge_index(self, edge_index: Any, edge_attr: EdgeAttr) -> bool:
        raise ReadOnlyStoreError("graph stores are read-only: put_edge_index is not supported")

    def _remove_edge_index(self, edge_attr: EdgeAttr) -> bool:
        raise ReadOnlyStoreError("graph stores are read-only: remove_edge_index is not supported")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_nodes={self.num_nodes}, "
                f"num_features={self.num_features}, num_classes={self.num_classes})")


def check_ids(ids: NodeIds, num_nodes: int, what: str = "node ids") -> Tensor:
    """``ids`` as a flat long CPU tensor; ValueError unless distinct and in ``[0, num_nodes)``."""
    ids = torch.as_tensor(ids).long().flatten().cpu()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_nodes):
        raise ValueError(f"{what} must be in [0, {num_nodes})")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError(f"{what} must be distinct")
    return ids


__all__ = ["BaseGraphStore", "FEATURES", "LABELS", "ReadOnlyStoreError", "check_ids"]
