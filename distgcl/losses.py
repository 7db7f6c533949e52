r"""Contrastive losses as pure functions: one code path for full-batch, chunked and sampled modes.

Every loss here is a special case of one per-anchor objective over a *candidate block*:

.. math::
    \ell_i = -\log \frac{e^{s(a_i, p_i)/\tau}}
        {e^{s(a_i, p_i)/\tau} + \sum_{j \in \mathcal{C}_i} w_{ij}\, e^{s(a_i, c_j)/\tau}}

with :math:`s` the cosine similarity, :math:`a_i` an anchor, :math:`p_i` its positive,
:math:`\mathcal{C}_i` its valid negative candidates and :math:`w_{ij}` optional weights
(:math:`w \equiv 1` is InfoNCE; NML-GCL learns them). Full-batch GRACE takes every other node of
both views as candidates; mini-batch modes take a sampled block of K candidates. Because full and
mini-batch call the same :func:`info_nce`, "the candidate block is all other nodes" reproduces the
full-batch loss exactly.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from distgcl.nn.nmn import MetricFactors, metric_logits
from distgcl.typing import NodeIds, OptTensor


def cosine_logits(anchor: Tensor, positive: Tensor, candidates: Tensor,
                  tau: float) -> tuple[Tensor, Tensor]:
    """Positive logits ``s(a_i, p_i)/tau`` :math:`(B,)` and candidate logits :math:`(B, K)` for
    shared :math:`(K, d)` or per-anchor :math:`(B, K, d)` candidates (shared by every loss)."""
    a = F.normalize(anchor, dim=-1)
    pos = (a * F.normalize(positive, dim=-1)).sum(-1) / tau  # [B]
    c = F.normalize(candidates, dim=-1)
    if c.dim() == 2:
        return pos, a @ c.t() / tau  # [B, K]
    return pos, torch.einsum("bd,bkd->bk", a, c) / tau  # [B, K]


def info_nce(anchor: Tensor, positive: Tensor, candidates: Tensor, tau: float, *,
             candidate_mask: OptTensor = None, candidate_weights: OptTensor = None,
             candidate_log_weights: OptTensor = None) -> Tensor:
    r"""Per-anchor (weighted) InfoNCE over a block of negative candidates.

    Args:
        anchor (Tensor): anchor embeddings :math:`(B, d)` (normalized here).
        positive (Tensor): positives :math:`(B, d)`, row :math:`i` pairs with anchor :math:`i`.
        candidates (Tensor): negative candidates, shared by all anchors :math:`(K, d)` or per
            anchor :math:`(B, K, d)`.
        tau (float): temperature :math:`\tau > 0`.
        candidate_mask (Tensor, optional): :math:`(B, K)` bool, :obj:`False` removes a candidate
            (e.g. the anchor itself or its positive) (default: :obj:`None`, all valid).
        candidate_weights (Tensor, optional): :math:`(B, K)` non-negative weights
            :math:`w_{ij}` (default: :obj:`None`, all ones).
        candidate_log_weights (Tensor, optional): :math:`(B, K)` (or per-anchor :math:`(B, 1)`)
            :math:`\log w_{ij}` instead of ``candidate_weights`` (numerically stable when
            :math:`w` comes from a log-softmax, and one :math:`(B, K)` buffer fewer)
            (default: :obj:`None`).

    Returns:
        Tensor: the loss of every anchor, :math:`(B,)`.

    Space complexity: O(BK) (plus O(BKd) when candidates are per anchor).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (got {tau})")
    pos, neg = cosine_logits(anchor, positive, candidates, tau)
    if candidate_weights is not None and candidate_log_weights is not None:
        raise ValueError("pass candidate_weights or candidate_log_weights, not both")
    if candidate_weights is not None:
        # log w_ij folded into the logits: w = 0 becomes -inf, i.e. the candidate is dropped.
        candidate_log_weights = torch.log(candidate_weights.clamp_min(0))
    return info_nce_logits(pos, neg, candidate_mask=candidate_mask,
                           candidate_log_weights=candidate_log_weights)


def info_nce_logits(pos: Tensor, neg: Tensor, *, candidate_mask: OptTensor = None,
                    candidate_log_weights: OptTensor = None) -> Tensor:
    r"""The end of :func:`info_nce` on precomputed logits :math:`s/\tau` (shared by every loss).

    Shapes:
        - **input:** ``pos`` :math:`(B,)`, ``neg``, ``candidate_mask``,
          ``candidate_log_weights`` :math:`(B, K)`
        - **output:** :math:`(B,)`
    """
    row_log_weight = None
    if candidate_log_weights is not None:
        if candidate_log_weights.dim() == 2 and candidate_log_weights.size(1) == 1:
            row_log_weight = candidate_log_weights.squeeze(1)  # per-anchor: factor out of the sum
        else:
            neg = neg + candidate_log_weights
    if candidate_mask is not None:
        neg = neg.masked_fill(~candidate_mask, float("-inf"))
        if not bool(candidate_mask.any(dim=1).all()):  # a row without candidates: -inf row,
            if row_log_weight is not None:  # whose logsumexp grad is NaN
                neg = neg + row_log_weight.unsqueeze(1)
            logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
            return torch.logsumexp(logits, dim=1) - pos
    # log(e^pos + sum_j e^neg_j) without materializing the [B, 1 + K] concatenation;
    # a per-anchor (B, 1) log-weight c_i is factored out: log sum_j e^{neg_ij + c_i} = lse_i + c_i
    lse = torch.logsumexp(neg, dim=1)
    if row_log_weight is not None:
        lse = lse + row_log_weight
    return torch.logaddexp(pos, lse) - pos


def _self_mask(anchor_ids: NodeIds, candidate_ids: NodeIds) -> Tensor:
    """``[B, K]`` True where candidate j is not anchor i itself."""
    if candidate_ids.dim() == 1:
        return anchor_ids.unsqueeze(1) != candidate_ids.unsqueeze(0)
    return anchor_ids.unsqueeze(1) != candidate_ids


def grace_block_loss(h1: Tensor, h2: Tensor, anchor_ids: NodeIds, candidate_ids: NodeIds,
                     tau: float, intra_view: bool = True) -> Tensor:
    r"""GRACE's loss for a block of anchors against a block of candidate nodes (one direction).

    The anchors are ``h1[anchor_ids]`` with positives ``h2[anchor_ids]``; the negatives are
    ``h2[candidate_ids]`` (inter-view) and, with ``intra_view``, ``h1[candidate_ids]`` (intra-view),
    both excluding the anchor's own node. With ``candidate_ids`` = all nodes this is exactly one
    row block of GRACE's ``semi_loss``.

    Shapes:
        - **input:** ``h1, h2`` :math:`(N, d)`, ``anchor_ids`` :math:`(B,)`,
          ``candidate_ids`` :math:`(K,)` or :math:`(B, K)`
        - **output:** per-anchor loss :math:`(B,)`
    """
    anchor, positive = h1[anchor_ids], h2[anchor_ids]
    mask = _self_mask(anchor_ids, candidate_ids)
    if intra_view:
        candidates = torch.cat([h2[candidate_ids], h1[candidate_ids]], dim=-2)  # [.., 2K, d]
        mask = torch.cat([mask, mask], dim=-1)
    else:
        candidates = h2[candidate_ids]
    return info_nce(anchor, positive, candidates, tau, candidate_mask=mask)


def grace_loss(h1: Tensor, h2: Tensor, tau: float, *, chunk_size: int | None = None,
               intra_view: bool = True, anchor_ids: OptTensor = None,
               normalizer: int | None = None) -> Tensor:
    r"""Full-batch GRACE objective (Zhu et al., 2020), symmetric in the two views.

    .. math::
        \mathcal{J} = \frac{1}{2N}\sum_{i=1}^{N}\left[\ell(u_i, v_i) + \ell(v_i, u_i)\right],\quad
        \ell(u_i, v_i) = -\log\frac{e^{s(u_i,v_i)/\tau}}{\sum_{k} e^{s(u_i,v_k)/\tau}
        + \sum_{k\neq i} e^{s(u_i,u_k)/\tau}}

    Args:
        h1, h2 (Tensor): projected embeddings of the two views :math:`(N, d)`.
        tau (float): temperature.
        chunk_size (int, optional): anchors per chunk. Each chunk's :math:`(B, 2N)` similarity
            block is recomputed in backward (activation checkpointing), so peak memory is
            O(BN) instead of O(N^2) at about 1.3x the compute (default: :obj:`None`, one chunk).
        intra_view (bool, optional): include intra-view negatives (default: :obj:`True`).
        anchor_ids (Tensor, optional): only these anchors' terms (their rows of the objective,
            against all N candidates): a data-parallel rank's share (default: all nodes).
        normalizer (int, optional): divide the sum of the anchors' terms by
            :math:`2\cdot\text{normalizer}` instead of :math:`2|A|`; with the global anchor
            count the ranks' losses add up to the single-process objective (default: |A|).

    Returns:
        Tensor: scalar loss.
    """
    n = h1.size(0)
    if anchor_ids is None and (chunk_size is None or chunk_size >= n):
        loss = _grace_full_square(h1, h2, tau, intra_view)
        return loss if normalizer is None else loss * (n / normalizer)
    all_ids = torch.arange(n, device=h1.device)
    anchors = all_ids if anchor_ids is None else anchor_ids
    step = chunk_size or max(anchors.numel(), 1)
    total = h1.new_zeros(())
    for start in range(0, anchors.numel(), step):
        ids = anchors[start:start + step]
        if chunk_size:
            block = checkpoint(_symmetric_block_sum, h1, h2, ids, all_ids, tau, intra_view,
                               use_reentrant=False)
        else:
            block = _symmetric_block_sum(h1, h2, ids, all_ids, tau, intra_view)
        total = total + block
    return total / (2 * (normalizer if normalizer is not None else max(anchors.numel(), 1)))


def _grace_full_square(h1: Tensor, h2: Tensor, tau: float, intra_view: bool) -> Tensor:
    """Unchunked :func:`grace_loss` from three N x N matrices instead of four.

    The V->U inter-view logits are the transpose of the U->V ones, so one matrix serves both
    directions (row and column log-sum-exps), and the self-pairs of the intra-view matrices are
    their diagonals (no N x N mask). Same value as the per-anchor :func:`grace_block_loss` path,
    about 25% fewer FLOPs and fewer N x N buffers (1.5-1.6x faster on CPU, bench/grace_loss.py).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (got {tau})")
    # 1/sqrt(tau) folded into the (N, d) factors: saves an N x N division pass per matrix,
    # forward and backward (these N x N passes are memory-bound and dominate the epoch)
    scale = tau ** -0.5
    z1, z2 = F.normalize(h1, dim=1) * scale, F.normalize(h2, dim=1) * scale
    between = z1 @ z2.t()  # [N, N] s(u_i, v_j)/tau
    pos = between.diagonal()
    # the between-view sums run over all k, so the denominators already hold e^{pos}
    total = []
    for z, between_lse in ((z1, torch.logsumexp(between, dim=1)),
                           (z2, torch.logsumexp(between, dim=0))):
        if intra_view:
            refl = z @ z.t()  # [N, N] intra-view logits s/tau
            refl.diagonal().fill_(float("-inf"))  # an anchor is not its own negative
            between_lse = torch.logaddexp(between_lse, torch.logsumexp(refl, dim=1))
        total.append((between_lse - pos).mean())
    return 0.5 * (total[0] + total[1])


def _symmetric_block_sum(h1: Tensor, h2: Tensor, ids: Tensor, candidates: Tensor, tau: float,
                         intra_view: bool) -> Tensor:
    return (grace_block_loss(h1, h2, ids, candidates, tau, intra_view).sum()
            + grace_block_loss(h2, h1, ids, candidates, tau, intra_view).sum())


def sampled_grace_loss(h1: Tensor, h2: Tensor, tau: float, num_negatives: int,
                       generator: torch.Generator | None = None, *, anchor_ids: OptTensor = None,
                       block_size: int = 1024, intra_view: bool = True,
                       normalizer: int | None = None) -> Tensor:
    r"""GRACE with K sampled negatives per anchor, for graphs where :math:`N \times N` does not fit.

    Anchors are processed in blocks of ``block_size``; each block shares ``num_negatives``
    candidate nodes drawn uniformly (with replacement) from all N nodes, used from both views
    (so 2K negatives per anchor when ``intra_view``); an anchor's own node is masked out.
    Space complexity: O(block_size * K) per block.

    ``normalizer`` (default: the number of anchors) divides the anchors' summed terms, as in
    :func:`grace_loss`. Candidates are drawn on ``generator``'s device.

    Returns:
        Tensor: scalar loss, the mean over anchors and both directions.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 (got {num_negatives})")
    n = h1.size(0)
    if anchor_ids is None:
        anchor_ids = torch.arange(n, device=h1.device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    total = h1.new_zeros(())
    for start in range(0, anchor_ids.numel(), block_size):
        ids = anchor_ids[start:start + block_size]
        cand = torch.randint(0, n, (num_negatives,), generator=generator,
                             device=gen_device).to(h1.device)
        total = total + _symmetric_block_sum(h1, h2, ids, cand, tau, intra_view)
    count = normalizer if normalizer is not None else max(anchor_ids.numel(), 1)
    return total / (2 * count)



# ----------------------------------------------------------------------------- NML-GCL

class NMLTerms(NamedTuple):
    """Per-anchor parts of one direction of the NML loss, each :math:`(B,)`."""

    loss: Tensor
    """:math:`\\ell_i + \\alpha_i\\,\\mathrm{KL}_i`."""
    info_nce: Tensor
    """The weighted InfoNCE :math:`\\ell_i`."""
    kl: Tensor
    """:math:`\\mathrm{KL}(\\mathrm{Unif}(\\mathcal{C}_i) \\,\\|\\, m_{i\\cdot})`."""


def nml_direction_loss(anchor: Tensor, positive: Tensor, candidates: Tensor, log_m: Tensor,
                       tau: float, c: float, *, candidate_mask: OptTensor = None,
                       count_positive: bool = False, alpha: float | None = None) -> NMLTerms:
    r"""One direction of the NML-GCL loss for a block of anchors against a candidate block.

    .. math::
        \ell_i = -\log \frac{e^{s(a_i, p_i)/\tau}}
            {e^{s(a_i, p_i)/\tau} + \sum_{j \in \mathcal{C}_i} n_i\, m_{ij}\, e^{s(a_i, c_j)/\tau}},
        \qquad
        \mathcal{L}_i = \ell_i + \alpha_i\, \mathrm{KL}\!\left(\mathrm{Unif}(\mathcal{C}_i)
            \,\|\, m_{i\cdot}\right),\quad \alpha_i = c\, n_i,

    with :math:`n_i = |\mathcal{C}_i|` the number of valid candidates and :math:`m` the negative
    metric (rows sum to one over :math:`\mathcal{C}_i`). A uniform :math:`m_{ij} = 1/n_i` gives
    :math:`w \equiv 1` and :math:`\mathrm{KL} = 0`: plain InfoNCE. The weighted InfoNCE is
    :func:`info_nce_logits` (the common end of :func:`info_nce`) with ``candidate_log_weights``
    :math:`= \log n_i + \log m_{ij}`.

    Args:
        anchor (Tensor): :math:`(B, d)`.
        positive (Tensor): :math:`(B, d)`.
        candidates (Tensor): :math:`(K, d)` shared or :math:`(B, K, d)` per anchor.
        log_m (Tensor): :math:`\log m_{ij}` :math:`(B, K)` (or the unnormalized metric
            logits, e.g. :math:`\cos(g(a_i), g(c_j))`: the softmax over the valid candidates is
            taken here; entries of invalid candidates are ignored).
        tau (float): InfoNCE temperature.
        c (float): regularization coefficient, :math:`\alpha_i = c\,n_i`.
        candidate_mask (Tensor, optional): :math:`(B, K)` bool valid candidates
            (default: :obj:`None`, all :math:`K` valid).
        count_positive (bool, optional): the official code's layout, where the candidate block
            contains the anchor's own positive (:math:`N` columns): weights and :math:`\alpha` are
            then scaled by :math:`n_i - 1` instead of :math:`n_i` (default: :obj:`False`).
        alpha (float, optional): a fixed :math:`\alpha` instead of :math:`c\,n_i`
            (default: :obj:`None`).

    Returns:
        NMLTerms: per-anchor total, weighted InfoNCE and KL, each :math:`(B,)`.

    Space complexity: O(BK).
    """
    pos, neg = cosine_logits(anchor, positive, candidates, tau)
    return _nml_terms(pos, neg, log_m, c, candidate_mask, count_positive, alpha)


def _nml_terms(pos: Tensor, neg: Tensor, metric: Tensor, c: float, candidate_mask: OptTensor,
               count_positive: bool, alpha: float | None) -> NMLTerms:
    """NML terms from InfoNCE logits ``pos`` (B,), ``neg`` (B, K) and metric logits (B, K).

    ``metric`` is any row-shifted version of :math:`\\log m` (the NMN cosines, or ``log_m``
    itself): :math:`\\log m_{ij} = \\mathrm{metric}_{ij} - \\mathrm{LSE}_j(\\mathrm{metric}_{ij})`.
    Anchors without any valid candidate get loss 0.
    """
    b, k = metric.shape
    if candidate_mask is None:
        n = metric.new_full((b,), float(k))
        return _nml_terms_masked(pos, neg, metric, metric.sum(dim=1), n, c, count_positive, alpha)
    n = candidate_mask.sum(dim=1).to(metric.dtype)  # [B]
    keep = n > 0
    if not bool(keep.all()):  # compute the anchors that have candidates, zeros for the rest
        sub = _nml_terms(pos[keep], neg[keep], metric[keep], c, candidate_mask[keep],
                         count_positive, alpha)
        zeros = pos.new_zeros(b)
        return NMLTerms(*(zeros.index_put((keep,), t) for t in sub))
    metric_sum = metric.masked_fill(~candidate_mask, 0.0).sum(dim=1)  # [B]
    metric = metric.masked_fill(~candidate_mask, float("-inf"))  # [B, K]
    return _nml_terms_masked(pos, neg, metric, metric_sum, n, c, count_positive, alpha)


def _nml_terms_masked(pos: Tensor, neg: Tensor, metric: Tensor, metric_sum: Tensor, n: Tensor,
                      c: float, count_positive: bool, alpha: float | None) -> NMLTerms:
    """Core of the NML terms; ``metric`` is -inf on invalid candidates, ``metric_sum`` its sum
    over the valid ones, ``n`` their number (all (B,) but metric (B, K)).

    With :math:`\\log m_{ij} = \\mathrm{metric}_{ij} - L_i`, :math:`L_i = \\mathrm{LSE}_j
    \\mathrm{metric}_{ij}`, the weighted negatives are
    :math:`\\sum_j w_{ij} e^{s_{ij}/\\tau} = \\sum_j e^{s_{ij}/\\tau + \\mathrm{metric}_{ij}}
    \\cdot n_i e^{-L_i}`: one (B, K) sum and a per-row log-weight, so :func:`info_nce_logits` gets
    ``neg + metric`` and the (B, 1) log-weight :math:`\\log n_i - L_i`, and
    :math:`\\mathrm{KL}_i = -\\log n_i - \\overline{\\mathrm{metric}}_i + L_i` needs no (B, K) pass.
    """
    scale = (n - 1).clamp_min(0) if count_positive else n  # [B]
    lse_m = torch.logsumexp(metric, dim=1)  # [B]
    z = neg + metric  # [B, K], -inf on invalid candidates
    ce = info_nce_logits(pos, z, candidate_log_weights=(torch.log(scale) - lse_m).unsqueeze(1))
    kl = -torch.log(n) - metric_sum / n + lse_m  # KL(Unif || m_i), [B]
    a = scale * c if alpha is None else torch.full_like(scale, alpha)
    return NMLTerms(ce + a * kl, ce, kl)


def _symmetric_sums(uv: NMLTerms, vu: NMLTerms) -> Tensor:
    """``[3]``: sums over anchors of the symmetric total, InfoNCE part and KL part."""
    return torch.stack([(0.5 * (uv.loss + vu.loss)).sum(),
                        (0.5 * (uv.info_nce + vu.info_nce)).sum(), (0.5 * (uv.kl + vu.kl)).sum()])


def _nml_block(u: Tensor, v: Tensor, metric: MetricFactors, anchor_ids: NodeIds,
               candidate_ids: NodeIds, tau: float, c: float, include_positive: bool,
               alpha: float | None, logits: "BlockLogits | None" = None) -> Tensor:
    """Sum over a block of anchors of the symmetric per-anchor NML loss, plus the parts' sums
    (:class:`_NMLRowTerms` per direction; ``logits``: precomputed :func:`nml_block_logits`)."""
    if logits is None:
        logits = nml_block_logits(u, v, anchor_ids, candidate_ids, tau)
    invalid = None if include_positive else _self_pairs(anchor_ids, candidate_ids)
    f = metric.index(anchor_ids, candidate_ids)
    (uv, vu) = (_block_terms(pos, neg, metric_logits(fa, fc), invalid, c, include_positive,
                             alpha)
                for (pos, neg), fa, fc in ((logits.uv, f.anchor_u, f.candidate_v),  # U->V
                                           (logits.vu, f.anchor_v, f.candidate_u)))  # V->U
    return _symmetric_sums(uv, vu)


class BlockLogits(NamedTuple):
    r"""The InfoNCE logits of a mini-batch block, both directions: ``(pos, neg)`` with
    ``pos`` :math:`(B,)` = :math:`s(a_i, p_i)/\tau` and ``neg`` :math:`(B, K)` =
    :math:`s(a_i, c_j)/\tau` (:func:`nml_block_logits`)."""

    uv: tuple[Tensor, Tensor]
    vu: tuple[Tensor, Tensor]


def nml_block_logits(u: Tensor, v: Tensor, anchor_ids: NodeIds, candidate_ids: NodeIds,
                     tau: float) -> BlockLogits:
    r"""InfoNCE logits of the NML block loss, U->V (anchors ``u[anchor_ids]``, positives and
    candidates from ``v``) and V->U. They depend on the embeddings only, not on the NMN: the
    :math:`T_M` inner steps (embeddings fixed) compute them once (:meth:`NML.bilevel_step`).

    :math:`1/\tau` is folded into the :math:`(B, d)` anchor factor instead of dividing the
    :math:`(B, K)` product (one :math:`B \times K` pass fewer, forward and backward; equal up to
    float rounding).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (got {tau})")
    out = []
    for a, p in ((u, v), (v, u)):
        anchor = F.normalize(a[anchor_ids], dim=-1)
        cand = F.normalize(p[candidate_ids], dim=-1)
        pos = (anchor * F.normalize(p[anchor_ids], dim=-1)).sum(-1) / tau  # [B]
        scaled = anchor / tau
        neg = scaled @ cand.t() if cand.dim() == 2 else torch.einsum("bd,bkd->bk", scaled, cand)
        out.append((pos, neg))
    return BlockLogits(*out)


def _self_pairs(anchor_ids: NodeIds, candidate_ids: NodeIds) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of the block entries whose candidate is the anchor itself (few: at most
    one per anchor for distinct candidates), instead of a dense ``[B, K]`` mask."""
    pairs = (~_self_mask(anchor_ids, candidate_ids)).nonzero()
    return pairs[:, 0], pairs[:, 1]


def _block_terms(pos: Tensor, neg: Tensor, metric: Tensor,
                 invalid: tuple[Tensor, Tensor] | None, c: float, count_positive: bool,
                 alpha: float | None) -> NMLTerms:
    """:func:`_nml_terms` for a block whose invalid candidates are the few ``invalid`` entries,
    through the fused :class:`_NMLRowTerms` (same values up to float rounding)."""
    b, k = metric.shape
    n = metric.new_full((b,), float(k))
    rows, cols = invalid if invalid is not None else (pos.new_zeros(0, dtype=torch.long),) * 2
    if rows.numel():
        n = n - torch.bincount(rows, minlength=b).to(n.dtype)
        if not bool((n > 0).all()):  # an anchor without candidates: the general path's zeros
            mask = torch.ones(b, k, dtype=torch.bool, device=metric.device)
            mask[rows, cols] = False
            return _nml_terms(pos, neg, metric, c, mask, count_positive, alpha)
    scale = (n - 1).clamp_min(0) if count_positive else n  # [B]
    ce, kl = _NMLRowTerms.apply(pos, neg, metric, rows, cols, n, torch.log(scale))
    a = scale * c if alpha is None else torch.full_like(scale, alpha)
    return NMLTerms(ce + a * kl, ce, kl)


def _lse_from_softmax(x: Tensor, p: Tensor) -> Tensor:
    r"""Row-wise :math:`\mathrm{LSE}_j x_{ij}` from ``p = softmax(x)``: the row maximum of
    :math:`p` is :math:`e^{0}/\sum_j e^{x_{ij} - M_i}`, so :math:`\mathrm{LSE}_i = M_i - \log
    \max_j p_{ij}` (two max passes instead of torch.logsumexp's subtract, exp and sum;
    :math:`\max_j p_{ij} \ge 1/K`, no underflow)."""
    return x.amax(dim=1) - torch.log(p.amax(dim=1))


class _NMLRowTerms(torch.autograd.Function):
    r"""Per-anchor weighted InfoNCE and KL of one NML direction, fused (forward and backward).

    With :math:`\mathcal{C}_i` the valid candidates (all but the ``invalid`` entries),
    :math:`p^m = \mathrm{softmax}_{\mathcal{C}_i}(\mathrm{metric})`,
    :math:`p^z = \mathrm{softmax}_{\mathcal{C}_i}(\mathrm{neg} + \mathrm{metric})`,
    :math:`R_i = \mathrm{LSE}(\mathrm{neg} + \mathrm{metric}) + \log s_i -
    \mathrm{LSE}(\mathrm{metric})`:

    .. math::
        \mathrm{ce}_i = \log(e^{\mathrm{pos}_i} + e^{R_i}) - \mathrm{pos}_i, \qquad
        \mathrm{kl}_i = -\log n_i - \tfrac{1}{n_i}\textstyle\sum_{j \in \mathcal{C}_i}
        \mathrm{metric}_{ij} + \mathrm{LSE}(\mathrm{metric}),

    and with :math:`q_i = \sigma(R_i - \mathrm{pos}_i)`, :math:`a_i = \bar g^{ce}_i q_i`:
    :math:`\partial/\partial\mathrm{pos} = -a`, :math:`\partial/\partial\mathrm{neg} =
    a\,p^z`, :math:`\partial/\partial\mathrm{metric} = a\,p^z + (\bar g^{kl} - a)\,p^m -
    \bar g^{kl}/n` (0 on invalid entries).

    Why our own function: autograd through masked_fill + logsumexp + logaddexp keeps about
    twenty :math:`B \times K` passes per direction (masks, exps, their backward); here the
    exponentials are two fused softmaxes, the mask is a handful of scattered entries, and the
    backward is three passes. Shapes: ``pos``, ``n``, ``log_scale`` :math:`(B,)`; ``neg``,
    ``metric`` :math:`(B, K)`; ``rows, cols`` the invalid entries; out: two :math:`(B,)`.
    Every row needs a valid candidate (:func:`_block_terms` checks).
    """

    @staticmethod
    def forward(ctx: Any, pos: Tensor, neg: Tensor, metric: Tensor, rows: Tensor, cols: Tensor,
                n: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
        m = metric.clone()
        metric_sum = metric.sum(dim=1)
        if rows.numel():
            m[rows, cols] = float("-inf")
            metric_sum = metric_sum.index_add(0, rows, metric[rows, cols], alpha=-1)
        z = neg + m  # [B, K], -inf on invalid entries
        pm, pz = torch.softmax(m, dim=1), torch.softmax(z, dim=1)
        lse_m = _lse_from_softmax(m, pm)
        shift = _lse_from_softmax(z, pz) + log_scale - lse_m - pos  # R - pos
        ce = F.softplus(shift)  # log(e^pos + e^R) - pos
        kl = -torch.log(n) - metric_sum / n + lse_m
        ctx.save_for_backward(pz, pm, shift, n, rows, cols)
        return ce, kl

    @staticmethod
    def backward(ctx: Any, g_ce: Tensor | None, g_kl: Tensor | None
                 ) -> tuple[Tensor | None, ...]:
        pz, pm, shift, n, rows, cols = ctx.saved_tensors
        zero = shift.new_zeros(shift.shape)
        g_ce = zero if g_ce is None else g_ce
        g_kl = zero if g_kl is None else g_kl
        a = g_ce * torch.sigmoid(shift)  # [B]
        need_pos, need_neg, need_metric = ctx.needs_input_grad[:3]
        g_neg = pz * a.unsqueeze(1) if (need_neg or need_metric) else None
        g_metric = None
        if need_metric:
            g_metric = torch.addcmul(g_neg, pm, (g_kl - a).unsqueeze(1))
            g_metric.sub_((g_kl / n).unsqueeze(1))
            if rows.numel():
                g_metric[rows, cols] = 0.0
        return (-a if need_pos else None, g_neg if need_neg else None, g_metric,
                None, None, None, None)


def _nml_full_square(u: Tensor, v: Tensor, metric: MetricFactors, tau: float, c: float,
                     include_positive: bool, alpha: float | None) -> Tensor:
    """Full batch: the V->U similarity matrix is the transpose of the U->V one (and, for a
    Siamese metric, so is the metric matrix), so each N x N matrix is computed once, and the
    self-mask is the diagonal (no N x N mask).

    Space complexity: O(N^2) (two N x N matrices plus one per direction and their grads)."""
    n = u.size(0)
    sim = F.normalize(u, dim=1) @ F.normalize(v, dim=1).t() / tau  # [N, N] s(u_i, v_j)/tau
    pos = sim.diagonal().clone()  # [N] (a copy, so autograd does not keep all of sim alive)
    uv = metric.anchor_u @ metric.candidate_v.t()  # [N, N] metric logits U->V
    vu = uv.t() if metric.siamese else metric.anchor_v @ metric.candidate_u.t()
    if include_positive:
        count, uv_sum, vu_sum = float(n), uv.sum(1), vu.sum(1)
    else:
        count = float(n - 1)
        uv_sum, vu_sum = uv.sum(1) - uv.diagonal(), vu.sum(1) - vu.diagonal()
        uv.diagonal().fill_(float("-inf"))  # the self pair is not a candidate (in place: for a
        if not metric.siamese:              # Siamese metric vu is uv's transpose and sees it too)
            vu.diagonal().fill_(float("-inf"))
    counts = u.new_full((n,), count)
    terms_uv = _nml_terms_masked(pos, sim, uv, uv_sum, counts, c, include_positive, alpha)
    terms_vu = _nml_terms_masked(pos, sim.t(), vu, vu_sum, counts, c, include_positive, alpha)
    return _symmetric_sums(terms_uv, terms_vu)


def nml_loss(u: Tensor, v: Tensor, metric: MetricFactors, tau: float, c: float, *,
             anchor_ids: OptTensor = None, candidate_ids: OptTensor = None,
             include_positive: bool = False, alpha: float | None = None,
             chunk_size: int | None = None, normalizer: int | None = None,
             logits: BlockLogits | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The symmetric NML-GCL objective (Eq. 7 of the paper), one code path for every mode.

    .. math::
        \mathcal{L} = \frac{1}{|A|}\sum_{i \in A} \frac{1}{2}\left[
            \mathcal{L}_i^{UV} + \mathcal{L}_i^{VU}\right],

    where :math:`\mathcal{L}_i^{UV}` is :func:`nml_direction_loss` with anchor :math:`u_i`,
    positive :math:`v_i`, candidates :math:`v_j` and metric
    :math:`m^{UV}_{ij} = \mathrm{softmax}_j \langle a^U_i, c^V_j\rangle` (the NMN's
    :class:`~distgcl.nn.nmn.MetricFactors`; :math:`\cos(g(u_i), g(v_j))` for the Siamese NMN),
    and symmetrically for :math:`VU`. Only inter-view negatives are used (as the official code).

    * **Full batch** (the paper): ``anchor_ids = candidate_ids = None`` (all N rows); the
      candidates of :math:`i` are all :math:`j \ne i`, :math:`n_i = N-1`, :math:`\alpha = c(N-1)`.
    * **Mini-batch**: ``anchor_ids`` :math:`(B,)` and a candidate block ``candidate_ids``
      :math:`(K,)` (shared) or :math:`(B, K)` (per anchor), rows of ``u``/``v`` (the local ids of
      a sampled subgraph); a candidate equal to its anchor is masked out.

    **Difference to the official code** (reproduced by ``include_positive=True``): there the
    softmax and the weighted sum run over all N columns including :math:`j = i` (the positive
    also enters the denominator with weight :math:`w_{ii}`), with :math:`w = (N-1)m` and
    :math:`\alpha = c(N-1)`, and the KL is against the uniform distribution over N columns.
    The default follows the issue's definition: the positive is not a candidate.

    Args:
        u, v (Tensor): embeddings of the two views :math:`(N, d)` (rows = nodes or local ids).
        metric (MetricFactors): the same rows mapped by the metric network, ``nmn(u, v)``
            (``MetricFactors.of_siamese(u, v)`` for the plain-cosine metric).
        tau (float): temperature of the InfoNCE part.
        c (float): :math:`\alpha = c \cdot n_i`.
        anchor_ids (Tensor, optional): anchor rows (default: all rows).
        candidate_ids (Tensor, optional): candidate rows :math:`(K,)` or :math:`(B, K)`
            (default: all rows).
        include_positive (bool, optional): the official code's candidate layout (see above);
            no candidate is masked (default: :obj:`False`).
        alpha (float, optional): fixed :math:`\alpha` instead of :math:`c\,n_i`
            (default: :obj:`None`).
        chunk_size (int, optional): anchors per chunk; each chunk's :math:`(B_c, K)` blocks are
            recomputed in backward (activation checkpointing), so memory is O(B_c K) instead of
            O(BK), e.g. O(N) instead of O(N^2) in full batch (default: :obj:`None`, one block).
        normalizer (int, optional): divide the anchors' summed terms by this instead of the
            number of anchors: the global anchor count of a data-parallel step, so the ranks'
            losses add up (default: :obj:`None`).
        logits (BlockLogits, optional): :func:`nml_block_logits` of these ``u, v``, anchors,
            candidates and ``tau``, computed earlier: the inner steps of the bi-level schedule
            reuse them (the embeddings are fixed there). Mini-batch, unchunked only
            (default: :obj:`None`, computed here).

    Returns:
        (Tensor, dict): the scalar loss and detached means ``info_nce``, ``kl`` of the parts.

    Space complexity: O(BK) for B anchors and K candidates (O(N^2) in full batch, unchunked).
    """
    n = u.size(0)
    if u.shape != v.shape or any(f.size(0) != n for f in metric):
        raise ValueError("u, v and the metric factors must have the same number of rows and "
                         "u, v the same shape")
    all_ids = torch.arange(n, device=u.device)
    anchors = all_ids if anchor_ids is None else anchor_ids
    cands = all_ids if candidate_ids is None else candidate_ids
    if cands.dim() == 2 and cands.size(0) != anchors.numel():
        raise ValueError("per-anchor candidate_ids must have one row per anchor")
    b = anchors.numel()
    full = anchor_ids is None and candidate_ids is None
    if logits is not None and (full or (chunk_size is not None and chunk_size < b)):
        raise ValueError("nml_loss: precomputed logits need anchor_ids or candidate_ids and no "
                         "chunking (the unchunked block path)")
    if full and (chunk_size is None or chunk_size >= b):
        sums = _nml_full_square(u, v, metric, tau, c, include_positive, alpha)
    elif chunk_size is None or chunk_size >= b:
        sums = _nml_block(u, v, metric, anchors, cands, tau, c, include_positive, alpha, logits)
    else:
        sums = u.new_zeros(3)
        for start in range(0, b, chunk_size):
            ids = anchors[start:start + chunk_size]
            block_cands = cands if cands.dim() == 1 else cands[start:start + chunk_size]
            sums = sums + checkpoint(_nml_block, u, v, metric, ids, block_cands, tau, c,
                                     include_positive, alpha, use_reentrant=False)
    means = sums / (normalizer if normalizer is not None else max(b, 1))
    return means[0], {"info_nce": means[1].detach(), "kl": means[2].detach()}
