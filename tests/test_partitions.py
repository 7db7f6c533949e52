"""Random node partitions (distgcl.partitions) and GRACE trained on them."""
from __future__ import annotations

import torch
from torch_geometric.utils import erdos_renyi_graph, subgraph

from distgcl.partitions import InducedSubgraphs, random_parts
from distgcl.work import Work


def test_induced_subgraph_equals_pyg_subgraph() -> None:
    torch.manual_seed(0)
    ei = erdos_renyi_graph(300, 0.05, directed=True)
    induced = InducedSubgraphs(ei, 300)
    for size in (1, 17, 150, 300):
        nodes = torch.randperm(300)[:size].sort().values
        ref, _ = subgraph(nodes, ei, relabel_nodes=True, num_nodes=300)
        got = induced(nodes)
        assert sorted(map(tuple, got.t().tolist())) == sorted(map(tuple, ref.t().tolist()))
    assert induced(torch.tensor([5])).shape == (2, 0)  # no self-loop in ei: no edge


def test_parts_cover_every_node_once_and_ranks_take_disjoint_parts() -> None:
    order = Work(seed=3).epoch_order(101, epoch=1)
    parts = random_parts(order, 7)
    assert sorted(torch.cat(parts).tolist()) == list(range(101))
    assert {p.numel() for p in parts} <= {14, 15}
    picks = [[int(s.ids[0]) for s in Work(rank=r, world_size=2, seed=3).epoch_batches(7, 1, 1)]
             for r in range(2)]
    assert len(picks[0]) == len(picks[1]) == 4  # 7 parts -> 4 steps per rank (one repeated)
    assert set(picks[0]) | set(picks[1]) == set(range(7))
