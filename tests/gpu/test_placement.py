"""Device placement, checked on the CPU (these tests run everywhere, GPU or not).

A tensor made by a factory call without ``device=`` lands on the *default* device. On a GPU run
that is the CPU while the inputs live on CUDA (issue 17: ``normalized_operator``'s ``crow``,
E2Neg's ``randperm``). Here the inputs stay on the CPU and the default device is made ``meta``
(``with torch.device("meta")``): every factory call that does not follow its inputs then makes a
meta tensor, which cannot be mixed with the CPU inputs or copied back, so the code fails or
returns meta tensors, exactly where it would put a CPU tensor next to CUDA ones on a GPU.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch_geometric.nn import GCNConv

from distgcl.config import load_config
from distgcl.data import load_dataset
from distgcl.data.splits import SplitMasks
from distgcl.eval import linear_probe
from distgcl.methods import GraphInfo, build_method
from distgcl.methods.e2neg import permute_rows
from distgcl.nn import GCNEncoder
from distgcl.nn.encoder import normalized_operator
from distgcl.sampling import CSRNeighborSampler, uniform_negatives
from distgcl.train import _rng_state, _set_rng_state, seed_everything

FOREIGN = torch.device("meta")  # the default device a misplaced factory call would use
EDGES = torch.tensor([[0, 1, 1, 2, 3, 4, 2], [1, 0, 2, 1, 0, 2, 4]])


@pytest.mark.parametrize("duplicates", [False, True])
def test_normalized_operator_on_its_inputs_device(duplicates: bool) -> None:
    edges = torch.cat([EDGES, EDGES[:, :2]], dim=1) if duplicates else EDGES
    conv = GCNConv(4, 3)
    want = normalized_operator(conv, edges, 5, torch.float32).to_dense()
    with FOREIGN:
        got = normalized_operator(conv, edges, 5, torch.float32)
    assert got.device == edges.device and got.layout == torch.sparse_csr
    torch.testing.assert_close(got.to_dense(), want)


def test_embed_sparse_in_row_batches_on_its_inputs_device() -> None:
    torch.manual_seed(0)
    encoder = GCNEncoder(4, 3, layers=2)
    x = torch.randn(5, 4)
    want = encoder(x, EDGES).detach()
    with FOREIGN:
        got = encoder.embed_sparse(x, EDGES, batch_size=2)
    assert got.device == x.device
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_permute_rows_draws_on_the_generators_device() -> None:
    x, rows = torch.randn(6, 2), torch.tensor([0, 2, 4, 5])
    want, want_perm = permute_rows(x, rows, torch.Generator().manual_seed(3))
    with FOREIGN:
        got, perm = permute_rows(x, rows, torch.Generator().manual_seed(3))
    assert got.device == perm.device == x.device
    assert torch.equal(perm, want_perm) and torch.equal(got, want)


@pytest.mark.parametrize("replace", [False, True])
def test_neighbour_sampler_on_its_inputs_device(replace: bool) -> None:
    seeds = torch.tensor([0, 3])

    def sample(foreign: bool):  # type: ignore[no-untyped-def]
        with FOREIGN if foreign else torch.device("cpu"):
            sampler = CSRNeighborSampler(EDGES, 5, [1, -1], replace=replace)
            return sampler.sample(seeds, torch.Generator().manual_seed(0))

    want, got = sample(False), sample(True)
    for name in ("n_id", "edge_index", "e_id"):
        assert getattr(got, name).device == seeds.device
        assert torch.equal(getattr(got, name), getattr(want, name))
    negatives = uniform_negatives(5, 4, torch.Generator().manual_seed(1))
    with FOREIGN:
        assert torch.equal(uniform_negatives(5, 4, torch.Generator().manual_seed(1)), negatives)


METHODS = {
    "grace": ["method=grace", "model.proj_dim=16", "grace.negatives=sampled",
              "grace.num_negatives=32"],
    "nml-minibatch": ["method=nml", "model.proj_dim=0", "model.activation=rrelu",
                      "model.activate_last=false", "nml.inner_steps=1", "nml.mode=minibatch",
                      "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]"],
    "e2neg-nml": ["method=e2neg", "model.layers=1", "model.proj_dim=16", "e2neg.clusters=4",
                  "e2neg.num_neighbors=20", "e2neg.min_neighbors=10", "e2neg.nml=true"],
}


def _step_and_embed(name: str, foreign: bool) -> tuple[float, torch.Tensor]:
    """One training step and the full-graph embedding (batches drawn outside: the anchor ids
    are CPU tensors by design and moved where they are used)."""
    config = load_config(None, ["data.csbm.num_nodes=200", "data.csbm.num_features=12",
                                "model.out_dim=16", "train.progress=false", *METHODS[name]])
    seed_everything(0)
    data = load_dataset("csbm", seed=0, csbm=config.data.csbm).data
    method = build_method(config, GraphInfo(data.num_nodes, data.num_features, 4))
    method.configure_optimizers()
    method.prepare(data, None)
    batch = next(iter(method.batches(data, 1)))
    with FOREIGN if foreign else torch.device("cpu"):
        loss = method.training_step(batch)["loss"]
        z = method.embed(data)
    return loss, z


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_step_and_embedding_make_tensors_on_the_inputs_device(name: str) -> None:
    want_loss, want_z = _step_and_embed(name, foreign=False)
    loss, z = _step_and_embed(name, foreign=True)
    assert z.device == torch.device("cpu") and loss == want_loss
    torch.testing.assert_close(z, want_z)


def _splits(n: int) -> list[SplitMasks]:
    out = []
    for s in range(2):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(s))
        masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
        for mask, part in zip(masks, (perm[:30], perm[30:45], perm[45:])):
            mask[part] = True
        out.append(SplitMasks(*masks))
    return out


@pytest.mark.parametrize("multilabel", [False, True])
def test_adam_probe_runs_where_the_embeddings_are(multilabel: bool) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 8, generator=g)
    # ogb's ROC-AUC evaluator wants proteins' 112 tasks
    y = (torch.rand(60, 112, generator=g) > 0.5).long() if multilabel else torch.arange(60) % 3
    kwargs = dict(epochs=10, eval_every=5, multilabel=multilabel)
    splits = _splits(60)
    want = linear_probe(z, y, splits, **kwargs)
    with FOREIGN:
        got = linear_probe(z, y, splits, **kwargs)
    assert got.scores == want.scores


# ----------------------------------------------------------------------------- RNG layouts

def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> list[tuple[int, torch.Tensor]]:
    """Pretend ``count`` GPUs; returns the ``(device, state)`` of every CUDA state set."""
    restored: list[tuple[int, torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: restored.append((device, state)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all",
                        lambda states: restored.extend(enumerate(states)))
    return restored


def _checkpoint_state(cuda_devices: int) -> dict:
    seed_everything(5)
    state = _rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(cuda_devices)]
    return state


@pytest.mark.parametrize("saved,here,line", [
    (2, 1, "cuda RNG: checkpoint has 2 devices, this run 1; restored 1, dropped 1"),
    (0, 2, "cuda RNG: checkpoint has 0 devices, this run 2; restored 0, restarted 2 from seed"),
    (1, 0, "cuda RNG: checkpoint has 1 devices, this run 0; restored 0, dropped 1"),
    (2, 2, None),
])
def test_rng_restores_what_matches_and_says_what_restarted(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, saved: int, here: int,
        line: str | None) -> None:
    state = _checkpoint_state(saved)
    want_torch, want_np, want_py = torch.rand(3), np.random.rand(3), random.random()
    restored = _fake_cuda(monkeypatch, here)
    seed_everything(99)
    message = _set_rng_state(state)
    assert torch.equal(torch.rand(3), want_torch) and np.array_equal(np.random.rand(3), want_np)
    assert random.random() == want_py
    assert [d for d, _ in restored] == list(range(min(saved, here)))
    assert all(torch.equal(s, state["cuda"][d]) for d, s in restored)
    out = capsys.readouterr().out
    if line is None:
        assert message is None and out == ""
    else:
        assert line in message and out.count("\n") == 1 and line in out


def test_generator_state_of_another_device_type_restarts_from_seed(
        capsys: pytest.CaptureFixture) -> None:
    config = load_config(None, ["method=nml", "model.out_dim=8", "model.proj_dim=0",
                                "model.activation=rrelu", "model.activate_last=false"])
    method = build_method(config, GraphInfo(40, 8, 2))
    extra = method.get_extra_state()
    before = method.augment_generator.get_state()
    extra["generators"]["augment_generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA one
    extra["generators"]["negatives_generator"] = method.negatives_generator.get_state()
    method.negatives_generator.manual_seed(1234)
    method.set_extra_state(extra)
    assert torch.equal(method.augment_generator.get_state(), before)  # left as seeded
    assert torch.equal(method.negatives_generator.get_state(),
                       extra["generators"]["negatives_generator"])  # restored
    out = capsys.readouterr().out
    assert "augment_generator: checkpoint state is from another device type" in out
