r"""The Negative Metric Network (NMN) of NML-GCL (Zhao et al., IJCAI 2025).

A module only: it turns anchor and candidate embeddings into a learned distribution over the
candidates. Training logic (the bi-level schedule) lives in :mod:`distgcl.methods.nml`; the loss
that consumes the metric lives in :func:`distgcl.losses.nml_loss`.
"""
from __future__ import annotations

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
    a = F.normalize(anchor, dim=-1)
    c = F.normalize(candidates, dim=-1)
    if c.dim() == 2:
        logits = a @ c.t()  # [B, K]
    elif c.dim() == 3:
        logits = torch.einsum("bd,bkd->bk", a, c)  # [B, K]
    else:
        raise ValueError(f"candidates must be (K, d) or (B, K, d) (got {tuple(c.shape)})")
    return masked_log_softmax(logits, candidate_mask)


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

    where :math:`\mathcal{C}_i` are the valid candidates of anchor :math:`i` (``candidate_mask``),
    so :math:`\sum_{j \in \mathcal{C}_i} m_{ij} = 1` and invalid candidates get :math:`m_{ij} = 0`.
    :math:`g` is applied separately to anchors and candidates (Siamese; no concatenation), with
    Xavier-uniform weights and zero biases as in the official code. NML-GCL uses
    :math:`w_{ij} = |\mathcal{C}_i|\, m_{ij}` as InfoNCE negative weights, so a uniform
    :math:`m` recovers InfoNCE.

    Args:
        dim (int): embedding width :math:`d` (input and output of :math:`g`).
        hidden_dim (int, optional): width of the hidden layer (default: :obj:`dim`).
        learnable (bool, optional): if :obj:`False`, :math:`g` is the identity and the module has
            no parameters: :math:`m_{ij}` is the softmax of the plain cosine similarity of the
            embeddings (the "no NMN" ablation) (default: :obj:`True`).

    Shapes:
        - **input:** ``anchor`` :math:`(B, d)`, ``candidates`` :math:`(K, d)` (shared by all
          anchors) or :math:`(B, K, d)` (per anchor), ``candidate_mask`` :math:`(B, K)` bool
          (optional)
        - **output:** :math:`m` :math:`(B, K)`, rows sum to 1 over the valid candidates

    Example::

        nmn = NegativeMetricNetwork(512)
        m = nmn(z[centres], z[candidates])            # [B, K]
        w = m.size(1) * m                              # NML weights, mean 1 per row
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

    def project(self, x: Tensor) -> Tensor:
        r"""The Siamese map :math:`g`, :math:`(\ast, d) \to (\ast, d)`."""
        if not self.learnable:
            return x
        return self.fc2(self.act(self.fc1(x)))

    def log_metric(self, anchor: Tensor, candidates: Tensor,
                   candidate_mask: OptTensor = None) -> Tensor:
        r""":math:`\log m_{ij}` :math:`(B, K)`, numerically stable, :math:`-\infty` if masked."""
        return masked_cosine_log_softmax(self.project(anchor), self.project(candidates),
                                         candidate_mask)

    def forward(self, anchor: Tensor, candidates: Tensor,
                candidate_mask: OptTensor = None) -> Tensor:
        return self.log_metric(anchor, candidates, candidate_mask).exp()

    def __repr__(self) -> str:
        kind = "" if self.learnable else ", learnable=False"
        return f"{self.__class__.__name__}({self.dim}, hidden_dim={self.hidden_dim}{kind})"


def uniform_log_metric(candidate_mask: Tensor) -> Tensor:
    r""":math:`\log m` of the uniform metric :math:`m_{ij} = 1/|\mathcal{C}_i|` :math:`(B, K)`."""
    n = candidate_mask.sum(dim=1, keepdim=True).clamp_min(1).to(torch.get_default_dtype())
    out = (-torch.log(n)).expand(candidate_mask.shape).clone()
    return out.masked_fill(~candidate_mask, float("-inf"))


__all__ = ["NegativeMetricNetwork", "masked_cosine_log_softmax", "masked_log_softmax",
           "uniform_log_metric"]
