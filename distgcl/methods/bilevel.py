r"""NML-GCL's bi-level step, shared by NML-GCL and E2Neg + NML (one helper, one behaviour).

Per outer step (Algorithm 1 of the paper): with the views' embeddings :math:`U, V` computed once,

1. :math:`T_M` metric-network updates on ``U.detach()``, ``V.detach()``: the loss reaches only the
   NMN; optimizer ``metric_opt`` steps;
2. one encoder update: the loss on :math:`U, V`, ``backward()``, only ``encoder_opt`` steps; the
   gradient the NMN received in this step is discarded (its optimizer's grads are cleared).

Both levels minimise the same loss (min-min). Only plain ``backward()`` / ``step()``: no
``torch.autograd.grad`` (DDP does not support it) and no ``requires_grad`` toggling (the two
optimizers own disjoint parameters). Every rank runs the same number of inner and outer steps in
the same order, so the data-parallel all-reduces stay in lock-step.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from distgcl.methods.base import TrainingDiverged

MetricLoss = Callable[[Tensor, Tensor, bool], tuple[Tensor, dict[str, Tensor]]]
"""``loss(u, v, metric_input_detached) -> (scalar loss, parts)``; calls the NMN's forward."""


def check_grads(module: nn.Module, what: str) -> None:
    """Raise :class:`TrainingDiverged` before a step on a non-finite gradient of ``module``."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
        raise TrainingDiverged(f"{what} gradient is not finite; no step was taken "
                               "(try a lower learning rate or a higher temperature)")


def bilevel_step(u: Tensor, v: Tensor, loss: MetricLoss, *,
                 encoder_opt: torch.optim.Optimizer, metric_opt: torch.optim.Optimizer | None,
                 inner_steps: int, encoder: nn.Module, metric: nn.Module | None,
                 check_finite: Callable[[Tensor, str], None],
                 metric_grad_to_encoder: bool = True,
                 counters: dict[str, int] | None = None) -> dict[str, float]:
    r"""One outer step of NML-GCL's alternating schedule (module docstring).

    Args:
        u, v (Tensor): embeddings of the two views (with their graph to the encoder).
        loss (MetricLoss): the NML loss of ``(u, v)`` under the current metric network.
        encoder_opt (Optimizer): owns the encoder's (and projection head's) parameters.
        metric_opt (Optimizer, optional): owns the NMN's parameters (:obj:`None`: a
            parameter-free metric, no inner steps).
        inner_steps (int): :math:`T_M`.
        encoder, metric (nn.Module): the modules (unwrapped) whose gradients are checked.
        check_finite (callable): the method's :meth:`Method.check_finite` (it stops every rank
            at once on a non-finite loss, before its ``backward()``).
        metric_grad_to_encoder (bool, optional): the encoder step backpropagates through the
            fixed NMN into the embeddings (official code) (default: :obj:`True`).
        counters (dict, optional): ``inner_steps`` and ``outer_steps`` counters, advanced here.

    Returns:
        dict: ``loss`` (the encoder step's), ``info_nce``, ``kl`` and ``loss_nmn`` (last inner).
    """
    stats: dict[str, float] = {}
    ud, vd = u.detach(), v.detach()
    if metric_opt is not None:
        for _ in range(inner_steps):
            metric_opt.zero_grad(set_to_none=True)
            loss_m, _ = loss(ud, vd, True)
            check_finite(loss_m, "NML metric-network loss")
            loss_m.backward()
            if metric is not None:
                check_grads(metric, "NML metric-network")
            metric_opt.step()
            stats["loss_nmn"] = loss_m.item()
            if counters is not None:
                counters["inner_steps"] = counters.get("inner_steps", 0) + 1
    encoder_opt.zero_grad(set_to_none=True)
    loss_e, parts = loss(u, v, not metric_grad_to_encoder)
    check_finite(loss_e, "NML encoder loss")
    loss_e.backward()
    check_grads(encoder, "NML encoder")
    encoder_opt.step()
    if metric_opt is not None:
        metric_opt.zero_grad(set_to_none=True)  # the NMN is fixed in this step: drop its grads
    if counters is not None:
        counters["outer_steps"] = counters.get("outer_steps", 0) + 1
    stats.update(loss=loss_e.item(), info_nce=float(parts["info_nce"]), kl=float(parts["kl"]))
    return stats
