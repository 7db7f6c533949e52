import math

import pytest
import torch
import torch.nn.functional as F

from distgcl.losses import grace_block_loss, grace_loss, info_nce, sampled_grace_loss


def _reference_grace(h1: torch.Tensor, h2: torch.Tensor, tau: float) -> float:
    """GRACE's objective written with explicit loops over nodes (paper Eq. 1-2)."""
    u, v = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    n = u.size(0)

    def ell(a: torch.Tensor, b: torch.Tensor, i: int) -> float:
        pos = math.exp(float(a[i] @ b[i]) / tau)
        inter = sum(math.exp(float(a[i] @ b[k]) / tau) for k in range(n))
        intra = sum(math.exp(float(a[i] @ a[k]) / tau) for k in range(n) if k != i)
        return -math.log(pos / (inter + intra))

    return sum(ell(u, v, i) + ell(v, u, i) for i in range(n)) / (2 * n)


def test_grace_loss_matches_loop_reference() -> None:
    torch.manual_seed(0)
    h1, h2 = torch.randn(7, 4), torch.randn(7, 4)
    for tau in (0.2, 0.5, 1.0):
        assert grace_loss(h1, h2, tau).item() == pytest.approx(_reference_grace(h1, h2, tau), rel=1e-5)


@pytest.mark.parametrize("intra_view", [True, False])
def test_chunked_equals_full_loss_and_gradient(intra_view: bool) -> None:
    # the unchunked path shares N x N matrices between directions, the chunked one does not
    torch.manual_seed(1)
    h1 = torch.randn(23, 5, requires_grad=True)
    h2 = torch.randn(23, 5, requires_grad=True)
    full = grace_loss(h1, h2, 0.5, intra_view=intra_view)
    g_full = torch.autograd.grad(full, (h1, h2))
    chunked = grace_loss(h1, h2, 0.5, chunk_size=4, intra_view=intra_view)
    g_chunk = torch.autograd.grad(chunked, (h1, h2))
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for a, b in zip(g_full, g_chunk):
        assert torch.allclose(a, b, atol=1e-6)


def test_info_nce_masks_and_weights() -> None:
    torch.manual_seed(2)
    a, p, c = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, -1] = False
    masked = info_nce(a, p, c, 0.5, candidate_mask=mask)
    dropped = info_nce(a, p, c[:-1], 0.5)
    assert torch.allclose(masked, dropped, atol=1e-6)
    weights = torch.ones(3, 5)
    weights[:, -1] = 0.0
    assert torch.allclose(info_nce(a, p, c, 0.5, candidate_weights=weights), dropped, atol=1e-6)
    # per-anchor candidate blocks give the same numbers as a shared block
    per_anchor = c.unsqueeze(0).expand(3, 5, 4)
    assert torch.allclose(info_nce(a, p, per_anchor, 0.5), info_nce(a, p, c, 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        info_nce(a, p, c, 0.0)


def _reference_sampled(h1: torch.Tensor, h2: torch.Tensor, tau: float,
                       blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """GRACE's loss with explicit loops over a given candidate list per anchor block: the
    negatives of anchor i are the drawn candidates j != i of both views (with repeats)."""
    u, v = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    total, count = 0.0, 0
    for anchors, cands in blocks:
        for i in anchors.tolist():
            for a, b in ((u, v), (v, u)):
                pos = math.exp(float(a[i] @ b[i]) / tau)
                neg = sum(math.exp(float(a[i] @ b[j]) / tau) + math.exp(float(a[i] @ a[j]) / tau)
                          for j in cands.tolist() if j != i)
                total += -math.log(pos / (pos + neg))
            count += 1
    return total / (2 * count)


def test_sampled_loss_equals_loop_reference_on_its_drawn_candidates() -> None:
    torch.manual_seed(3)
    h1, h2 = torch.randn(50, 8, dtype=torch.float64), torch.randn(50, 8, dtype=torch.float64)
    a = sampled_grace_loss(h1, h2, 0.5, 16, torch.Generator().manual_seed(0), block_size=16)
    b = sampled_grace_loss(h1, h2, 0.5, 16, torch.Generator().manual_seed(0), block_size=16)
    assert a.item() == b.item()  # seeded
    # the sampling contract: block b takes the b-th draw of K ids (uniform, with replacement)
    g = torch.Generator().manual_seed(0)
    blocks = [(ids, torch.randint(0, 50, (16,), generator=g)) for ids in torch.arange(50).split(16)]
    assert a.item() == pytest.approx(_reference_sampled(h1, h2, 0.5, blocks), rel=1e-10)
    other = sampled_grace_loss(h1, h2, 0.5, 16, torch.Generator().manual_seed(1), block_size=16)
    assert other.item() != a.item()


def test_all_nodes_as_candidates_is_the_full_loss_and_sampled_k_is_close() -> None:
    torch.manual_seed(4)
    n = 60
    h1, h2 = torch.randn(n, 8, dtype=torch.float64), torch.randn(n, 8, dtype=torch.float64)
    full = grace_loss(h1, h2, 0.5).item()
    # the candidate block "all N nodes" (the sampled path's building block) is the full objective
    ids = torch.arange(n)
    block = 0.5 * (grace_block_loss(h1, h2, ids, ids, 0.5) + grace_block_loss(h2, h1, ids, ids, 0.5))
    assert block.mean().item() == pytest.approx(full, rel=1e-12)
    assert full == pytest.approx(_reference_grace(h1, h2, 0.5), rel=1e-10)
    # K = N draws with replacement: each anchor's negative sum is unbiased for the full one, so
    # the sampled loss is within 0.05 of the full objective (averaged over 20 draws: within 0.02;
    # it sits below it, log being concave)
    draws = [sampled_grace_loss(h1, h2, 0.5, n, torch.Generator().manual_seed(s),
                                block_size=n).item() for s in range(20)]
    assert all(abs(d - full) < 0.05 for d in draws)
    assert -0.02 < sum(draws) / 20 - full < 0.0
    # a small K is a different objective (fewer negatives): far below the full loss
    small = sampled_grace_loss(h1, h2, 0.5, 4, torch.Generator().manual_seed(0), block_size=n)
    assert full - small.item() > 1.0
