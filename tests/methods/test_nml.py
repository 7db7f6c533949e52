"""NML-GCL method (distgcl.methods.nml): bi-level schedule, optimizers, divergence, mini-batches."""
from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from distgcl.config import ConfigError, load_config
from distgcl.methods import GraphInfo, TrainingDiverged, build_method
from distgcl.methods.nml import NML, NMLBatch

N, F_IN, D = 40, 8, 8


def _data(seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % 2
    x = torch.randn(N, F_IN, generator=g) + 2.0 * y.unsqueeze(1).float()
    src = torch.randint(0, N, (160,), generator=g)
    dst = torch.randint(0, N, (160,), generator=g)
    keep = src != dst
    return Data(x=x, edge_index=to_undirected(torch.stack([src[keep], dst[keep]]), num_nodes=N),
                y=y, num_nodes=N)


def _method(*overrides: str) -> NML:
    cfg = load_config(None, ["method=nml", f"model.out_dim={D}", f"model.hidden_dim={D}",
                             "model.activation=rrelu", "model.activate_last=false",
                             "model.proj_dim=0", "train.lr=0.01", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg, GraphInfo(num_nodes=N, num_features=F_IN, num_classes=2))
    assert isinstance(method, NML)
    method.configure_optimizers()
    return method


def _full(method: NML, data: Data):
    """The one full-batch step of an epoch (the graph and this rank's share of the anchors)."""
    return next(iter(method.batches(data, 1)))


def _count_steps(method: NML) -> dict[str, int]:
    counts = {name: 0 for name in method.optimizers}
    for name, opt in method.optimizers.items():
        original = opt.step

        def step(*args, _name=name, _orig=original, **kwargs):
            counts[_name] += 1
            return _orig(*args, **kwargs)

        opt.step = step  # type: ignore[method-assign]
    return counts


MINI = ["nml.mode=minibatch", "nml.batch_size=16", "nml.num_negatives=12",
        "nml.num_neighbors=[3,3]"]


@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("mode", [[], MINI, [*MINI, "nml.negatives=within-batch"]])
def test_exactly_t_m_nmn_steps_per_encoder_step(inner, mode):
    method = _method(f"nml.inner_steps={inner}", *mode)
    counts = _count_steps(method)
    data = _data()
    batches = 0
    for batch in method.batches(data, 1):
        stats = method.training_step(batch)
        batches += 1
        assert counts == {"encoder": batches, "nmn": inner * batches}
        assert set(stats) >= {"loss", "loss_nmn", "info_nce", "kl"}
    assert batches == (1 if not mode else 3)  # ceil(40 / 16) mini-batches


def test_optimizers_own_disjoint_parameter_groups():
    method = _method()
    enc = {id(p) for g in method.optimizers["encoder"].param_groups for p in g["params"]}
    nmn = {id(p) for g in method.optimizers["nmn"].param_groups for p in g["params"]}
    assert enc == {id(p) for p in method.encoder.parameters()}
    assert nmn == {id(p) for p in method.nmn.parameters()}
    assert not enc & nmn
    cosine = _method("nml.metric=cosine")
    assert set(cosine.optimizers) == {"encoder"}
    stats = cosine.training_step(_full(cosine, _data()))
    assert "loss_nmn" not in stats


def test_nmn_steps_leave_encoder_fixed_and_encoder_step_leaves_nmn_fixed():
    method = _method("nml.inner_steps=2")
    data = _data()
    enc0 = copy.deepcopy(method.encoder.state_dict())
    nmn0 = copy.deepcopy(method.nmn.state_dict())
    snapshots = {}
    enc_step = method.optimizers["encoder"].step

    def spy(*args, **kwargs):  # state just before the encoder update
        snapshots["enc"] = copy.deepcopy(method.encoder.state_dict())
        snapshots["nmn"] = copy.deepcopy(method.nmn.state_dict())
        return enc_step(*args, **kwargs)

    method.optimizers["encoder"].step = spy  # type: ignore[method-assign]
    method.training_step(_full(method, data))
    for k, v in enc0.items():  # the T_M NMN steps did not touch the encoder
        assert torch.equal(snapshots["enc"][k], v)
    assert any(not torch.equal(snapshots["nmn"][k], v) for k, v in nmn0.items())
    for k, v in snapshots["nmn"].items():  # the encoder step did not move the NMN
        assert torch.equal(method.nmn.state_dict()[k], v)
    assert any(not torch.equal(method.encoder.state_dict()[k], v) for k, v in enc0.items())
    assert all(p.grad is None for p in method.nmn.parameters())  # its grads were discarded


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["nmn", "encoder"])
def test_non_finite_loss_stops_before_any_step_and_keeps_last_good_state(bad, where):
    method = _method("nml.inner_steps=2")
    data = _data()
    method.training_step(_full(method, data))  # one good step, so optimizer states exist
    good_params = copy.deepcopy(method.state_dict())
    good_opt = copy.deepcopy(method.optimizer_state())
    real_loss = method.loss
    calls = {"n": 0}
    poison_at = 1 if where == "nmn" else 3  # 2 NMN losses, then the encoder loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real_loss(*args, **kwargs)
        return (loss * bad if calls["n"] == poison_at else loss), parts

    method.loss = poisoned  # type: ignore[method-assign]
    with pytest.raises(TrainingDiverged, match="not finite"):
        method.training_step(_full(method, data))
    state = method.state_dict()
    for k, v in good_params.items():
        if k.startswith("model.encoder."):
            assert torch.equal(state[k], v), k  # encoder never stepped on the bad loss
        if k.startswith("nmn.") and where == "nmn":
            assert torch.equal(state[k], v), k
    assert all(torch.isfinite(p).all() for p in method.parameters())
    enc_state = method.optimizers["encoder"].state_dict()["state"]
    for i, s in good_opt["encoder"]["state"].items():
        assert torch.equal(enc_state[i]["exp_avg"], s["exp_avg"])


def test_nan_features_diverge_with_clear_error():
    method = _method()
    data = _data()
    data.x[3, 0] = float("nan")
    before = copy.deepcopy(method.state_dict())
    with pytest.raises(TrainingDiverged, match="NML metric-network loss became nan"):
        method.training_step(_full(method, data))
    for k, v in before.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(method.state_dict()[k], v), k


def test_minibatch_block_layout():
    method = _method(*MINI)
    data = _data()
    anchors = torch.tensor([0, 5, 9, 33])
    batch = method.make_batch(data, anchors)
    assert isinstance(batch, NMLBatch)
    assert batch.anchor_ids.shape == (4,) and batch.candidate_ids.shape == (12,)
    assert torch.equal(batch.n_id[batch.anchor_ids], anchors)  # anchors are seeds
    assert batch.anchor_ids.max() < batch.num_seeds and batch.candidate_ids.max() < batch.num_seeds
    assert batch.x.shape == (batch.n_id.numel(), F_IN)
    within = _method(*MINI, "nml.negatives=within-batch").make_batch(data, anchors)
    assert torch.equal(within.candidate_ids, within.anchor_ids)


def test_minibatch_loss_with_all_nodes_as_block_equals_full_batch_loss():
    method = _method()
    torch.manual_seed(1)
    u, v = torch.randn(N, D), torch.randn(N, D)
    method.eval()
    full, _ = method.loss(u, v)
    blocks = [method.loss(u, v, ids, torch.arange(N))[0] * ids.numel()
              for ids in torch.arange(N).split(16)]
    assert torch.allclose(sum(blocks) / N, full, atol=1e-5)


def test_config_errors():
    with pytest.raises(ConfigError, match="one fan-out per GCN layer"):
        _method("nml.mode=minibatch", "nml.num_neighbors=[5]")
    with pytest.raises(ConfigError, match="proj_dim"):
        _method("model.proj_dim=16")
    with pytest.raises(ConfigError, match="include_positive"):
        _method("nml.mode=minibatch", "nml.include_positive=true")
    with pytest.raises(ConfigError, match="nml.tau"):
        _method("nml.tau=0")


def test_false_negative_diagnostic_detects_planted_similarity():
    method = _method("nml.metric=cosine", "nml.diagnostic_anchors=30",
                     "nml.diagnostic_candidates=25")
    data = _data()
    # embeddings that cluster by class: the cosine metric gives same-class pairs MORE weight
    z = torch.randn(N, D) * 0.1 + torch.nn.functional.one_hot(data.y, D).float()
    method.embed = lambda d: z  # type: ignore[method-assign]
    out = method.false_negative_diagnostic(data)
    assert out["anchors"] == 30 and out["candidates"] == 25
    assert out["mean_m_same_class"] > out["mean_m_other_class"]
    assert out["rocauc_neg_m"] < 0.1 and out["rocauc_neg_cosine"] < 0.1
    assert 0.3 < out["fraction_same_class"] < 0.7
    multi = Data(x=data.x, edge_index=data.edge_index, y=torch.zeros(N, 3))
    assert method.false_negative_diagnostic(multi) == {}


def test_alpha_scale_graph_uses_full_graph_size():
    method = _method(*MINI, "nml.alpha_scale=graph", "nml.c=0.2")
    assert method._alpha() == pytest.approx(0.2 * (N - 1))
    torch.manual_seed(2)
    u, v = torch.randn(N, D), torch.randn(N, D)
    ids, cands = torch.arange(8), torch.arange(8, 20)
    method.eval()  # RReLU in g is random in training mode
    with_graph, _ = method.loss(u, v, ids, cands)
    method.cfg.alpha_scale = "candidates"
    assert method._alpha() is None
    with_block, parts = method.loss(u, v, ids, cands)
    # same InfoNCE part, KL weighted by c*(N-1) instead of c*K
    assert torch.allclose(with_graph - with_block, 0.2 * ((N - 1) - 12) * parts["kl"], atol=1e-5)


def _planted_graph(n_per: int = 30, blocks: int = 3) -> Data:
    """Three planted communities (p_in 0.2, p_out 0.01) with class-signal features: a node's
    same-class candidates are the ones that look like it, i.e. the planted false negatives."""
    g = torch.Generator().manual_seed(0)
    n = n_per * blocks
    y = torch.arange(blocks).repeat_interleave(n_per)
    prob = torch.where(y[:, None] == y[None, :], 0.2, 0.01)
    row, col = torch.triu(torch.rand(n, n, generator=g) < prob, diagonal=1).nonzero().t()
    x = (torch.nn.functional.one_hot(y, blocks).float().repeat(1, 4)
         + 0.7 * torch.randn(n, 4 * blocks, generator=g))
    return Data(x=x, edge_index=torch.cat([torch.stack([row, col]), torch.stack([col, row])], 1),
                y=y, num_nodes=n)


@pytest.mark.parametrize("metric", ["nmn", "signed"])
def test_signed_metric_down_weights_planted_false_negatives_faithful_does_not(metric):
    data = _planted_graph()
    cfg = load_config(None, ["method=nml", "model.out_dim=16", "model.hidden_dim=16",
                             "model.activation=rrelu", "model.activate_last=false",
                             "model.proj_dim=0", "train.lr=0.01", "nml.nmn_lr=0.01",
                             f"nml.metric={metric}", "nml.inner_steps=3",
                             "nml.diagnostic_anchors=90", "nml.diagnostic_candidates=90"])
    torch.manual_seed(0)
    method = build_method(cfg, GraphInfo(num_nodes=90, num_features=12, num_classes=3))
    method.configure_optimizers()
    for epoch in range(1, 41):
        for batch in method.batches(data, epoch):
            method.training_step(batch)
    out = method.false_negative_diagnostic(data)
    assert out["rocauc_neg_cosine"] < 0.1  # the embeddings do put same-class nodes together
    if metric == "signed":  # learned beta < 0: the anchor-like (same-class) candidates weigh less
        assert out["metric_scale"] < -0.05
        assert out["mean_weight_same_class"] < 0.95 < 1.0 < out["mean_weight_other_class"]
        assert out["rocauc_neg_m"] > 0.9
    else:  # the faithful NMN ranks them first; it only flattens the row
        assert "metric_scale" not in out
        assert out["mean_weight_same_class"] > out["mean_weight_other_class"]
        assert out["rocauc_neg_m"] < 0.5


@pytest.mark.parametrize("grad_to_encoder", ["true", "false"])
def test_inner_steps_reuse_logits_with_the_same_numbers(grad_to_encoder, monkeypatch):
    """The T_M inner steps compute the InfoNCE logits of the fixed embeddings once (not in the
    encoder step, whose gradient flows through them): same losses and parameters as computing
    them in every call."""
    import distgcl.methods.nml as nml_module

    data, calls = _data(), []
    real = nml_module.nml_block_logits

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    runs = []
    for reuse in (True, False):
        method = _method(*MINI, "nml.inner_steps=3",
                         f"nml.metric_grad_to_encoder={grad_to_encoder}")
        if not reuse:  # every call computes its own logits, as before the cache
            method.loss = lambda *a, _loss=method.loss, **k: _loss(*a, **{**k, "logits": None})
        monkeypatch.setattr(nml_module, "nml_block_logits", counted)
        calls.clear()
        torch.manual_seed(5)
        stats = [method.training_step(b) for b in method.batches(data, 1)]
        runs.append((stats, [p.detach().clone() for p in method.parameters()], len(calls)))
    (s_a, p_a, n_a), (s_b, p_b, _) = runs
    assert n_a == len(s_a) == 3  # once per outer step (the epoch's three batches)
    for a, b in zip(s_a, s_b):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["loss_nmn"] == pytest.approx(b["loss_nmn"], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p_a, p_b))
