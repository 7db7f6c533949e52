"""Graph-shard actors: sharded products, the distributed eigensolvers, a killed shard, sampling.

Ray runs once for the module on 127.0.0.1; run it inside a private network namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_shards.py -q'
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from distgcl.distributed.linalg import ShardedBlockSpace, sharded_eigenpairs  # noqa: E402
from distgcl.distributed.partition import ShardChecksumError, partition_graph  # noqa: E402
from distgcl.distributed.sampling import ShardedNeighborSampler  # noqa: E402
from distgcl.distributed.shards import GraphShards  # noqa: E402
from distgcl.sampling import CSRNeighborSampler  # noqa: E402
from distgcl.spectral import (  # noqa: E402
    adjacency, connected_components, laplacian_from_adjacency, smallest_eigenpairs,
    trivial_eigenvectors)
from distgcl.spectral.block import LocalBlockSpace, block_eigenpairs  # noqa: E402
from shard_graphs import clustered_graph, mixed_graph  # noqa: E402

K = 16  # 11 trivial (3 communities, a triangle, an edge, 6 isolated nodes) + 5 non-trivial
KEYS = [(1, "auto"), (2, "random"), (4, "auto")]  # (shards, order): one actor set each


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-shards", log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def graph():
    ei, n, c = mixed_graph()
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(1))
    adj = adjacency(ei, n)
    _, labels = connected_components(adj)
    y = trivial_eigenvectors(adj, labels)
    lap = laplacian_from_adjacency(adj)
    return {"ei": ei, "n": n, "c": c, "x": x, "lap": lap, "y": y}


@pytest.fixture(scope="module")
def partitions(graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("partitions")
    return {(p, order): partition_graph(graph["ei"], graph["n"], p, root, x=graph["x"],
                                        order=order)
            for p, order in KEYS}


@pytest.fixture(scope="module")
def started(ray_session, partitions):
    """One set of actors per partition, shared by the tests of this module."""
    # tiny CPU reservations: all actor sets live at once on a 2-CPU Ray instance
    handles = {key: GraphShards(m, num_cpus=0.1, threads=1, timeout=120)
               for key, m in partitions.items()}
    yield handles
    for h in handles.values():
        h.shutdown()


@pytest.mark.parametrize("key", KEYS)
def test_sharded_products_equal_single_process(graph, started, key):
    shards = started[key]
    local = LocalBlockSpace.from_laplacian(graph["lap"], graph["y"])
    space = ShardedBlockSpace(shards)
    xl, xs = local.random(7, 3), space.random(7, 3)
    np.testing.assert_array_equal(space.gather(xs), local.gather(xl))  # same start block
    np.testing.assert_allclose(space.gather(space.matmul(xs)), local.gather(local.matmul(xl)),
                               atol=1e-14, rtol=0)
    s_ref = np.eye(graph["n"]) - graph["lap"].toarray()  # S = I - L, isolated S_ii = 1
    np.testing.assert_allclose(space.gather(space.matmul(xs)), s_ref @ space.gather(xs),
                               atol=1e-12)
    np.testing.assert_allclose(space.gather(space.deflate(xs)),
                               local.gather(local.deflate(xl)), atol=1e-13)
    ys = space.random(3, 9)
    np.testing.assert_allclose(space.gram([xs, ys], [ys]),
                               np.hstack([space.gather(xs), space.gather(ys)]).T @
                               space.gather(ys), atol=1e-10)
    m = np.arange(21.0).reshape(7, 3)
    np.testing.assert_allclose(space.gather(space.combine([(xs, m), (ys, -2.0)])),
                               space.gather(xs) @ m - 2 * space.gather(ys), atol=1e-12)
    np.testing.assert_allclose(space.gather(space.null_block(graph["c"])), graph["y"],
                               atol=1e-15)


@pytest.mark.parametrize("method,solver", [("chebyshev", "chebyshev"),
                                           ("lobpcg", "lobpcg-block")])
def test_distributed_eigenvalues_match_single_process(graph, started, method, solver):
    tol = 1e-8
    ref = smallest_eigenpairs(graph["lap"], K, null_space=graph["y"], solver=solver, tol=tol)
    dense = smallest_eigenpairs(graph["lap"], K, null_space=graph["y"], solver="dense")
    assert ref.solver == solver and ref.num_components == graph["c"] == 11
    np.testing.assert_allclose(ref.eigenvalues, dense.eigenvalues, atol=1e-6)
    for key in KEYS:
        assert started[key].manifest.num_shards == key[0]
        res = sharded_eigenpairs(started[key], K, method=method, tol=tol)
        assert res.solver == f"sharded-{method}" and res.num_components == 11
        np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, atol=1e-6)
        assert res.residual_max <= 2 * tol
        assert res.eigenvectors.shape == (graph["n"], K)
        # same invariant subspace as the single-process solver (original node order)
        overlap = np.linalg.svd(res.eigenvectors.T @ ref.eigenvectors, compute_uv=False)
        np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
        r = graph["lap"] @ res.eigenvectors - res.eigenvectors * res.eigenvalues
        np.testing.assert_allclose(np.linalg.norm(r, axis=0), res.residuals, atol=1e-9)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has died (exited, or a zombie awaiting its reaper)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killed_shard_restarts_with_identical_data_and_same_result(graph, started):
    shards = started[(2, "random")]
    assert shards.manifest.shared_components > 0  # deflation needs the driver's sums too
    before = shards.pids()
    digests = shards.digests()
    clean = ShardedBlockSpace(shards)
    reference = block_eigenpairs(clean, K, tol=1e-8)
    total = clean.calls  # the solve is deterministic: every run makes these many calls
    assert total > 200
    space = ShardedBlockSpace(shards)
    kill: dict[str, float] = {}

    def kill_after_some_calls() -> None:
        deadline = time.monotonic() + 60
        while space.calls < total // 4 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(before[1], signal.SIGKILL)
        kill.update(calls=space.calls, time=time.monotonic())

    thread = threading.Thread(target=kill_after_some_calls)
    thread.start()
    result = block_eigenpairs(space, K, tol=1e-8)
    ended = time.monotonic()
    thread.join()
    # the kill landed while the solve was running: at most half its calls had been issued,
    # and the solve went on for the rest (served by the restarted shard) after it
    assert kill and kill["time"] < ended
    assert kill["calls"] <= total // 2 and space.calls == total
    assert _gone(before[1])  # the old shard process is dead
    after = shards.pids()
    assert after[0] == before[0] and after[1] != before[1]  # shard 1 is a new process
    assert shards.digests() == digests  # reloaded the same verified data
    np.testing.assert_array_equal(result.eigenvalues, reference.eigenvalues)
    np.testing.assert_array_equal(result.eigenvectors, reference.eigenvectors)


def test_corrupted_shard_file_is_refused(ray_session, partitions, tmp_path):
    m = partitions[(2, "random")]
    copy = tmp_path / m.root.name
    shutil.copytree(m.root, copy)
    path = copy / m.shards[1]["file"]
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardChecksumError, match="does not match"):
        GraphShards(copy, num_cpus=0.1, timeout=120)  # default restarts: no retry loop


def test_sampled_subgraphs_equal_the_local_sampler(graph, started):
    ei, n, x = graph["ei"], graph["n"], graph["x"]
    deg_in = torch.bincount(ei[1], minlength=n)
    isolated = int(torch.nonzero(deg_in == 0)[0])
    seeds = torch.tensor([17, 3, 150, 42, 99, isolated, n - 1, 25])
    for key in KEYS:
        shards = started[key]
        assert all(i["pid"] > 0 for i in shards.infos)
        assert all(r > 0 for r in shards.peak_rss_mb())
        for fanout, replace in [([5, 3], False), ([2, 2, 2], False), ([-1, 4], False),
                                ([3, 2], True)]:
            local = CSRNeighborSampler(ei, n, fanout, replace=replace)
            remote = ShardedNeighborSampler(shards, fanout, replace=replace)
            for batch_seed in range(3):
                a = local.sample(seeds, torch.Generator().manual_seed(batch_seed))
                b = remote.sample(seeds, torch.Generator().manual_seed(batch_seed))
                assert torch.equal(a.n_id, b.n_id)
                assert torch.equal(a.edge_index, b.edge_index)
                assert torch.equal(a.e_id, b.e_id)
                assert a.num_sampled_nodes == b.num_sampled_nodes
                assert a.num_sampled_edges == b.num_sampled_edges
                assert torch.equal(remote.features(b.n_id), x[b.n_id])
        with pytest.raises(ValueError, match="distinct"):
            remote.sample(torch.tensor([1, 1]))
        with pytest.raises(ValueError, match="seed ids"):
            remote.sample(torch.tensor([n]))
    # a sampler built from actor handles alone (as a Ray Train worker would) is the same
    shards = started[(2, "random")]
    worker_side = ShardedNeighborSampler.from_actors(shards.actors, shards.manifest.bounds,
                                                     [4, 4])
    a = CSRNeighborSampler(ei, n, [4, 4]).sample(seeds, torch.Generator().manual_seed(5))
    b = worker_side.sample(seeds, torch.Generator().manual_seed(5))
    assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)


def _e2neg(data, services, clusters: int = 14, solver: str = "chebyshev"):
    """An E2Neg method on ``data`` with the given graph services, prepared (no cache)."""
    import distgcl.methods  # noqa: F401  (registers the method sections)
    from distgcl.config import config_from_dict
    from distgcl.methods import GraphInfo, build_method
    from distgcl.work import Work

    config = config_from_dict({
        "method": "e2neg", "model": {"out_dim": 8, "layers": 1, "proj_dim": 8},
        "train": {"progress": False},
        "e2neg": {"clusters": clusters, "solver": solver, "tol": 1e-8, "cache": False,
                  "num_neighbors": 10, "min_neighbors": 5}})
    method = build_method(config, GraphInfo(data.num_nodes, data.x.size(1), 3),
                          Work(services=services))
    method.prepare(data)
    return method


def test_e2neg_spectral_step_over_shards_equals_the_single_process_step(ray_session, graph,
                                                                         tmp_path):
    """E2Neg handed the sharded eigensolver (``dist.shards``) finds the single-process
    eigenpairs, covers every node, and reports the shards' costs (centres and stars: the next
    test)."""
    from torch_geometric.data import Data

    from distgcl.config import ConfigError
    from distgcl.distributed.services import ShardedEigensolver
    from distgcl.work import GraphServices

    data = Data(x=graph["x"], edge_index=graph["ei"], num_nodes=graph["n"])

    def prepared(services: GraphServices, solver: str = "chebyshev"):
        return _e2neg(data, services, solver=solver)

    local = prepared(GraphServices())
    sharded = prepared(GraphServices(eigensolver=ShardedEigensolver(str(tmp_path), 2)))
    spec_local, spec_sharded = local.stats["spectral"], sharded.stats["spectral"]
    assert spec_local["solver"] == "chebyshev" and spec_sharded["solver"] == "sharded-chebyshev"
    assert spec_sharded["shards"] == 2 and len(spec_sharded["shard_peak_rss_mb"]) == 2
    # the spectral step itself: same eigenpairs on the same nodes and components
    adj = adjacency(graph["ei"], graph["n"], dtype=bool)
    a, b = local._spectral(adj, graph["n"]), sharded._spectral(adj, graph["n"])
    assert torch.equal(a["nodes"], b["nodes"]) and torch.equal(a["component"], b["component"])
    np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], atol=1e-9)
    np.testing.assert_allclose(b["eigenvectors"], a["eigenvectors"], atol=1e-6)
    # (centres and stars are not compared on this graph: an eigenvector localized on one
    # component is ~1e-14 noise on the others, and the per-component k-means standardizes that
    # column to unit variance, so the solvers' rounding noise picks the clusters; see the next
    # test for the identity on a graph without such columns)
    stats = sharded.stats  # every node clustered or attached to a centre (isolated ones too)
    assert stats["nodes_clustered"] + stats["nodes_attached"] == graph["n"]
    assert stats["nodes_attached"] >= 6 and stats["isolated_nodes"] == 6
    assert sharded._spectral_params()["service"] == "sharded-p2"  # its own cache entries
    assert "service" not in local._spectral_params()
    with pytest.raises(ConfigError, match="block eigensolver"):
        prepared(GraphServices(eigensolver=ShardedEigensolver(str(tmp_path), 2)), "eigsh")


def test_e2neg_sharded_centres_and_stars_equal_the_single_process_ones(ray_session, tmp_path):
    """Same seed, same graph: the sharded eigensolver's run of E2Neg picks exactly the
    single-process clusters, centres and stars (the eigenpairs agree to ~1e-14, far below the
    float32 embedding's rounding, on a graph whose clusters are well separated)."""
    from torch_geometric.data import Data

    from distgcl.distributed.services import ShardedEigensolver
    from distgcl.work import GraphServices

    ei, n, _ = clustered_graph()
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(2))
    data = Data(x=x, edge_index=ei, num_nodes=n)
    local = _e2neg(data, GraphServices(), clusters=4)
    sharded = _e2neg(data, GraphServices(eigensolver=ShardedEigensolver(str(tmp_path), 2)),
                     clusters=4)
    assert sharded.stats["spectral"]["solver"] == "sharded-chebyshev"
    assert local.stats["nodes_clustered"] == sharded.stats["nodes_clustered"] == 240
    a, b = local.star_graph, sharded.star_graph
    assert a.centres.numel() == 4
    assert torch.equal(b.centres, a.centres)  # same centre nodes, same star order
    assert torch.equal(sharded.labels, local.labels)  # same k-means labels (same seed)
    assert torch.equal(b.members, a.members) and torch.equal(b.member_star, a.member_star)
    assert torch.equal(b.hops, a.hops) and torch.equal(b.num_candidates, a.num_candidates)
    assert torch.equal(sharded.batch.edge_index, local.batch.edge_index)
    # the clusters are the planted blocks: the comparison is not between two noise draws
    block = torch.empty(n, dtype=torch.long)
    block[torch.from_numpy(np.random.default_rng(7).permutation(n))] = torch.arange(n) // 60
    clustered = local.labels >= 0
    pairs = set(zip(local.labels[block < 4].tolist(), block[block < 4].tolist()))
    assert len(pairs) == 4 and bool(clustered[block < 4].all())
