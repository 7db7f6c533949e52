"""NML-GCL loss (distgcl.losses.nml_loss) and the Negative Metric Network (distgcl.nn.nmn)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distgcl.losses import info_nce, nml_direction_loss, nml_loss
from distgcl.nn.nmn import (MetricFactors, NegativeMetricNetwork, SignedNegativeMetricNetwork,
                            build_metric_network, masked_cosine_log_softmax, metric_log_probs,
                            uniform_log_metric)

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
    # KL(Unif || m_i) written out: sum_j (1/n) log((1/n) / m_ij) over the n = N-1 candidates
    m = log_m.exp()
    kl = torch.tensor([sum((1 / (N - 1)) * math.log((1 / (N - 1)) / float(m[i, j]))
                           for j in range(N) if j != i) for i in range(N)], dtype=u.dtype)
    assert torch.allclose(terms.kl, kl, atol=1e-10)
    assert (kl > 1e-3).all()  # the planted metric is far from uniform
    # the log-weight path equals info_nce with explicit weights w = n * m
    w = (N - 1) * log_m.exp()
    ref = info_nce(u, v, v, 0.5, candidate_mask=mask, candidate_weights=w)
    assert torch.allclose(terms.info_nce, ref, atol=1e-10)
    assert torch.allclose(terms.loss, ref + 0.1 * (N - 1) * terms.kl, atol=1e-10)


def _reference_weighted_infonce(u, v, nmn, tau):
    """c = 0: the symmetric InfoNCE with explicit weights w = (N-1) softmax_j cos(g(u_i), g(v_j))
    over j != i, through info_nce's own weights argument (not nml_loss's log-weight path)."""
    mask = torch.arange(N).unsqueeze(1) != torch.arange(N).unsqueeze(0)
    gu, gv = F.normalize(nmn._g(u), dim=1), F.normalize(nmn._g(v), dim=1)
    w_uv, w_vu = ((N - 1) * torch.softmax((a @ b.t()).masked_fill(~mask, float("-inf")), dim=1)
                  for a, b in ((gu, gv), (gv, gu)))
    # masked pairs get weight 1, not 0: the mask removes them, and log(0) would give NaN grads
    w_uv, w_vu = w_uv.masked_fill(~mask, 1.0), w_vu.masked_fill(~mask, 1.0)
    return 0.5 * (info_nce(u, v, v, tau, candidate_mask=mask, candidate_weights=w_uv)
                  + info_nce(v, u, u, tau, candidate_mask=mask, candidate_weights=w_vu)).mean()


@pytest.mark.parametrize("c", [0.0, 0.1])
def test_loss_gradient_reaches_encoder_and_nmn(c):
    torch.manual_seed(0)
    u, v = (t.requires_grad_() for t in _views(3))
    nmn = NegativeMetricNetwork(D).double().eval()  # eval: deterministic RReLU
    loss, parts = nml_loss(u, v, nmn(u, v), tau=0.5, c=c)
    grads = torch.autograd.grad(loss, [u, v, *nmn.parameters()])
    for t in grads:
        assert torch.isfinite(t).all()
    # c = 0: no KL term, so whatever moves the metric comes from the weighted InfoNCE term; its
    # gradient is the one of the explicitly weighted InfoNCE, for the encoder and the NMN alike
    ref = _reference_weighted_infonce(u, v, nmn, 0.5)
    assert torch.allclose(parts["info_nce"], ref.detach(), atol=1e-10)
    if c == 0.0:
        assert torch.allclose(loss, ref, atol=1e-10)
        ref_grads = torch.autograd.grad(ref, [u, v, *nmn.parameters()])
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-10)
        assert nmn.fc1.weight.grad is None and grads[2].abs().max() > 1e-4  # it does move


@pytest.mark.parametrize("c", [0.0, 0.1])
def test_each_inner_step_lowers_the_inner_loss(c):
    """The T_M metric-network steps of the bi-level helper descend the loss they minimise."""
    from distgcl.methods.bilevel import bilevel_step

    torch.manual_seed(1)
    encoder = torch.nn.Linear(D, D)
    nmn = NegativeMetricNetwork(D).eval()
    x1, x2 = torch.randn(N, D), torch.randn(N, D)
    inner_losses = []

    def loss(uu, vv, detached):
        value, parts = nml_loss(uu, vv, nmn(uu, vv), 0.5, c)
        if detached:
            inner_losses.append(value.item())
        return value, parts

    u, v = encoder(x1), encoder(x2)
    stats = bilevel_step(u, v, loss, encoder_opt=torch.optim.Adam(encoder.parameters(), lr=1e-3),
                         metric_opt=torch.optim.Adam(nmn.parameters(), lr=1e-2), inner_steps=5,
                         encoder=encoder, metric=nmn, check_finite=lambda loss, what: None)
    assert len(inner_losses) == 5
    assert all(b < a for a, b in zip(inner_losses, inner_losses[1:])), inner_losses
    # and the encoder step sees the metric after its 5 steps: lower than before the first one
    after, _ = nml_loss(u.detach(), v.detach(), nmn(u.detach(), v.detach()), 0.5, c)
    assert after.item() < inner_losses[-1] < inner_losses[0]
    assert stats["loss_nmn"] == inner_losses[-1]


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


def test_signed_metric_factors_and_loss_paths():
    torch.manual_seed(0)
    net = SignedNegativeMetricNetwork(D, scale_init=-0.7).double().eval()
    assert repr(net) == f"SignedNegativeMetricNetwork({D}, hidden_dim={D}, scale_init=-0.7)"
    assert {n for n, _ in net.named_parameters()} == {"fc1.weight", "fc1.bias", "fc2.weight",
                                                       "fc2.bias", "scale"}
    u, v = _views(8)
    f = net(u, v)
    gu, gv = F.normalize(net._g(u), dim=1), F.normalize(net._g(v), dim=1)
    assert torch.allclose(f.anchor_u, -0.7 * gu) and torch.allclose(f.candidate_v, gv)
    assert torch.allclose(f.anchor_v, -0.7 * gv) and torch.allclose(f.candidate_u, gu)
    assert not f.siamese
    # m = softmax_j(beta cos(g(u_i), g(v_j))): beta < 0 ranks the most similar candidate last
    m = metric_log_probs(f.anchor_u, f.candidate_v).exp()
    assert torch.allclose(m, torch.softmax(-0.7 * gu @ gv.t(), dim=1), atol=1e-12)
    assert torch.equal(m.argmin(1), (gu @ gv.t()).argmax(1))
    # the full-batch square path (separate V->U matrix) = explicit per-anchor blocks
    full, _ = nml_loss(u, v, f, 0.5, 0.1)
    others = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, N)]) for i in range(N)])
    blocks, _ = nml_loss(u, v, f, 0.5, 0.1, anchor_ids=torch.arange(N), candidate_ids=others)
    assert torch.allclose(full, blocks, atol=1e-10)
    net.reset_parameters()
    assert net.scale.item() == -0.7
    assert isinstance(build_metric_network("signed", D), SignedNegativeMetricNetwork)
    assert build_metric_network("signed", D).scale.item() == 0.0  # starts uniform (InfoNCE)
    assert list(build_metric_network("cosine", D).parameters()) == []
    with pytest.raises(ValueError, match="unknown negative metric"):
        build_metric_network("bilinear", D)


def test_signed_metric_learns_the_sign_at_the_uniform_start():
    """At beta = 0 (uniform m, KL = 0) the loss gradient in beta is positive when the metric's
    similarity follows the embeddings': one descent step makes beta negative."""
    u, v = _views(9)
    net = SignedNegativeMetricNetwork(D).double().eval()
    with torch.no_grad():  # g = identity: metric similarity = embedding similarity
        net.fc1.weight.copy_(torch.eye(D))
        net.fc2.weight.copy_(torch.eye(D))
    u, v = u.abs(), v.abs()  # RReLU's identity region
    loss, parts = nml_loss(u, v, net(u, v), 0.5, 0.1)
    assert abs(parts["kl"].item()) < 1e-12
    (grad,) = torch.autograd.grad(loss, [net.scale])
    assert grad.item() > 1e-3


def _reference_block(u, v, metric, anchors, cands, tau, c, include_positive, alpha):
    """The block loss through the general masked path (cosine_logits + _nml_terms, autograd)."""
    from distgcl.losses import _nml_terms, _self_mask, _symmetric_sums, cosine_logits
    from distgcl.nn.nmn import metric_logits

    mask = None if include_positive else _self_mask(anchors, cands)
    f = metric.index(anchors, cands)
    terms = [_nml_terms(*cosine_logits(a[anchors], p[anchors], p[cands], tau),
                        metric_logits(fa, fc), c, mask, include_positive, alpha)
             for a, p, fa, fc in ((u, v, f.anchor_u, f.candidate_v),
                                  (v, u, f.anchor_v, f.candidate_u))]
    return _symmetric_sums(*terms)


@pytest.mark.parametrize("include_positive, alpha, per_anchor",
                         [(False, None, False), (True, None, False), (False, 3.0, False),
                          (False, None, True)])
def test_fused_block_terms_match_masked_autograd_path(include_positive, alpha, per_anchor):
    """_NMLRowTerms (fused softmaxes, hand-written backward) = the masked autograd path, values
    and gradients to encoder and NMN, with anchors among the candidates (and a duplicate)."""
    from distgcl.losses import _nml_block

    u, v = _views(3)
    nmn = SignedNegativeMetricNetwork(D, scale_init=1.5).double().eval()  # no RReLU noise
    anchors = torch.tensor([0, 3, 5, 7, 8])
    cands = torch.tensor([[1, 3, 3, 5, 9, 11, 0]] * 5) if per_anchor else \
        torch.tensor([1, 3, 3, 5, 9, 11, 0])  # 3 twice: anchor 3 loses two columns
    grads = []
    for fn in (_nml_block, _reference_block):
        uu, vv = u.clone().requires_grad_(), v.clone().requires_grad_()
        nmn.zero_grad()
        sums = fn(uu, vv, nmn(uu, vv), anchors, cands, 0.4, 0.2, include_positive, alpha)
        (sums[0] + 0.3 * sums[1] - 0.7 * sums[2]).backward()  # every output's gradient used
        grads.append([sums.detach(), uu.grad, vv.grad] + [p.grad.clone() for p in nmn.parameters()])
    for new, ref in zip(*grads):
        assert torch.allclose(new, ref, atol=1e-10, rtol=1e-9), (new - ref).abs().max()


def test_fused_block_terms_gradcheck_and_anchor_without_candidates():
    from distgcl.losses import _NMLRowTerms, _block_terms

    g = torch.Generator().manual_seed(1)
    pos, neg, met = (torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
                     for s in ((4,), (4, 5), (4, 5)))
    rows, cols = torch.tensor([0, 2, 2]), torch.tensor([1, 0, 4])
    n = torch.tensor([4.0, 5.0, 3.0, 5.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p, z, m: _NMLRowTerms.apply(p, z, m, rows, cols, n, torch.log(n)), (pos, neg, met))
    # anchor 1 has no valid candidate: the general path's zero terms, finite gradients
    rows1, cols1 = torch.tensor([1, 1, 1, 1, 1]), torch.arange(5)
    terms = _block_terms(pos, neg, met, (rows1, cols1), 0.1, False, None)
    assert terms.loss[1] == 0 and torch.isfinite(terms.loss).all()
    terms.loss.sum().backward()
    assert torch.isfinite(met.grad).all() and (met.grad[1] == 0).all()


def test_precomputed_logits_give_the_same_loss_and_only_on_the_block_path():
    from distgcl.losses import nml_block_logits

    u, v = _views(4)
    nmn = NegativeMetricNetwork(D).double().eval()
    anchors, cands = torch.tensor([0, 2, 4, 6]), torch.tensor([1, 2, 3, 9, 10])
    logits = nml_block_logits(u, v, anchors, cands, 0.5)
    a, _ = nml_loss(u, v, nmn(u, v), 0.5, 0.1, anchor_ids=anchors, candidate_ids=cands)
    b, _ = nml_loss(u, v, nmn(u, v), 0.5, 0.1, anchor_ids=anchors, candidate_ids=cands,
                    logits=logits)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="precomputed logits"):
        nml_loss(u, v, nmn(u, v), 0.5, 0.1, logits=logits)
