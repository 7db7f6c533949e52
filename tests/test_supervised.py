"""Supervised references (MLP, GraphSAGE on random node parts) on the generated proteins graph."""
from pathlib import Path

import pytest
import torch
from torch_geometric.utils import subgraph

from distgcl.data import load_dataset
from distgcl.data.proteins import ProteinsModel, generate_proteins
from distgcl.supervised import random_node_parts, train_reference

FAST = {"epochs": 40, "hidden": 64, "eval_every": 5, "num_parts": 4, "eval_parts": 2,
        "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def proteins(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("proteins-ref")
    # Degree 40 instead of 597 averages the node offsets less: plant a clearer signal.
    strong = ProteinsModel(feature_node_noise=0.5, label_family=2.0)
    generate_proteins(root, num_nodes=1000, num_edges=20_000, chunk_edges=4000, model=strong,
                      progress=False)
    return load_dataset("ogbn-proteins", root, cache=root / "cache")


def test_random_node_parts_are_pygs_induced_subgraphs() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 97
    edge_index = torch.randint(0, n, (2, 900), generator=gen)
    parts = random_node_parts(edge_index, n, 5, torch.Generator().manual_seed(1))
    nodes = torch.cat([p for p, _ in parts])
    assert torch.equal(nodes.sort().values, torch.arange(n))  # disjoint and covering
    sizes = [p.numel() for p, _ in parts]
    assert max(sizes) - min(sizes) <= 1
    for part_nodes, local in parts:
        assert torch.equal(part_nodes, part_nodes.sort().values)
        expected, _ = subgraph(part_nodes, edge_index, relabel_nodes=True, num_nodes=n)
        assert torch.equal(local, expected)
    again = random_node_parts(edge_index, n, 5, torch.Generator().manual_seed(1))
    other = random_node_parts(edge_index, n, 5, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(parts, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(parts, other))


@pytest.mark.parametrize("kind", ["mlp", "graphsage"])
def test_references_learn_the_planted_signal(proteins, kind: str) -> None:
    result = train_reference(kind, proteins, seed=0, **FAST)
    assert result["rocauc_test"] > 60 and result["rocauc_val"] > 60
    assert 1 <= result["best_epoch"] <= FAST["epochs"] and result["epochs"] == FAST["epochs"]
    again = train_reference(kind, proteins, seed=0, **FAST)
    assert again["rocauc_test"] == result["rocauc_test"]  # seeded


def test_references_are_at_chance_when_labels_carry_no_signal(proteins) -> None:
    """The control of the test above: labels shuffled across nodes, same features."""
    shuffled = torch.randperm(proteins.data.num_nodes, generator=torch.Generator().manual_seed(0))
    data = proteins.data.clone()
    data.y = data.y[shuffled]
    control = type(proteins)(proteins.name, data, proteins.num_classes, True, proteins.split)
    for kind in ("mlp", "graphsage"):
        assert train_reference(kind, control, seed=0, **FAST)["rocauc_test"] < 56


def test_unknown_reference_is_rejected(proteins) -> None:
    with pytest.raises(ValueError, match="known: mlp, graphsage"):
        train_reference("gat", proteins)  # type: ignore[arg-type]
