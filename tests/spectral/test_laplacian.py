import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import laplacian as scipy_laplacian

from distgcl.spectral import (adjacency, connected_components, largest_component,
                              normalized_laplacian, to_torch_csr, trivial_eigenvectors)


def test_adjacency_symmetrizes_merges_and_drops_self_loops():
    # 0->1 twice, 1->2 one direction only, self-loop on 3, node 4 isolated.
    ei = torch.tensor([[0, 0, 1, 3], [1, 1, 2, 3]])
    a = adjacency(ei, num_nodes=5).toarray()
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(a, expected)


def test_laplacian_matches_scipy_and_isolated_convention():
    ei = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]])  # triangle + isolated node 3
    lap = normalized_laplacian(ei, num_nodes=4).toarray()
    ref = scipy_laplacian(sp.csr_matrix(adjacency(ei, 4)), normed=True).toarray()
    np.testing.assert_allclose(lap, ref, atol=1e-12)
    assert lap[3, 3] == 0.0  # isolated: L_ii = 0, its own zero eigenvalue
    np.testing.assert_allclose(lap, lap.T)
    assert np.linalg.eigvalsh(lap).min() > -1e-12


def test_trivial_eigenvectors_are_orthonormal_null_vectors(three_components):
    ei, n, c = three_components
    adj = adjacency(ei, n)
    count, labels = connected_components(adj)
    assert count == c
    y = trivial_eigenvectors(adj, labels)
    lap = normalized_laplacian(ei, n)
    assert y.shape == (n, c)
    np.testing.assert_allclose(y.T @ y, np.eye(c), atol=1e-12)
    assert np.abs(lap @ y).max() < 1e-12
    assert largest_component(adj).size == 300


def test_to_torch_csr_roundtrip():
    lap = normalized_laplacian(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    t = to_torch_csr(lap)
    np.testing.assert_allclose(t.to_dense().numpy(), lap.toarray())


def test_bad_edge_index_raises():
    with pytest.raises(ValueError, match="num_nodes"):
        adjacency(torch.tensor([[0], [5]]), num_nodes=3)
