import numpy as np
import pytest

from distgcl.spectral import (cluster_purity, laplacian_eigenpairs, select_centres,
                              spectral_clusters)
from distgcl.spectral.laplacian import adjacency, largest_component

from spectral_graphs import planted_partition


def test_planted_partition_is_recovered():
    ei, blocks = planted_partition([120] * 6, p_in=0.1, p_out=0.004, seed=0)
    n = blocks.numel()
    assert largest_component(adjacency(ei, n)).size == n  # connected
    res = laplacian_eigenpairs(ei, k=6, num_nodes=n, solver="lobpcg-scipy", tol=1e-6, seed=0)
    labels, _ = spectral_clusters(res.eigenvectors, 6, seed=0)
    assert cluster_purity(labels, blocks.numpy()) >= 0.9
    centres = select_centres(res.eigenvectors, labels)
    assert len(set(labels[centres])) == centres.size  # one centre per cluster


def test_norm_rule_picks_largest_row_norm_per_cluster():
    emb = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, -5.0], [0.1, 0.1]])
    labels = np.array([0, 0, 1, 1, -1])
    np.testing.assert_array_equal(select_centres(emb, labels, rule="norm"), [1, 3])


def test_centroid_rule_picks_closest_to_the_mean():
    emb = np.array([[0.0], [1.0], [5.0], [10.0], [11.0], [12.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        select_centres(emb, labels, rule="centroid", standardize=False), [1, 4])
    with pytest.raises(ValueError, match="unknown centre rule"):
        select_centres(emb, labels, rule="degree")  # type: ignore[arg-type]


def test_purity_values():
    assert cluster_purity(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == 1.0
    assert cluster_purity(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])) == 0.5
    assert cluster_purity(np.array([0, -1, 1]), np.array([2, 0, 2])) == 1.0


def test_other_components_rounding_noise_does_not_drive_the_clusters():
    # one component's rows of a multi-component eigenbasis: 3 informative columns (three planted
    # groups) and 20 columns that belong to other components, zero up to 1e-14 rounding
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(3), 40)
    informative = np.eye(3)[groups] + 0.05 * rng.standard_normal((120, 3))
    rounding = 1e-14 * rng.standard_normal((120, 20))
    emb = np.hstack([informative, rounding])
    labels, centroids = spectral_clusters(emb, 3, seed=0, minibatch=False)
    assert cluster_purity(labels, groups) == 1.0  # z-scored noise columns would scatter them
    assert centroids.shape == (3, 3)  # k-means ran on the informative columns only
    centres = select_centres(emb, labels, rule="centroid", centroids=centroids)
    assert sorted(groups[centres]) == [0, 1, 2]
