"""The Chebyshev solver stops on the subspace (``subspace_tol``), with ``max_matvecs`` the ceiling."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import normalized_mutual_info_score as nmi

from distgcl.spectral import (adjacency, connected_components, laplacian_from_adjacency,
                              smallest_eigenpairs, spectral_clusters, trivial_eigenvectors)
from distgcl.spectral.block import (LocalBlockSpace, block_eigenpairs, chebyshev_subspace,
                                    davis_kahan_bound, projector_change)
from spectral_graphs import planted_partition

CEILING = 3000
SUBSPACE_TOL = 1e-2


def _space(ei: torch.Tensor, n: int, dtype: torch.dtype = torch.float64):
    adj = adjacency(ei, n)
    _, labels = connected_components(adj)
    y = trivial_eigenvectors(adj, labels)
    lap = laplacian_from_adjacency(adj)
    return LocalBlockSpace.from_laplacian(lap, y, dtype), lap, y


@pytest.fixture(scope="module")
def planted():
    """8 communities of 80 nodes (p_in 0.3, p_out 0.004): lambda_8 ~ 0.11, lambda_9 ~ 0.68."""
    ei, labels = planted_partition([80] * 8, 0.3, 0.004, seed=0)
    return ei, int(labels.numel()), labels.numpy()


@pytest.fixture(scope="module")
def flat():
    """An Erdos-Renyi graph (2000 nodes, mean degree 20): no gap anywhere near the top of S."""
    rng = np.random.default_rng(0)
    n, m = 2000, 20_000
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = src != dst
    ei = torch.from_numpy(np.stack([np.r_[src[keep], dst[keep]],
                                    np.r_[dst[keep], src[keep]]])).long()
    return ei, n


def _true_angle(space: LocalBlockSpace, lap, vectors, m: int) -> float:
    """sin of the largest principal angle to the exact leading non-trivial eigenspace."""
    _, exact = np.linalg.eigh(lap.toarray())
    c = space.num_components
    return float(np.sin(scipy.linalg.subspace_angles(space.gather(vectors),
                                                     exact[:, c:c + m]).max()))


@pytest.mark.parametrize("criterion", ["either", "projector", "davis-kahan"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_settled_subspace_stops_early_and_recovers_communities(planted, criterion, dtype):
    ei, n, labels = planted
    space, lap, _ = _space(ei, n, dtype)
    # tol 0 is out of reach: only the subspace criterion (or the ceiling) can stop it
    res = chebyshev_subspace(space, 7, block=15, tol=0.0, max_matvecs=CEILING,
                             subspace_tol=SUBSPACE_TOL, subspace_criterion=criterion)
    expected = "davis-kahan" if criterion == "either" else criterion  # DK needs no 2nd step
    assert res.stop_reason == expected
    assert res.matvecs <= CEILING // 10, res.matvecs
    if criterion == "projector":
        assert res.subspace_change <= SUBSPACE_TOL
    else:
        assert res.subspace_bound <= SUBSPACE_TOL
    assert _true_angle(space, lap, res.vectors, 7) <= 2 * SUBSPACE_TOL
    emb = np.hstack([space.gather(space.null_block(1)), space.gather(res.vectors)])
    found, _ = spectral_clusters(emb, 8, seed=0)
    assert nmi(labels, found) == pytest.approx(1.0)


def test_without_subspace_tol_the_ceiling_or_residual_stops_it(planted):
    ei, n, _ = planted
    space, _, _ = _space(ei, n)
    res = chebyshev_subspace(space, 7, block=15, tol=0.0, max_matvecs=600)
    assert res.stop_reason == "max_matvecs" and res.matvecs >= 600
    assert np.isnan(res.subspace_change) and np.isnan(res.subspace_bound)
    tight = chebyshev_subspace(space, 7, block=15, tol=1e-9, max_matvecs=CEILING)
    assert tight.stop_reason == "residual" and tight.residuals.max() <= 1e-9


def test_flat_spectrum_runs_to_the_ceiling_and_says_so(flat):
    ei, n = flat
    space, _, _ = _space(ei, n)
    res = chebyshev_subspace(space, 9, block=15, tol=1e-8, max_matvecs=600,
                             subspace_tol=1e-3)
    assert res.stop_reason == "max_matvecs"
    assert 600 <= res.matvecs <= 600 + 15
    assert res.subspace_change > 1e-3 and res.subspace_bound > 1e-3
    eig = block_eigenpairs(space, 10, tol=1e-8, max_matvecs=600, subspace_tol=1e-3)
    assert eig.details["stop_reason"] == "max_matvecs"


def test_projector_change_is_the_sine_of_the_largest_principal_angle(planted):
    ei, n, _ = planted
    space, _, _ = _space(ei, n)
    def orthonormal(x):  # X R^-1 with R^T R = X^T X
        return space.combine([(x, np.linalg.inv(np.linalg.cholesky(space.gram([x], [x])).T))])

    a = orthonormal(space.random(12, 0))
    b = orthonormal(space.combine([(a, np.eye(12)), (space.random(12, 1), 0.05)]))
    angle = scipy.linalg.subspace_angles(space.gather(a), space.gather(b)).max()
    # split into two side-by-side blocks, as the solver passes [locked, active]
    parts = [space.take(a, np.arange(5)), space.take(a, np.arange(5, 12))]
    assert projector_change(space, parts, [b]) == pytest.approx(np.sin(angle), rel=1e-8)
    assert projector_change(space, [a], [a]) == pytest.approx(0.0, abs=1e-7)


def test_davis_kahan_bound_formula():
    assert davis_kahan_bound(np.array([3.0, 4.0]), 0.7, 0.2) == pytest.approx(10.0)
    assert davis_kahan_bound(np.array([1.0]), 0.5, 0.5) == np.inf


def test_smallest_eigenpairs_reports_the_stop_and_checks_options(planted):
    ei, n, labels = planted
    _, lap, y = _space(ei, n)
    eig = smallest_eigenpairs(lap, 8, null_space=y, solver="chebyshev", tol=1e-14,
                              max_matvecs=CEILING, subspace_tol=SUBSPACE_TOL)
    assert eig.details["stop_reason"] == "davis-kahan"
    assert eig.summary()["stop_reason"] == "davis-kahan" and eig.matvecs <= CEILING // 10
    found, _ = spectral_clusters(eig.eigenvectors, 8, seed=0)
    assert nmi(labels, found) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="subspace_tol must be in"):
        smallest_eigenpairs(lap, 8, null_space=y, solver="chebyshev", subspace_tol=1.5)
    with pytest.raises(ValueError, match="needs solver 'chebyshev'"):
        smallest_eigenpairs(lap, 8, null_space=y, solver="eigsh", subspace_tol=0.1)
    space, _, _ = _space(ei, n)
    with pytest.raises(ValueError, match="unknown subspace_criterion"):
        chebyshev_subspace(space, 7, subspace_tol=0.1, subspace_criterion="angle")
    with pytest.raises(ValueError, match="needs method 'chebyshev'"):
        block_eigenpairs(space, 8, method="lobpcg", subspace_tol=0.1)


@pytest.mark.parametrize("isolated", [0, 2])
def test_operator_from_adjacency_equals_the_one_from_the_laplacian(planted, isolated):
    ei, n, _ = planted
    adj = adjacency(ei, n + isolated, dtype=bool)
    _, labels = connected_components(adj)
    y = trivial_eigenvectors(adj, labels)
    fast = LocalBlockSpace.from_adjacency(adj, y)
    ref = LocalBlockSpace.from_laplacian(laplacian_from_adjacency(adj), y)
    x = ref.random(6, 3)
    np.testing.assert_allclose(fast.gather(fast.matmul(x)), ref.gather(ref.matmul(x)),
                               atol=1e-15, rtol=0)
