"""Neighbour sampling (distgcl.sampling): the pure-torch CSR sampler on its own, PyG if present."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import erdos_renyi_graph

from distgcl.sampling import (CSRNeighborSampler, make_neighbor_sampler, pyg_sampling_available,
                              select_neighbors, uniform_negatives)

# 6-node hand-written graph (directed edges src -> dst; in-degrees: 0:3, 1:1, 2:2, 3:2, 4:1, 5:0)
EDGES = torch.tensor([[1, 2, 3, 0, 0, 3, 1, 2, 5],
                      [0, 0, 0, 1, 2, 2, 3, 3, 4]])


def _random_graph(n: int = 200, p: float = 0.08, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return erdos_renyi_graph(n, p, directed=True)


def _edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


def _check_sample(edge_index, num_nodes, seeds, fanout, out):
    n_id, local = out.n_id, out.edge_index
    assert out.batch_size == seeds.numel()
    assert torch.equal(n_id[:seeds.numel()], seeds)  # seeds first, in order
    assert n_id.unique().numel() == n_id.numel()
    assert local.min() >= 0 and local.max() < n_id.numel()
    edges = _edge_set(edge_index)
    sampled = n_id[local]  # global (src, dst)
    for s, d in sampled.t().tolist():
        assert (s, d) in edges  # every sampled edge exists
    assert torch.equal(edge_index[:, out.e_id], sampled)  # e_id points at the same edges
    # fan-out: a node expanded at hop h gets exactly min(in-degree, k_h) distinct in-edges
    in_deg = torch.bincount(edge_index[1], minlength=num_nodes)
    starts = [0]
    for c in out.num_sampled_nodes:
        starts.append(starts[-1] + c)
    for h, k in enumerate(fanout):
        targets = torch.arange(starts[h], starts[h + 1])
        for t in targets.tolist():
            got = local[:, local[1] == t]
            assert got.size(1) == (in_deg[n_id[t]] if k < 0 else min(int(in_deg[n_id[t]]), k))
            assert got[0].unique().numel() == got.size(1)  # without replacement
    # only nodes of hops < len(fanout) are expanded
    assert local[1].max() < starts[len(fanout)] if local.numel() else True


def test_hand_written_graph_full_fanout_takes_all_in_edges():
    s = CSRNeighborSampler(EDGES, 6, [-1, -1])
    out = s.sample(torch.tensor([0]))
    assert torch.equal(out.n_id[:1], torch.tensor([0]))
    assert _edge_set(out.n_id[out.edge_index]) == {(1, 0), (2, 0), (3, 0), (0, 1), (0, 2),
                                                   (3, 2), (1, 3), (2, 3)}
    assert out.num_sampled_nodes == [1, 3, 0]  # hop 2 reaches no new node
    _check_sample(EDGES, 6, torch.tensor([0]), [-1, -1], out)


def test_hand_written_graph_fanout_one():
    s = CSRNeighborSampler(EDGES, 6, [1])
    out = s.sample(torch.tensor([0, 4, 5]), torch.Generator().manual_seed(3))
    assert out.edge_index.size(1) == 2  # nodes 0 and 4 get one in-edge, 5 has none
    _check_sample(EDGES, 6, torch.tensor([0, 4, 5]), [1], out)


@pytest.mark.parametrize("fanout", [[5, 3], [2, 2, 2], [-1, 4]])
def test_random_graph_invariants(fanout):
    ei = _random_graph()
    s = CSRNeighborSampler(ei, 200, fanout)
    seeds = torch.tensor([17, 3, 150, 42, 99])
    out = s.sample(seeds, torch.Generator().manual_seed(0))
    _check_sample(ei, 200, seeds, fanout, out)
    assert out.num_sampled_edges is not None and len(out.num_sampled_edges) == len(fanout)


def test_seeded_reproducibility_and_fresh_draws():
    ei = _random_graph()
    s = CSRNeighborSampler(ei, 200, [4, 4])
    seeds = torch.tensor([5, 6, 7])
    a = s.sample(seeds, torch.Generator().manual_seed(123))
    b = s.sample(seeds, torch.Generator().manual_seed(123))
    c = s.sample(seeds, torch.Generator().manual_seed(124))
    assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
    assert not (a.n_id.numel() == c.n_id.numel() and torch.equal(a.n_id, c.n_id)
                and torch.equal(a.edge_index, c.edge_index))
    # the internal id map is reset: a second sampler call is independent of the first
    s2 = CSRNeighborSampler(ei, 200, [4, 4])
    d = s2.sample(seeds, torch.Generator().manual_seed(123))
    assert torch.equal(a.edge_index, d.edge_index)


def test_uniform_sampling_covers_neighbours():
    # a star: node 0 has 10 in-neighbours; fan-out 2 must not always pick the same ones
    ei = torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)])
    s = CSRNeighborSampler(ei, 11, [2])
    g = torch.Generator().manual_seed(0)
    picked = torch.cat([s.sample(torch.tensor([0]), g).n_id[1:] for _ in range(200)])
    counts = torch.bincount(picked, minlength=11)[1:]
    assert (counts > 0).all() and counts.sum() == 400
    assert counts.max() < 70  # expected 40 each


def test_without_replacement_every_k_subset_equally_likely():
    # Floyd's algorithm must give each of the C(6, 3) = 20 subsets probability 1/20 (a biased
    # rule, e.g. "t or the next free slot", skews them); rows of degree <= k keep all edges
    degree = torch.tensor([6, 2, 6])
    g = torch.Generator().manual_seed(0)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(4000):
        owner, offset = select_neighbors(degree, 3, generator=g)
        assert owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
        assert sorted(offset[3:5].tolist()) == [0, 1]
        for row in (0, 2):
            subset = tuple(sorted(offset[owner == row].tolist()))
            assert len(set(subset)) == 3 and max(subset) < 6
            counts[subset] = counts.get(subset, 0) + 1
    assert len(counts) == 20
    assert min(counts.values()) > 320 and max(counts.values()) < 480  # expected 400 each


def test_replace_mode_draws_k_per_node():
    ei = _random_graph()
    s = CSRNeighborSampler(ei, 200, [30], replace=True)
    out = s.sample(torch.tensor([1, 2]), torch.Generator().manual_seed(0))
    assert out.edge_index.size(1) == 60
    assert _edge_set(out.n_id[out.edge_index]) <= _edge_set(ei)


def test_errors_and_backend_choice():
    with pytest.raises(ValueError, match="num_neighbors"):
        CSRNeighborSampler(EDGES, 6, [0])
    s = CSRNeighborSampler(EDGES, 6, [2])
    with pytest.raises(ValueError, match="distinct"):
        s.sample(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="seed ids"):
        s.sample(torch.tensor([6]))
    with pytest.raises(ValueError, match="backend"):
        make_neighbor_sampler(EDGES, 6, [2], backend="nope")  # type: ignore[arg-type]
    assert isinstance(make_neighbor_sampler(EDGES, 6, [2], backend="torch"), CSRNeighborSampler)
    if not pyg_sampling_available():
        assert isinstance(make_neighbor_sampler(EDGES, 6, [2]), CSRNeighborSampler)
        with pytest.raises(ImportError, match="pyg-lib"):
            make_neighbor_sampler(EDGES, 6, [2], backend="pyg")
    neg = uniform_negatives(6, 50, torch.Generator().manual_seed(0))
    assert neg.shape == (50,) and neg.min() >= 0 and neg.max() < 6


@pytest.mark.skipif(not pyg_sampling_available(), reason="needs pyg-lib or torch-sparse")
def test_pyg_backend_same_layout():
    ei = _random_graph()
    s = make_neighbor_sampler(ei, 200, [5, 3], backend="pyg")
    seeds = torch.tensor([17, 3, 150])
    out = s.sample(seeds)
    _check_sample(ei, 200, seeds, [5, 3], out)
