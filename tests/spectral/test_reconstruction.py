import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import shortest_path

from distgcl.spectral import adjacency, reconstruct_stars

from spectral_graphs import planted_partition


def _graph():
    ei, _ = planted_partition([100] * 5, p_in=0.04, p_out=0.002, seed=1)
    return ei, 500


def _check_invariants(stars, ei, n, max_neighbors):
    centres = stars.centres.numpy()
    members = stars.members.numpy()
    src, dst = stars.edge_index.numpy()
    # Every edge ends at a centre and starts at a non-centre leaf.
    assert np.isin(dst, centres).all()
    assert not np.isin(src, centres).any()
    # No node in two stars (and no centre is a leaf).
    assert np.unique(members).size == members.size
    # Star sizes are bounded.
    assert np.bincount(stars.member_star.numpy(), minlength=centres.size).max() <= max_neighbors
    # Every member lies within its star's radius h.
    dist = shortest_path(adjacency(ei, n), unweighted=True, indices=centres)
    star = stars.member_star.numpy()
    d = dist[star, members]
    assert np.all(d >= 1) and np.all(d <= stars.hops.numpy()[star])


def test_star_invariants():
    ei, n = _graph()
    centres = torch.tensor([0, 150, 220, 310, 499])
    stars = reconstruct_stars(ei, n, centres, max_neighbors=40, min_neighbors=30,
                              generator=torch.Generator().manual_seed(0))
    _check_invariants(stars, ei, n, 40)
    assert stars.members.numel() > 100


def test_radius_grows_until_min_neighbors():
    # A ring: the h-ball has 2h nodes, so 9 candidates need h = 5.
    n = 60
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    stars = reconstruct_stars(ring, n, torch.tensor([0, 30]), max_neighbors=100, min_neighbors=9,
                              max_hops=10, generator=torch.Generator().manual_seed(0))
    assert stars.hops.tolist() == [5, 5]
    assert stars.num_candidates.tolist() == [10, 10]
    _check_invariants(stars, ring, n, 100)
    capped = reconstruct_stars(ring, n, torch.tensor([0]), min_neighbors=50, max_hops=3)
    assert capped.hops.tolist() == [3] and capped.members.numel() == 6


def test_overlapping_balls_assign_each_node_once():
    ei, n = _graph()
    centres = torch.tensor([0, 1, 2, 3])  # same block: balls overlap heavily
    stars = reconstruct_stars(ei, n, centres, max_neighbors=80, min_neighbors=10,
                              generator=torch.Generator().manual_seed(1))
    _check_invariants(stars, ei, n, 80)


def test_sampling_is_seeded():
    ei, n = _graph()
    centres = torch.tensor([5, 105, 205])
    a = reconstruct_stars(ei, n, centres, max_neighbors=20,
                          generator=torch.Generator().manual_seed(7))
    b = reconstruct_stars(ei, n, centres, max_neighbors=20,
                          generator=torch.Generator().manual_seed(7))
    c = reconstruct_stars(ei, n, centres, max_neighbors=20,
                          generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.edge_index, b.edge_index)
    assert not torch.equal(a.edge_index, c.edge_index)


def test_subgraph_relabels_centres_first():
    ei, n = _graph()
    stars = reconstruct_stars(ei, n, torch.tensor([10, 250]), max_neighbors=15)
    node_ids, local, centre_pos = stars.subgraph()
    assert torch.equal(node_ids[centre_pos], stars.centres)
    assert torch.equal(node_ids[local], stars.edge_index)


def test_invalid_arguments():
    ei, n = _graph()
    with pytest.raises(ValueError, match="distinct"):
        reconstruct_stars(ei, n, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="start_hops"):
        reconstruct_stars(ei, n, torch.tensor([1]), start_hops=3, max_hops=2)
