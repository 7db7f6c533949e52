"""The ``rms`` subspace criterion: stop on the mean principal angle k-means sees, not the worst."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import torch
from sklearn.metrics import normalized_mutual_info_score as nmi

from distgcl.spectral import (adjacency, connected_components, laplacian_from_adjacency,
                              spectral_clusters, trivial_eigenvectors)
from distgcl.spectral.block import (LocalBlockSpace, _distance_from_step, block_eigenpairs,
                                    chebyshev_subspace, subspace_changes)
from spectral_graphs import planted_partition

CEILING = 3000
TOL = 0.15


def _space(ei: torch.Tensor, n: int) -> LocalBlockSpace:
    adj = adjacency(ei, n)
    _, labels = connected_components(adj)
    return LocalBlockSpace.from_laplacian(laplacian_from_adjacency(adj),
                                          trivial_eigenvectors(adj, labels), torch.float32)


@pytest.fixture(scope="module")
def planted():
    """16 communities of 60 nodes, a few links between them: a clear gap after lambda_16."""
    ei, labels = planted_partition([60] * 16, 0.3, 0.006, seed=1)
    return ei, int(labels.numel()), labels.numpy()


def test_rms_change_is_the_root_mean_square_sine_of_the_principal_angles():
    space = LocalBlockSpace.from_laplacian(scipy.sparse.identity(3, format="csr"),
                                           np.zeros((3, 0)))  # only its gram is used
    n, m = 400, 10
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((n, m + 1)))
    a = q[:, :m]
    b = a.copy()  # one column turned by 30 degrees out of span(a): max sine 0.5
    b[:, 0] = math.cos(math.pi / 6) * q[:, 0] + math.sin(math.pi / 6) * q[:, m]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    worst, rms = subspace_changes(space, [ta[:, :4], ta[:, 4:]], [tb])
    sines = np.sin(scipy.linalg.subspace_angles(a, b))
    assert worst == pytest.approx(0.5, rel=1e-9) == pytest.approx(sines.max(), rel=1e-9)
    assert rms == pytest.approx(0.5 / math.sqrt(m), rel=1e-9)
    assert rms == pytest.approx(math.sqrt(np.mean(sines ** 2)), rel=1e-9)


def test_rms_rule_stops_before_the_worst_angle_rule_with_the_same_clusters(planted):
    ei, n, labels = planted
    space = _space(ei, n)
    # a loose tolerance: the mean angle is below it while the worst one is not yet
    common = dict(block=20, tol=0.0, max_matvecs=CEILING, subspace_tol=TOL)
    rms = chebyshev_subspace(space, 15, subspace_criterion="rms", **common)
    worst = chebyshev_subspace(space, 15, subspace_criterion="either", **common)
    assert rms.stop_reason == "davis-kahan-rms", rms.history
    assert worst.stop_reason in ("davis-kahan", "projector"), worst.stop_reason
    assert rms.matvecs < worst.matvecs < CEILING // 10, (rms.matvecs, worst.matvecs)
    # it stopped on the mean (bound / sqrt(m)) while the worst-angle bound was still above tol
    assert rms.subspace_bound_rms <= TOL < rms.subspace_bound
    assert rms.subspace_bound_rms == pytest.approx(rms.subspace_bound / math.sqrt(15))
    assert [h["matvecs"] for h in rms.history] == sorted(h["matvecs"] for h in rms.history)
    emb = np.hstack([space.gather(space.null_block(1)), space.gather(rms.vectors)])
    found, _ = spectral_clusters(emb, 16, seed=0)
    assert nmi(labels, found) == pytest.approx(1.0)
    eig = block_eigenpairs(space, 16, tol=0.0, max_matvecs=CEILING, subspace_tol=TOL,
                           subspace_criterion="rms", block=20)
    assert eig.details["stop_reason"] == rms.stop_reason and eig.matvecs == rms.matvecs
    assert eig.details["subspace_bound_rms"] <= TOL


def test_a_weak_filter_step_is_not_taken_for_a_settled_subspace():
    """A degree-1 step on a hard spectrum (T_1 = 1.05) barely moves the basis; the distance it
    implies is the step / (1 - 1/T), and no damping known means no distance known."""
    assert _distance_from_step(0.006, 1.05) == pytest.approx(0.126)
    assert _distance_from_step(0.006, 1.0) == math.inf
    assert _distance_from_step(0.006, 1e6) == pytest.approx(0.006, rel=1e-5)


def test_rms_rule_does_not_stop_early_without_a_gap():
    """Erdos-Renyi (2000 nodes, mean degree 20): the top of S is a continuum, so the wanted
    subspace keeps turning and only the ceiling may stop the solve."""
    rng = np.random.default_rng(0)
    n, m = 2000, 20_000
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = src != dst
    ei = torch.from_numpy(np.stack([np.r_[src[keep], dst[keep]],
                                    np.r_[dst[keep], src[keep]]])).long()
    res = chebyshev_subspace(_space(ei, n), 9, block=15, tol=0.0, max_matvecs=600,
                             subspace_tol=0.02, subspace_criterion="rms")
    assert res.stop_reason == "max_matvecs", res.history
    assert res.subspace_change_rms > 0.02 and res.subspace_bound_rms > 0.02
