"""The graph-store interface on the local backend: PyG FeatureStore/GraphStore round trips,
induced edges, sampling, and that the package does not import Ray."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch_geometric.data import Data

from distgcl.sampling import CSRNeighborSampler
from distgcl.store import LocalGraphStore, ReadOnlyStoreError

N = 60


def _data(seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N, (2, 300), generator=g)
    return Data(x=torch.randn(N, 5, generator=g), edge_index=ei,
                y=torch.randint(0, 3, (N,), generator=g), num_nodes=N)


def test_feature_store_get_tensor_round_trip():
    data = _data()
    store = LocalGraphStore(data, sampler="torch")
    ids = torch.tensor([7, 0, 59, 3])
    assert torch.equal(store.get_tensor(group_name=None, attr_name="x", index=ids), data.x[ids])
    assert torch.equal(store.get_tensor(group_name=None, attr_name="y", index=ids), data.y[ids])
    assert torch.equal(store[None, "x", None], data.x)  # PyG's indexing: the whole tensor
    assert store.get_tensor_size(group_name=None, attr_name="x") == (N, 5)
    assert [a.attr_name for a in store.get_all_tensor_attrs()] == ["x", "y"]
    assert (store.num_nodes, store.num_features, store.num_classes, store.multilabel) == \
        (N, 5, 3, False)
    with pytest.raises(KeyError, match="not"):
        store.get_tensor(group_name=None, attr_name="z", index=ids)
    with pytest.raises(ReadOnlyStoreError):
        store.put_tensor(data.x, group_name=None, attr_name="x", index=None)


def test_graph_store_edge_index_is_the_input():
    data = _data()
    store = LocalGraphStore(data)
    (attr,) = store.get_all_edge_attrs()
    assert attr.size == (N, N)
    row, col = store.get_edge_index(edge_type=None, layout="coo")
    assert torch.equal(torch.stack([row, col]), data.edge_index)


def test_induced_edges_are_the_edges_among_the_set():
    data = _data()
    ids = torch.randperm(N, generator=torch.Generator().manual_seed(3))[:25]
    local, eid = LocalGraphStore(data).induced_edges(ids)
    inside = torch.isin(data.edge_index, ids).all(0)
    assert torch.equal(eid, torch.nonzero(inside).flatten())  # every such edge, by edge id
    assert torch.equal(ids[local], data.edge_index[:, eid])  # local ids are positions in ids
    with pytest.raises(ValueError, match="distinct"):
        LocalGraphStore(data).induced_edges(torch.tensor([1, 1]))


def test_sample_is_the_csr_sampler():
    data = _data()
    seeds = torch.tensor([4, 9, 30])
    got = LocalGraphStore(data, sampler="torch").sample(seeds, [3, 2],
                                                        torch.Generator().manual_seed(5))
    want = CSRNeighborSampler(data.edge_index, N, [3, 2]).sample(
        seeds, torch.Generator().manual_seed(5))
    assert torch.equal(got.n_id, want.n_id) and torch.equal(got.edge_index, want.edge_index)


def test_store_package_does_not_import_ray():
    code = "import sys, distgcl.store, distgcl.methods.nml; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
