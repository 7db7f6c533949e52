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

    **Limitation (measured: bench/results/nml.json, the false-negative diagnostic of
    :meth:`~distgcl.methods.nml.NML.false_negative_diagnostic`).** This metric cannot give *less*
    weight to candidates that look like the anchor. The logit of candidate :math:`j` is
    :math:`\cos(g(u_i), g(v_j))` with the *same* map :math:`g` on both sides, so it is largest
    (= 1) where :math:`g(v_j)` points like :math:`g(u_i)`; since the views of one node are close
    (:math:`u_i \approx v_i`) and :math:`g` is continuous, a candidate similar to the anchor —
    a likely false negative — sits near the top of the row. The loss (minimised by the NMN too)
    would rather down-weight similar candidates; the best this metric can do is to flatten the
    row towards uniform. In every measured row the same-class candidates got weight above 1 and
    the ROC-AUC of :math:`-m` for same-class candidates was below 0.5.
    :class:`SignedNegativeMetricNetwork` adds the one missing degree of freedom.

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


class SignedNegativeMetricNetwork(NegativeMetricNetwork):
    r"""The NMN with a learnable signed inverse temperature :math:`\beta` on its cosine: a
    negative metric that *can* down-weight candidates similar to the anchor.

    .. math::
        m_{ij} = \frac{\exp\left(\beta\,\cos(g(\mathbf{u}_i), g(\mathbf{v}_j))\right)}
        {\sum_{k \in \mathcal{C}_i} \exp\left(\beta\,\cos(g(\mathbf{u}_i),
        g(\mathbf{v}_k))\right)}, \qquad \beta \in \mathbb{R}\ \text{learned},

    with the Siamese MLP :math:`g` of :class:`NegativeMetricNetwork` (which is :math:`\beta = 1`
    fixed). Why this and not more: (1) it is the smallest change that contains the *opposite*
    of the faithful metric: with :math:`\beta < 0` the most anchor-like candidates (likely
    false negatives) get the least weight; (2) the sign is learned at once: started at
    :math:`\beta_0 = 0` (uniform :math:`m`, i.e. InfoNCE, the KL term's minimum), the gradient
    of the weighted InfoNCE is :math:`\partial\ell_i/\partial\beta = \frac{n_i}{D_i}
    \operatorname{Cov}_j\big(\cos(g(u_i), g(v_j)), e^{s_{ij}/\tau}\big)`, positive wherever
    the metric's similarity follows the embeddings' (it does for any near-isometric :math:`g`),
    so the first inner step already makes :math:`\beta` negative, and the KL term
    :math:`\alpha\,\mathrm{KL}(\mathrm{Unif} \| m) \approx \frac{\alpha\beta^2}{2}
    \operatorname{Var}_j\cos` bounds its size; (3) the logits stay a product of factors
    (:class:`MetricFactors` with anchor factors :math:`\beta\hat g(u)`), so the full-batch
    and mini-batch losses consume it unchanged. Separate anchor and candidate heads could
    learn the inversion too, but only through 2 x d x d weights moving away from a random
    initial relation; the loss would still rank candidates by one learned similarity.

    Args:
        dim (int): embedding width :math:`d`.
        hidden_dim (int, optional): hidden width of :math:`g` (default: :obj:`dim`).
        scale_init (float, optional): :math:`\beta_0` (default: :obj:`0.0`: uniform at start;
            :obj:`1.0` starts from the faithful NMN).

    Shapes:
        - **input:** ``u`` :math:`(N_u, d)`, ``v`` :math:`(N_v, d)`
        - **output:** :class:`MetricFactors`: anchors :math:`\beta\hat g(\cdot)`, candidates
          :math:`\hat g(\cdot)`
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, scale_init: float = 0.0) -> None:
        self.scale_init = float(scale_init)
        super().__init__(dim, hidden_dim, learnable=True)
        self.scale = nn.Parameter(torch.tensor(self.scale_init))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "scale"):
            with torch.no_grad():
                self.scale.fill_(self.scale_init)

    def forward(self, u: Tensor, v: Tensor) -> MetricFactors:
        gu, gv = F.normalize(self._g(u), dim=-1), F.normalize(self._g(v), dim=-1)
        return MetricFactors(self.scale * gu, gv, self.scale * gv, gu)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, hidden_dim={self.hidden_dim}, "
                f"scale_init={self.scale_init})")


METRICS = ("nmn", "signed", "cosine")
"""``nmn``: the faithful NMN; ``signed``: :class:`SignedNegativeMetricNetwork`; ``cosine``: no
parameters, softmax of the plain cosine (the no-NMN ablation)."""


def build_metric_network(kind: str, dim: int, hidden_dim: int | None = None, *,
                         scale_init: float = 0.0) -> NegativeMetricNetwork:
    """The negative metric module named ``kind`` (one of :data:`METRICS`)."""
    if kind == "nmn":
        return NegativeMetricNetwork(dim, hidden_dim)
    if kind == "signed":
        return SignedNegativeMetricNetwork(dim, hidden_dim, scale_init=scale_init)
    if kind == "cosine":
        return NegativeMetricNetwork(dim, hidden_dim, learnable=False)
    raise ValueError(f"unknown negative metric {kind!r}; known: {', '.join(METRICS)}")


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


__all__ = ["METRICS", "MetricFactors", "NegativeMetricNetwork", "SignedNegativeMetricNetwork",
           "build_metric_network", "masked_cosine_log_softmax", "masked_log_softmax",
           "metric_log_probs", "metric_logits", "uniform_log_metric"]
