"""NML-GCL loss (distgcl.losses.nml_loss) and the Negative Metric Network (distgcl.nn.nmn)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distgcl.losses import info_nce, nml_direction_loss, nml_loss
from distgcl.nn.nmn import (MetricFactors, NegativeMetricNetwork, masked_cosine_log_softmax,
                            metric_log_probs, uniform_log_metric)

siamese = MetricFactors.of_siamese

N, D = 12, 6


def _views(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(N, D, generator=g, dtype=torch.float64)
    v = u + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return u, v


def _naive_cross_view_infonce(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric cross-view InfoNCE written out with loops: negatives are v_j, j != i."""
    def one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i in range(a.size(0)):
            pos = math.exp(float(F.cosine_similarity(a[i], b[i], dim=0)) / tau)
            neg = sum(math.exp(float(F.cosine_similarity(a[i], b[j], dim=0)) / tau)
                      for j in range(a.size(0)) if j != i)
            total += -math.log(pos / (pos + neg))
        return torch.tensor(total / a.size(0), dtype=torch.float64)
    return 0.5 * (one(u, v) + one(v, u))


def test_uniform_metric_equals_cross_view_infonce():
    u, v = _views()
    const = torch.ones(N, D, dtype=torch.float64)  # g(u) = g(v) = const => cos = 1 => m uniform
    loss, parts = nml_loss(u, v, siamese(const, const), tau=0.5, c=0.1)
    expected = _naive_cross_view_infonce(u, v, 0.5)
    assert torch.allclose(loss, expected, atol=1e-6), (loss.item(), expected.item())
    assert abs(parts["kl"].item()) < 1e-6
    assert torch.allclose(parts["info_nce"], expected, atol=1e-6)


def test_uniform_metric_direction_equals_info_nce_float32():
    u, v = (t.float() for t in _views(1))
    mask = torch.arange(N).unsqueeze(1) != torch.arange(N).unsqueeze(0)
    terms = nml_direction_loss(u, v, v, uniform_log_metric(mask), 0.4, 0.2, candidate_mask=mask)
    plain = info_nce(u, v, v, 0.4, candidate_mask=mask)
    assert torch.allclose(terms.loss, plain, atol=1e-6)
    assert terms.kl.abs().max() < 1e-6


def test_kl_positive_away_from_uniform_and_weights_match_candidate_weights():
    u, v = _views(2)
    mask = torch.arange(N).unsqueeze(1) != torch.arange(N).unsqueeze(0)
    log_m = masked_cosine_log_softmax(u * 3, v * torch.linspace(0.1, 3, D, dtype=u.dtype), mask)
    terms = nml_direction_loss(u, v, v, log_m, 0.5, 0.1, candidate_mask=mask)
    assert (terms.kl > 0).all()
    # the log-weight path equals info_nce with explicit weights w = n * m
    w = (N - 1) * log_m.exp()
    ref = info_nce(u, v, v, 0.5, candidate_mask=mask, candidate_weights=w)
    assert torch.allclose(terms.info_nce, ref, atol=1e-10)
    assert torch.allclose(terms.loss, ref + 0.1 * (N - 1) * terms.kl, atol=1e-10)


def test_loss_gradient_finite_and_reaches_encoder_and_nmn():
    torch.manual_seed(0)
    u, v = (t.float().requires_grad_() for t in _views(3))
    nmn = NegativeMetricNetwork(D)
    loss, _ = nml_loss(u, v, nmn(u, v), tau=0.5, c=0.1)
    loss.backward()
    for t in (u.grad, v.grad, *(p.grad for p in nmn.parameters())):
        assert t is not None and torch.isfinite(t).all()
    assert nmn.fc1.weight.grad.abs().sum() > 0


def test_loss_symmetric_in_views():
    u, v = _views(4)
    gu, gv = u.flip(1), v.flip(1)
    a, _ = nml_loss(u, v, siamese(gu, gv), tau=0.5, c=0.1)
    b, _ = nml_loss(v, u, siamese(gv, gu), tau=0.5, c=0.1)
    assert torch.allclose(a, b, atol=1e-12)


def test_minibatch_blocks_with_all_other_nodes_equal_full_batch():
    u, v = _views(5)
    gu, gv = torch.tanh(u @ torch.ones(D, D, dtype=u.dtype) * 0.3 + u), torch.sin(v)
    full, full_parts = nml_loss(u, v, siamese(gu, gv), tau=0.5, c=0.1)
    # blocks of B anchors, each with an explicit per-anchor block of the N-1 other nodes
    others = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, N)]) for i in range(N)])
    total = 0.0
    for ids in torch.arange(N).split(5):
        block, _ = nml_loss(u, v, siamese(gu, gv), tau=0.5, c=0.1, anchor_ids=ids,
                            candidate_ids=others[ids])
        total = total + block * ids.numel()
    assert torch.allclose(total / N, full, atol=1e-5)
    # shared block = all nodes (self masked) and the checkpointed chunks give the same loss
    shared, _ = nml_loss(u, v, siamese(gu, gv), 0.5, 0.1, anchor_ids=torch.arange(N),
                         candidate_ids=torch.arange(N))
    chunked, chunk_parts = nml_loss(u, v, siamese(gu, gv), 0.5, 0.1, chunk_size=5)
    assert torch.allclose(shared, full, atol=1e-5)
    assert torch.allclose(chunked, full, atol=1e-5)
    assert torch.allclose(chunk_parts["kl"], full_parts["kl"], atol=1e-5)


def test_chunked_gradient_equals_unchunked():
    u, v = (t.float() for t in _views(6))
    nmn = NegativeMetricNetwork(D)
    grads = []
    for chunk in (None, 4):
        nmn.zero_grad()
        uu, vv = u.clone().requires_grad_(), v.clone().requires_grad_()
        nmn.eval()  # deterministic RReLU
        loss, _ = nml_loss(uu, vv, nmn(uu, vv), 0.5, 0.1, chunk_size=chunk)
        loss.backward()
        grads.append(torch.cat([uu.grad.flatten(), nmn.fc1.weight.grad.flatten()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _official_semi_loss(z1, z2, g1, g2, tau, c):
    """NML-GCL's Encoder.semi_loss as in the official code (papers.md section 2.3)."""
    n = z1.size(0)
    f = lambda x: torch.exp(x / tau)  # noqa: E731
    between = f(F.normalize(z1) @ F.normalize(z2).t())
    m = torch.softmax(F.normalize(g1) @ F.normalize(g2).t(), dim=1)  # all N columns
    w = (n - 1) * m
    kl = F.kl_div(torch.log(m), torch.full_like(m, 1.0 / n), reduction="batchmean")
    return -torch.log(between.diag() / (between.diag() + (w * between).sum(1))) + c * (n - 1) * kl


def test_include_positive_reproduces_official_code():
    u, v = _views(7)
    gu, gv = torch.cos(u), torch.sin(v) + 1
    ours, _ = nml_loss(u, v, siamese(gu, gv), 0.8, 0.1, include_positive=True)
    ref = 0.5 * (_official_semi_loss(u, v, gu, gv, 0.8, 0.1)
                 + _official_semi_loss(v, u, gv, gu, 0.8, 0.1)).mean()
    assert torch.allclose(ours, ref, atol=1e-10)
    default, _ = nml_loss(u, v, siamese(gu, gv), 0.8, 0.1)
    assert not torch.allclose(default, ref, atol=1e-6)  # the documented difference is real


def test_nml_loss_shape_errors():
    u, v = _views()
    with pytest.raises(ValueError, match="same number of rows"):
        nml_loss(u, v[:-1], siamese(u, v), 0.5, 0.1)
    with pytest.raises(ValueError, match="one row per anchor"):
        nml_loss(u, v, siamese(u, v), 0.5, 0.1, anchor_ids=torch.arange(3),
                 candidate_ids=torch.zeros(4, 2, dtype=torch.long))


# ----------------------------------------------------------------------------- NMN

def test_nmn_shapes_normalization_and_init():
    torch.manual_seed(0)
    nmn = NegativeMetricNetwork(D)
    assert repr(nmn) == f"NegativeMetricNetwork({D}, hidden_dim={D})"
    assert (nmn.fc1.bias == 0).all() and (nmn.fc2.bias == 0).all()
    bound = math.sqrt(6 / (D + D))
    assert nmn.fc1.weight.abs().max() <= bound
    a, c = torch.randn(4, D), torch.randn(7, D)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[0, :3] = False
    nmn.eval()
    f = nmn(a, c)
    m = metric_log_probs(f.anchor_u, f.candidate_v, mask).exp()
    assert m.shape == (4, 7)
    assert torch.allclose(m.sum(1), torch.ones(4), atol=1e-6)
    assert (m[0, :3] == 0).all()
    # per-anchor (B, K, d) candidates equal the shared (K, d) block
    m3 = metric_log_probs(f.anchor_u, f.candidate_v.unsqueeze(0).expand(4, 7, D), mask).exp()
    assert torch.allclose(m, m3, atol=1e-6)
    # formula: softmax over valid j of cos(g(a_i), g(c_j))
    ga, gc = nmn._g(a), nmn._g(c)
    cos = F.normalize(ga, dim=1) @ F.normalize(gc, dim=1).t()
    assert torch.allclose(m[1], torch.softmax(cos[1], 0), atol=1e-6)


def test_nmn_fully_masked_row_and_cosine_variant():
    nmn = NegativeMetricNetwork(D, learnable=False)
    assert list(nmn.parameters()) == []
    a, c = torch.randn(2, D), torch.randn(3, D)
    mask = torch.tensor([[False, False, False], [True, True, False]])
    f = nmn(a, c)
    assert torch.equal(f.anchor_u, F.normalize(a, dim=1))  # no parameters: g is the identity
    log_m = metric_log_probs(f.anchor_u, f.candidate_v, mask)
    assert not torch.isnan(log_m).any()
    assert (log_m.exp()[0] == 0).all()
    with pytest.raises(ValueError, match="candidate_mask must have shape"):
        metric_log_probs(f.anchor_u, f.candidate_v, mask[:, :2])
    with pytest.raises(ValueError, match="NegativeMetricNetwork"):
        NegativeMetricNetwork(0)
