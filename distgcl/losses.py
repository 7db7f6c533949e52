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

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from distgcl.typing import NodeIds, OptTensor


def info_nce(anchor: Tensor, positive: Tensor, candidates: Tensor, tau: float, *,
             candidate_mask: OptTensor = None, candidate_weights: OptTensor = None) -> Tensor:
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

    Returns:
        Tensor: the loss of every anchor, :math:`(B,)`.

    Space complexity: O(BK) (plus O(BKd) when candidates are per anchor).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (got {tau})")
    a = F.normalize(anchor, dim=-1)
    pos = (a * F.normalize(positive, dim=-1)).sum(-1) / tau  # [B]
    c = F.normalize(candidates, dim=-1)
    if c.dim() == 2:
        neg = a @ c.t() / tau  # [B, K]
    else:
        neg = torch.einsum("bd,bkd->bk", a, c) / tau  # [B, K]
    if candidate_weights is not None:
        # log w_ij folded into the logits: w = 0 becomes -inf, i.e. the candidate is dropped.
        neg = neg + torch.log(candidate_weights.clamp_min(0))
    if candidate_mask is not None:
        neg = neg.masked_fill(~candidate_mask, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [B, 1 + K]
    return torch.logsumexp(logits, dim=1) - pos


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
               intra_view: bool = True) -> Tensor:
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

    Returns:
        Tensor: scalar loss.
    """
    n = h1.size(0)
    all_ids = torch.arange(n, device=h1.device)
    if chunk_size is None or chunk_size >= n:
        l1 = grace_block_loss(h1, h2, all_ids, all_ids, tau, intra_view)
        l2 = grace_block_loss(h2, h1, all_ids, all_ids, tau, intra_view)
        return 0.5 * (l1.mean() + l2.mean())
    total = h1.new_zeros(())
    for start in range(0, n, chunk_size):
        ids = all_ids[start:start + chunk_size]
        block = checkpoint(_symmetric_block_sum, h1, h2, ids, all_ids, tau, intra_view,
                           use_reentrant=False)
        total = total + block
    return total / (2 * n)


def _symmetric_block_sum(h1: Tensor, h2: Tensor, ids: Tensor, candidates: Tensor, tau: float,
                         intra_view: bool) -> Tensor:
    return (grace_block_loss(h1, h2, ids, candidates, tau, intra_view).sum()
            + grace_block_loss(h2, h1, ids, candidates, tau, intra_view).sum())


def sampled_grace_loss(h1: Tensor, h2: Tensor, tau: float, num_negatives: int,
                       generator: torch.Generator | None = None, *, anchor_ids: OptTensor = None,
                       block_size: int = 1024, intra_view: bool = True) -> Tensor:
    r"""GRACE with K sampled negatives per anchor, for graphs where :math:`N \times N` does not fit.

    Anchors are processed in blocks of ``block_size``; each block shares ``num_negatives``
    candidate nodes drawn uniformly (with replacement) from all N nodes, used from both views
    (so 2K negatives per anchor when ``intra_view``); an anchor's own node is masked out.
    Space complexity: O(block_size * K) per block.

    Returns:
        Tensor: scalar loss, the mean over anchors and both directions.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 (got {num_negatives})")
    n = h1.size(0)
    if anchor_ids is None:
        anchor_ids = torch.arange(n, device=h1.device)
    losses = []
    for start in range(0, anchor_ids.numel(), block_size):
        ids = anchor_ids[start:start + block_size]
        cand = torch.randint(0, n, (num_negatives,), generator=generator).to(h1.device)
        losses.append(grace_block_loss(h1, h2, ids, cand, tau, intra_view))
        losses.append(grace_block_loss(h2, h1, ids, cand, tau, intra_view))
    return torch.cat(losses).mean()

