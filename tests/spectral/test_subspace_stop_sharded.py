"""The subspace stop runs unchanged over graph-shard actors (Ray on 127.0.0.1):

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/spectral/test_subspace_stop_sharded.py -q'
"""
from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from distgcl.distributed.linalg import sharded_eigenpairs  # noqa: E402
from distgcl.distributed.partition import partition_graph  # noqa: E402
from distgcl.distributed.shards import GraphShards  # noqa: E402
from distgcl.spectral import (adjacency, connected_components,  # noqa: E402
                              trivial_eigenvectors)
from distgcl.spectral.block import LocalBlockSpace, block_eigenpairs  # noqa: E402
from spectral_graphs import planted_partition  # noqa: E402


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-shards", log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_sharded_solver_stops_on_the_subspace_like_the_local_one(ray_session, tmp_path):
    ei, labels = planted_partition([80] * 8, 0.3, 0.004, seed=0)
    n = int(labels.numel())
    adj = adjacency(ei, n)
    _, comp = connected_components(adj)
    local = LocalBlockSpace.from_adjacency(adj, trivial_eigenvectors(adj, comp))
    options = dict(tol=1e-14, block=15, max_matvecs=3000, subspace_tol=1e-2)
    ref = block_eigenpairs(local, 8, **options)
    assert ref.details["stop_reason"] == "davis-kahan" and ref.matvecs <= 300
    manifest = partition_graph(ei, n, 2, tmp_path, order="random")
    with GraphShards(manifest, num_cpus=0.1, threads=1, timeout=120) as shards:
        res = sharded_eigenpairs(shards, 8, **options)
    assert res.details["stop_reason"] == ref.details["stop_reason"]
    assert res.matvecs == ref.matvecs and res.iterations == ref.iterations
    np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, atol=1e-8)
    overlap = np.linalg.svd(res.eigenvectors.T @ ref.eigenvectors, compute_uv=False)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
