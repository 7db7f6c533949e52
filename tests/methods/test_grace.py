import pytest
import torch

from distgcl.config import load_config
from distgcl.data import load_dataset
from distgcl.methods import GraphInfo, TrainingDiverged, build_method
from distgcl.train import seed_everything


def _setup(*overrides: str):
    config = load_config(None, ["method=grace", "data.csbm.num_nodes=200",
                                "data.csbm.num_features=12", "model.out_dim=16",
                                "model.proj_dim=16", "train.lr=0.01", *overrides])
    seed_everything(0)
    data = load_dataset("csbm", seed=0, csbm=config.data.csbm).data
    info = GraphInfo(data.num_nodes, data.num_features, 4)
    method = build_method(config, info)
    method.configure_optimizers()
    return method, data


@pytest.mark.parametrize("negatives", ["full", "sampled"])
def test_grace_loss_decreases(negatives: str) -> None:
    method, data = _setup(f"grace.negatives={negatives}", "grace.num_negatives=64")
    losses = [method.training_step(batch)["loss"] for epoch in range(1, 41)
              for batch in method.batches(data, epoch)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05
    z = method.embed(data)
    assert z.shape == (200, 16) and torch.isfinite(z).all()


def test_nan_loss_stops_before_the_update() -> None:
    method, data = _setup()
    before = {k: v.clone() for k, v in method.named_parameters()}
    data.x[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="not finite"):
        method.training_step(next(iter(method.batches(data, 1))))
    after = dict(method.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_random_parts_batching_trains_on_induced_subgraphs() -> None:
    method, data = _setup("grace.batching=parts", "grace.num_parts=4")
    assert method.steps_per_epoch(data) == 4
    batches = list(method.batches(data, 1))
    assert len(batches) == 4
    sizes = [sub.num_nodes for sub, _ in batches]
    assert sum(sizes) == data.num_nodes and all(s in (50, 51) for s in sizes)
    for sub, share in batches:
        assert share.total == sub.num_nodes and share.complete
        assert sub.edge_index.max() < sub.num_nodes
    losses = [method.training_step(b)["loss"] for epoch in range(1, 16)
              for b in method.batches(data, epoch)]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.05
