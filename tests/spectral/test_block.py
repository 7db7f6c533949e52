"""Block eigensolvers on the abstract block space (distgcl.spectral.block), single process."""
import numpy as np
import pytest
import torch

from distgcl.spectral import (adjacency, connected_components, laplacian_from_adjacency,
                              smallest_eigenpairs, trivial_eigenvectors)
from distgcl.spectral.block import (LocalBlockSpace, block_eigenpairs, chebyshev_subspace,
                                    hashed_normal, spectrum_lower_bound)


def _space(edges, n, dtype=torch.float64):
    adj = adjacency(edges, n)
    _, labels = connected_components(adj)
    lap = laplacian_from_adjacency(adj)
    return LocalBlockSpace.from_laplacian(lap, trivial_eigenvectors(adj, labels), dtype), lap


def test_hashed_normal_is_a_function_of_row_and_column():
    full = hashed_normal(7, np.arange(1000), 6)
    rows = np.array([999, 3, 500, 3])
    np.testing.assert_array_equal(hashed_normal(7, rows, 6), full[rows])  # any order, subset
    assert not np.allclose(hashed_normal(8, np.arange(1000), 6), full)
    big = hashed_normal(0, np.arange(50000), 4)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02
    np.testing.assert_allclose(np.corrcoef(big.T), np.eye(4), atol=0.02)


def test_operator_is_identity_minus_laplacian(three_components):
    ei, n, _ = three_components
    space, lap = _space(ei, n)
    x = space.random(3, 0)
    want = (np.eye(n) - lap.toarray()) @ x.numpy()
    np.testing.assert_allclose(space.matmul(x).numpy(), want, atol=1e-13)
    assert (np.eye(n) - lap.toarray())[n - 1, n - 1] == 1.0  # isolated node: S_ii = 1
    d = space.deflate(x)
    np.testing.assert_allclose(space.y.T.numpy() @ d.numpy(), 0, atol=1e-12)


def test_lower_bound_is_below_the_spectrum(three_components):
    ei, n, c = three_components
    space, lap = _space(ei, n)
    theta = 1 - np.linalg.eigvalsh(lap.toarray())
    nontrivial_min = np.sort(theta)[0]
    bound = spectrum_lower_bound(space, steps=30)
    assert -1 <= bound <= nontrivial_min + 1e-9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_budgeted_chebyshev_returns_an_orthonormal_subspace(three_components, dtype):
    ei, n, c = three_components
    space, lap = _space(ei, n, dtype)
    res = chebyshev_subspace(space, 6, block=12, tol=1e-12, max_matvecs=200)
    assert 200 <= res.matvecs <= 200 + 12 + 12  # stops at the budget (+ the final check)
    x = space.gather(res.vectors)
    np.testing.assert_allclose(x.T @ x, np.eye(6), atol=1e-5 if dtype == torch.float32 else 1e-10)
    r = (np.eye(n) - lap.toarray()) @ x - x * res.theta
    np.testing.assert_allclose(np.linalg.norm(r, axis=0), res.residuals,
                               atol=1e-5 if dtype == torch.float32 else 1e-10)
    exact = np.sort(1 - np.linalg.eigvalsh(lap.toarray()))[::-1][c:c + 6]
    np.testing.assert_allclose(res.theta, exact, atol=1e-2)  # close, not converged


def test_block_eigenpairs_matches_smallest_eigenpairs(three_components):
    ei, n, c = three_components
    space, lap = _space(ei, n)
    ref = smallest_eigenpairs(lap, 10, null_space=space.y.numpy(), solver="dense")
    for method in ("chebyshev", "lobpcg"):
        res = block_eigenpairs(space, 10, method=method, tol=1e-8)
        np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, atol=1e-9)
        assert res.num_components == c and res.residual_max <= 2e-8
        assert res.matvecs > 0
    only_null = block_eigenpairs(space, 3, tol=1e-8)  # k <= c: the null space alone
    np.testing.assert_allclose(only_null.eigenvalues, 0)
    with pytest.raises(ValueError, match="unknown block method"):
        block_eigenpairs(space, 3, method="arnoldi")
