"""GRACE ``batching: parts`` and E2Neg trained from a graph store with ``data=None``: the same
losses and parameters as today's ``Data`` path with a :class:`LocalGraphStore`, and again with a
:class:`ShardedGraphStore` over real graph-shard actors at P = 1 and P = 2 (E2Neg's spectral step
on those actors, no adjacency in the method).

The sharded tests start Ray once for the module on 127.0.0.1; run them inside a private network
namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/methods/test_store_methods.py -q'
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import distgcl.methods  # noqa: F401  (registers the method sections)
from distgcl.config import config_from_dict
from distgcl.methods import GraphInfo, build_method
from distgcl.methods.e2neg import stars_from_store
from distgcl.spectral import (adjacency, connected_components, laplacian_from_adjacency,
                              reconstruct_stars, smallest_eigenpairs, trivial_eigenvectors)
from distgcl.store import LocalGraphStore
from distgcl.work import GraphServices, Work

N, F, SEED = 300, 8, 3


def _graph(seed: int = 0, extra: int = 0) -> Data:
    """Connected planted partition (3 blocks x 100 and a ring through all nodes), features =
    noisy block one-hot; ``extra`` > 0 adds a separate path of that many nodes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(N // 3)
    prob = torch.where(y[:, None] == y[None, :], 0.05, 0.002)
    upper = torch.triu(torch.rand(N, N, generator=g) < prob, diagonal=1)
    ring = torch.arange(N)
    upper[ring, (ring + 1) % N] = True
    row, col = upper.nonzero().t()
    if extra:
        path = torch.arange(N, N + extra - 1)
        row, col = torch.cat([row, path]), torch.cat([col, path + 1])
        y = torch.cat([y, torch.zeros(extra, dtype=torch.long)])
    n = N + extra
    ei = torch.cat([torch.stack([row, col]), torch.stack([col, row])], dim=1)
    x = torch.nn.functional.one_hot(y, 3).float().repeat(1, 3)[:, :F] + \
        0.5 * torch.randn(n, F, generator=g)
    return Data(x=x, edge_index=ei, y=y, num_nodes=n)


@pytest.fixture(scope="module")
def data() -> Data:
    return _graph()


def _config(method: str, **section):
    tree = {"method": method,
            "model": {"out_dim": 16, "hidden_dim": 16, "layers": 1 if method == "e2neg" else 2,
                      "activation": "prelu", "proj_dim": 16},
            "augment": {"edge_drop_1": 0.2, "edge_drop_2": 0.3, "feature_mask_1": 0.1,
                        "feature_mask_2": 0.2},
            "train": {"epochs": 2, "lr": 1e-2, "seed": SEED, "progress": False},
            method: section}
    return config_from_dict(tree)


def _run(method_name: str, section: dict, data: Data, graph: Data | None, work: Work,
         epochs: int = 2, cache=None):
    """Build, prepare and train ``epochs`` epochs on ``graph`` (None: from the store);
    ``(losses, state_dict, method)``."""
    torch.manual_seed(0)
    method = build_method(_config(method_name, **section),
                          GraphInfo(num_nodes=data.num_nodes, num_features=F, num_classes=3),
                          work)
    method.configure_optimizers()
    method.prepare(graph, cache)
    torch.manual_seed(1)
    losses = [method.training_step(b)["loss"] for epoch in range(1, epochs + 1)
              for b in method.batches(graph, epoch)]
    assert len(losses) == epochs * method.steps_per_epoch(graph)
    return losses, method.state_dict(), method


def _same(a, b) -> None:
    want_losses, want_state, _ = a
    got_losses, got_state, _ = b
    assert got_losses == want_losses
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got_state[key], value), key


GRACE = {"batching": "parts", "num_parts": 3}
E2NEG = {"clusters": 3, "num_neighbors": 12, "min_neighbors": 30, "max_hops": 4,
         "solver": "chebyshev", "tol": 1e-6, "cache": False}


def _local(data: Data) -> Work:
    return Work(seed=SEED, services=GraphServices(store=LocalGraphStore(data, sampler="torch")))


# ----------------------------------------------------------------------------- local store

def test_grace_parts_from_the_local_store_equals_the_data_path(data):
    want = _run("grace", GRACE, data, data, Work(seed=SEED))
    got = _run("grace", GRACE, data, None, _local(data))
    assert got[2].can_train_from_store()
    _same(want, got)
    full = build_method(_config("grace"), GraphInfo(N, F, 3), _local(data))
    assert not full.can_train_from_store()
    with pytest.raises(ValueError, match="batching: parts"):
        next(iter(full.batches(None, 1)))


def test_e2neg_from_the_local_store_equals_the_data_path(data):
    want = _run("e2neg", E2NEG, data, data, Work(seed=SEED))
    got = _run("e2neg", E2NEG, data, None, _local(data))
    assert got[2].can_train_from_store()
    _same(want, got)
    w, g = want[2], got[2]
    assert torch.equal(g.batch.node_ids, w.batch.node_ids)
    assert torch.equal(g.batch.x, w.batch.x) and torch.equal(g.labels, w.labels)
    assert g.stats["purity"] == w.stats["purity"]
    nothing = build_method(_config("e2neg", **E2NEG), GraphInfo(N, F, 3), Work(seed=SEED))
    with pytest.raises(ValueError, match="graph store"):
        nothing.prepare(None)


class _NeighbourListsOnly(LocalGraphStore):
    """A store that refuses the induced-edges call: the stars must come from neighbour lists
    (an edge list of the centres' balls in the worker is O(E) on a dense graph)."""

    def induced_edges(self, ids):
        raise AssertionError("stars_from_store gathered an edge list")


@pytest.mark.parametrize("min_neighbors,max_hops,start_hops", [(30, 4, 2), (400, 3, 1),
                                                               (0, 5, 2), (60, 6, 3)])
def test_stars_from_the_store_equal_the_whole_graph_reconstruction(min_neighbors, max_hops,
                                                                   start_hops):
    # a separate 5-node path holds a centre: its ball closes before max_hops
    data = _graph(1, extra=5)
    centres = torch.tensor([N + 2, 7, 150, 299])
    opts = dict(max_neighbors=15, min_neighbors=min_neighbors, max_hops=max_hops,
                start_hops=start_hops)
    want = reconstruct_stars(data.edge_index, data.num_nodes, centres,
                             generator=torch.Generator().manual_seed(5), **opts)
    got = stars_from_store(_NeighbourListsOnly(data), centres, seed=5, chunk=7, **opts)
    for field in ("centres", "members", "member_star", "hops", "num_candidates"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field


# ----------------------------------------------------------------------------- sharded store

def _no_adjacency(base):
    """The sharded eigensolver without its adjacency entry: a method that built (or gathered)
    an adjacency in the worker and handed it over fails here."""
    class NoAdjacency(base):
        def __call__(self, adjacency, *args, **kwargs):
            raise AssertionError("E2Neg built an adjacency in the worker")
    return NoAdjacency


def _start_shards(data: Data, root) -> tuple[list, dict]:
    """Partition ``data`` at P = 1 and 2 and start the actors (serving sampling and the
    operator): ``(started GraphShards, {P: GraphServices})``."""
    from distgcl.distributed.partition import partition_graph
    from distgcl.distributed.services import ShardedEigensolver
    from distgcl.distributed.shards import GraphShards
    from distgcl.store import ShardedGraphStore

    started, services = [], {}
    for p, order in ((1, "auto"), (2, "random")):  # "random" renumbers every node
        m = partition_graph(data.edge_index, data.num_nodes, p, root, x=data.x, y=data.y,
                            order=order, seed=SEED)
        shards = GraphShards(m, dtype="float64", num_cpus=0.1, threads=1, timeout=120,
                             serve="all")
        started.append(shards)
        handoff = {"actors": list(shards.actors), "manifest_path": str(m.path),
                   "dtype": "float64", "serve": "all", "num_nodes": m.num_nodes, "nnz": m.nnz,
                   "num_components": m.num_components, "timeout": 120.0}
        services[p] = GraphServices(store=ShardedGraphStore.from_shards(shards, num_classes=3),
                                    eigensolver=_no_adjacency(ShardedEigensolver)(
                                        str(root), p, attached=handoff))
    return started, services


@pytest.fixture(scope="module")
def sharded(data, tmp_path_factory):
    """``{P: GraphServices}`` over started shard actors serving sampling and the operator."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-store-methods", log_to_driver=False, configure_logging=False)
    started, services = _start_shards(data, tmp_path_factory.mktemp("partitions"))
    yield services
    for shards in started:
        shards.shutdown()
    ray.shutdown()


@pytest.mark.parametrize("p", [1, 2])
def test_grace_parts_from_the_sharded_store_equals_the_local_store(data, sharded, p):
    want = _run("grace", GRACE, data, None, _local(data))
    store = sharded[p].store
    calls = store.calls
    got = _run("grace", GRACE, data, None, Work(seed=SEED, services=sharded[p]))
    _same(want, got)
    assert store.calls > calls  # the parts did come from the shards


@pytest.mark.parametrize("p", [1, 2])
def test_e2neg_from_the_sharded_store_equals_the_local_store(data, sharded, p, tmp_path):
    want = _run("e2neg", E2NEG, data, None, _local(data))
    # the spectral step on the shards (no adjacency here); the disk cache keyed by the manifest
    got = _run("e2neg", {**E2NEG, "cache": True}, data, None,
               Work(seed=SEED, services=sharded[p]), cache=tmp_path)
    assert got[2].stats["spectral"]["solver"].startswith("sharded-")
    assert got[2].stats["purity"] >= 0.9
    _same(want, got)
    assert torch.equal(got[2].batch.node_ids, want[2].batch.node_ids)
    again = _run("e2neg", {**E2NEG, "cache": True}, data, None,
                 Work(seed=SEED, services=sharded[p]), cache=tmp_path)
    assert again[2].stats["cache"] == "hit"
    _same(want, again)


def _components_graph(seed: int = 2) -> Data:
    """Four components under a random relabelling of the nodes (so no component is a range of
    ids): :func:`_graph`'s 300 nodes, a second planted partition (2 blocks x 90 and a ring),
    a 4-node path and an isolated node. With 5 clusters the D'Hondt allocation gives 3 and 2
    to the two large ones, none to the path; the path and the isolated node are attached."""
    g = torch.Generator().manual_seed(seed)
    base = _graph(seed)
    y2 = torch.arange(2).repeat_interleave(90)
    prob = torch.where(y2[:, None] == y2[None, :], 0.08, 0.003)
    upper = torch.triu(torch.rand(180, 180, generator=g) < prob, diagonal=1)
    ring = torch.arange(180)
    upper[ring, (ring + 1) % 180] = True
    row, col = upper.nonzero().t() + N
    path = torch.arange(N + 180, N + 183)
    row, col = torch.cat([row, path]), torch.cat([col, path + 1])
    n = N + 185  # N + 184: isolated
    y = torch.cat([base.y, y2, torch.full((4,), 2), torch.ones(1, dtype=torch.long)])
    x = torch.cat([base.x, torch.nn.functional.one_hot(y[N:], 3).float().repeat(1, 3)[:, :F] +
                   0.5 * torch.randn(n - N, F, generator=g)])
    perm = torch.randperm(n, generator=g)  # old id -> new id
    ei = torch.cat([base.edge_index, torch.stack([row, col]), torch.stack([col, row])], dim=1)
    inverse = torch.argsort(perm)
    return Data(x=x[inverse], edge_index=perm[ei], y=y[inverse], num_nodes=n)


@pytest.fixture(scope="module")
def components() -> Data:
    return _components_graph()


@pytest.fixture(scope="module")
def sharded_components(components, sharded, tmp_path_factory):
    """As ``sharded`` (on its Ray) for the graph with several components."""
    started, services = _start_shards(components, tmp_path_factory.mktemp("components"))
    yield services
    for shards in started:
        shards.shutdown()


E2NEG_5 = {**E2NEG, "clusters": 5}


@pytest.mark.parametrize("p", [1, 2])
def test_e2neg_from_the_shards_on_several_components_equals_the_data_path(
        components, sharded_components, p):
    data, services = components, sharded_components[p]
    count, want_labels = connected_components(adjacency(data.edge_index, data.num_nodes,
                                                        dtype=bool))
    labels = services.eigensolver.attached_components()
    assert count == 4 and np.array_equal(labels, want_labels)  # scipy's numbering
    want = _run("e2neg", E2NEG_5, data, data, Work(seed=SEED))
    _same(want, _run("e2neg", E2NEG_5, data, None, _local(data)))
    got = _run("e2neg", E2NEG_5, data, None, Work(seed=SEED, services=services))
    stats = got[2].stats
    assert stats["spectral"]["solver"].startswith("sharded-")
    assert (stats["components"], stats["components_clustered"], stats["isolated_nodes"],
            stats["nodes_clustered"], stats["nodes_attached"]) == (4, 2, 1, 480, 5)
    assert stats == {**want[2].stats, "spectral": stats["spectral"],
                     "prepare_seconds": stats["prepare_seconds"]}
    _same(want, got)
    assert torch.equal(got[2].batch.node_ids, want[2].batch.node_ids)
    assert torch.equal(got[2].labels, want[2].labels)


def test_attached_eigenpairs_of_an_induced_subgraph(components, sharded_components):
    """The shards' eigenpairs of the clustered components' subgraph are the single-process
    ones of that subgraph; ``nodes`` that split a component are refused."""
    data = components
    adj = adjacency(data.edge_index, data.num_nodes, dtype=bool)
    _, comp = connected_components(adj)
    sizes = np.bincount(comp)
    # two components, not the first ones (so their trivial basis is not y_0, y_1)
    nodes = np.flatnonzero((comp > 0) & (sizes[comp] > 1))
    sub = adj[nodes][:, nodes]
    options = dict(solver="chebyshev", tol=1e-8, maxiter=500, seed=SEED)
    want = smallest_eigenpairs(laplacian_from_adjacency(sub), 5,
                               null_space=trivial_eigenvectors(sub), **options)
    got = sharded_components[2].eigensolver.attached_eigenpairs(5, nodes=nodes, **options)
    assert got.eigenvectors.shape == (nodes.size, 5) and got.num_components == 2
    assert np.allclose(got.eigenvalues, want.eigenvalues, atol=1e-7)
    assert np.allclose(got.eigenvectors[:, :2], want.eigenvectors[:, :2], atol=1e-12)
    overlap = np.linalg.svd(got.eigenvectors.T @ want.eigenvectors, compute_uv=False)
    assert overlap.min() > 1 - 1e-6
    with pytest.raises(ValueError, match="whole connected components"):
        sharded_components[1].eigensolver.attached_eigenpairs(5, nodes=nodes[1:], **options)
