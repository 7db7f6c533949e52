r"""The Negative Metric Network (NMN) of NML-GCL (Zhao et al., IJCAI 2025).

A module only: it maps both views' embeddings to the factors of a learned distribution over
the candidates (:class:`MetricFactors`). Training logic (the bi-level schedule) lives in :mod:`distgcl.methods.nml`; the loss
that consumes the metric lives in :func:`distgcl.losses.nml_loss`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgcl.typing import OptTensor


def masked_cosine_log_softmax(anchor: Tensor, candidates: Tensor,
                              candidate_mask: OptTensor = None) -> Tensor:
    r"""Row-wise :math:`\log\mathrm{softmax}_j\, \cos(a_i, c_j)` over the valid candidates.

    No temperature (as in the official NML-GCL code): the logits are cosines in
    :math:`[-1, 1]`. Invalid candidates get :math:`-\infty`; a row without any valid candidate is
    all :math:`-\infty` (never NaN).

    Shapes:
        - **input:** ``anchor`` :math:`(B, d)`, ``candidates`` :math:`(K, d)` or
          :math:`(B, K, d)`, ``candidate_mask`` :math:`(B, K)` bool
        - **output:** :math:`(B, K)`

    Space complexity: O(BK) (plus the O(BKd) input when candidates are per anchor).
    """
    return metric_log_probs(F.normalize(anchor, dim=-1), F.normalize(candidates, dim=-1),
                            candidate_mask)


def masked_log_softmax(logits: Tensor, candidate_mask: OptTensor = None) -> Tensor:
    r"""Row-wise log-softmax over the valid entries; :math:`-\infty` elsewhere, never NaN.

    Shapes:
        - **input:** ``logits`` :math:`(B, K)`, ``candidate_mask`` :math:`(B, K)` bool
        - **output:** :math:`(B, K)`
    """
    if candidate_mask is None:
        return torch.log_softmax(logits, dim=1)
    if candidate_mask.shape != logits.shape:
        raise ValueError(f"candidate_mask must have shape {tuple(logits.shape)} "
                         f"(got {tuple(candidate_mask.shape)})")
    logits = logits.masked_fill(~candidate_mask, float("-inf"))
    empty = ~candidate_mask.any(dim=1, keepdim=True)  # [B, 1]
    if bool(empty.any()):
        logits = logits.masked_fill(empty, 0.0)  # no NaN on rows without candidates
    return torch.log_softmax(logits, dim=1).masked_fill(~candidate_mask, float("-inf"))


class MetricFactors(NamedTuple):
    r"""The negative metric of both directions as factors of its logits:
    :math:`m^{UV}_{ij} = \mathrm{softmax}_j\, \langle a^U_i, c^V_j\rangle` and
    :math:`m^{VU}_{ij} = \mathrm{softmax}_j\, \langle a^V_i, c^U_j\rangle`.

    A Siamese metric (one map :math:`g`, cosine) has :math:`a^U = c^U = \hat g(u)` and
    :math:`a^V = c^V = \hat g(v)` (unit rows); then the V->U logits are the transpose of the U->V
    ones, which the full-batch loss exploits.

    Shapes: every field :math:`(N, d')`, rows aligned with the embeddings.
    """

    anchor_u: Tensor
    candidate_v: Tensor
    anchor_v: Tensor
    candidate_u: Tensor

    @property
    def siamese(self) -> bool:
        return self.anchor_u is self.candidate_u and self.anchor_v is self.candidate_v

    @staticmethod
    def of_siamese(gu: Tensor, gv: Tensor) -> "MetricFactors":
        """Factors of the Siamese cosine metric from (not yet normalized) maps ``g(u), g(v)``."""
        gu, gv = F.normalize(gu, dim=-1), F.normalize(gv, dim=-1)
        return MetricFactors(gu, gv, gv, gu)

    def index(self, anchor_ids: Tensor, candidate_ids: Tensor) -> "MetricFactors":
        """Rows ``anchor_ids`` of the anchor factors and ``candidate_ids`` of the candidate ones."""
        return MetricFactors(self.anchor_u[anchor_ids], self.candidate_v[candidate_ids],
                             self.anchor_v[anchor_ids], self.candidate_u[candidate_ids])


def metric_logits(anchor: Tensor, candidates: Tensor) -> Tensor:
    r"""Metric logits :math:`\langle a_i, c_j\rangle` for shared :math:`(K, d)` or per-anchor
    :math:`(B, K, d)` candidate factors; :math:`(B, K)`."""
    if candidates.dim() == 2:
        return anchor @ candidates.t()
    if candidates.dim() == 3:
        return torch.einsum("bd,bkd->bk", anchor, candidates)
    raise ValueError(f"candidates must be (K, d) or (B, K, d) (got {tuple(candidates.shape)})")


class NegativeMetricNetwork(nn.Module):
    r"""The Negative Metric Network of `"Negative Metric Learning for Graphs"
    <https://arxiv.org/abs/2505.10307>`_ (NML-GCL): a Siamese MLP :math:`g` whose cosine
    similarities, soft-maxed over the candidates, give the learned negative metric

    .. math::
        g(\mathbf{x}) = \mathbf{W}_2\,\mathrm{RReLU}(\mathbf{W}_1 \mathbf{x} + \mathbf{b}_1)
        + \mathbf{b}_2, \qquad
        m_{ij} = \frac{\exp\left(\cos(g(\mathbf{u}_i), g(\mathbf{v}_j))\right)}
        {\sum_{k \in \mathcal{C}_i} \exp\left(\cos(g(\mathbf{u}_i), g(\mathbf{v}_k))\right)},
        \quad j \in \mathcal{C}_i,

    where :math:`\mathcal{C}_i` are the valid candidates of anchor :math:`i`, so
    :math:`\sum_{j \in \mathcal{C}_i} m_{ij} = 1`. :math:`g` is applied separately to anchors and
    candidates (Siamese; no concatenation), with Xavier-uniform weights and zero biases as in the
    official code. NML-GCL uses :math:`w_{ij} = |\mathcal{C}_i|\, m_{ij}` as InfoNCE negative
    weights, so a uniform :math:`m` recovers InfoNCE.

    ``forward(u, v)`` maps both views in one call and returns their :class:`MetricFactors`
    (unit rows :math:`\hat g(u), \hat g(v)`); the softmax over candidates happens in the loss
    (:func:`distgcl.losses.nml_loss`) or in :func:`metric_log_probs`.

    Args:
        dim (int): embedding width :math:`d` (input and output of :math:`g`).
        hidden_dim (int, optional): width of the hidden layer (default: :obj:`dim`).
        learnable (bool, optional): if :obj:`False`, :math:`g` is the identity and the module has
            no parameters: :math:`m_{ij}` is the softmax of the plain cosine similarity of the
            embeddings (the "no NMN" ablation) (default: :obj:`True`).

    Shapes:
        - **input:** ``u`` :math:`(N_u, d)`, ``v`` :math:`(N_v, d)`
        - **output:** :class:`MetricFactors` with :math:`(N_u, d)` / :math:`(N_v, d)` fields

    Example::

        nmn = NegativeMetricNetwork(512)
        f = nmn(z[anchors], z[candidates])
        m = metric_log_probs(f.anchor_u, f.candidate_v).exp()   # [B, K], rows sum to 1
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, learnable: bool = True) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"'{self.__class__.__name__}' needs dim >= 1 (got {dim})")
        self.dim = dim
        self.hidden_dim = hidden_dim or dim
        self.learnable = learnable
        if learnable:
            self.fc1 = nn.Linear(dim, self.hidden_dim)
            self.act = nn.RReLU()
            self.fc2 = nn.Linear(self.hidden_dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.learnable:
            for fc in (self.fc1, self.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.zeros_(fc.bias)

    def _g(self, x: Tensor) -> Tensor:
        if not self.learnable:
            return x
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, u: Tensor, v: Tensor) -> MetricFactors:
        return MetricFactors.of_siamese(self._g(u), self._g(v))

    def __repr__(self) -> str:
        kind = "" if self.learnable else ", learnable=False"
        return f"{self.__class__.__name__}({self.dim}, hidden_dim={self.hidden_dim}{kind})"


def metric_log_probs(anchor: Tensor, candidates: Tensor,
                     candidate_mask: OptTensor = None) -> Tensor:
    r""":math:`\log m_{ij}` :math:`(B, K)` from metric factors: the row-wise log-softmax of
    :func:`metric_logits` over the valid candidates, :math:`-\infty` elsewhere, never NaN."""
    return masked_log_softmax(metric_logits(anchor, candidates), candidate_mask)


def uniform_log_metric(candidate_mask: Tensor) -> Tensor:
    r""":math:`\log m` of the uniform metric :math:`m_{ij} = 1/|\mathcal{C}_i|` :math:`(B, K)`."""
    n = candidate_mask.sum(dim=1, keepdim=True).clamp_min(1).to(torch.get_default_dtype())
    out = (-torch.log(n)).expand(candidate_mask.shape).clone()
    return out.masked_fill(~candidate_mask, float("-inf"))


__all__ = ["MetricFactors", "NegativeMetricNetwork", "masked_cosine_log_softmax",
           "masked_log_softmax", "metric_log_probs", "metric_logits", "uniform_log_metric"]
