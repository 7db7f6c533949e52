"""Evaluation of frozen embeddings: linear probe, k-means clustering, multi-label ROC-AUC.

The linear probe follows the usual GCL protocol (PyGCL's ``LREvaluator``): logistic regression
trained with Adam on the train nodes, validation checked every ``eval_every`` epochs, the test
score read at the best validation check; repeated over S seeds (init, and for random-split
datasets the split too). The S probes are trained *together* as one batched model: parameters
``W [S, d, C]`` and a loss that is the sum of the S per-seed losses. Adam is element-wise, so
each seed's trajectory is exactly the one it would have alone — same numbers as S separate runs,
at the cost of one. PubMed, 10 seeds: seconds instead of minutes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distgcl.data.splits import SplitMasks


@dataclass
class ProbeResult:
    scores: list[float]
    """Test score per seed (accuracy or ROC-AUC, in percent)."""
    best_epochs: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores, ddof=1)) if len(self.scores) > 1 else 0.0


def normalize_embeddings(z: Tensor, how: str) -> Tensor:
    """``none`` | ``l2`` (unit rows) | ``standardize`` (zero-mean, unit-variance columns)."""
    if how == "none":
        return z
    if how == "l2":
        return F.normalize(z, dim=1)
    if how == "standardize":
        return (z - z.mean(0)) / z.std(0).clamp_min(1e-8)
    raise ValueError(f"unknown normalization {how!r}; known: none, l2, standardize")


def _stack_masks(splits: list[SplitMasks]) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.stack([s.train for s in splits]), torch.stack([s.val for s in splits]),
            torch.stack([s.test for s in splits]))


def _padded_index(masks: Tensor) -> tuple[Tensor, Tensor]:
    """``[S, N]`` bool -> node ids ``[S, M]`` and validity weights ``[S, M]`` (padded)."""
    counts = masks.sum(1)
    m = int(counts.max())
    index = torch.zeros(masks.size(0), m, dtype=torch.long)
    weight = torch.zeros(masks.size(0), m)
    for s in range(masks.size(0)):
        ids = masks[s].nonzero().view(-1)
        index[s, :ids.numel()] = ids
        weight[s, :ids.numel()] = 1.0
    return index, weight


def fast_rocauc(scores: Tensor, labels: Tensor) -> Tensor:
    """Mean ROC-AUC over tasks via the rank-sum formula; tasks lacking a class are skipped.

    Used to pick the probe epoch on validation data (vectorized over tasks, where a loop of
    sklearn calls per check would dominate the probe); reported test numbers come from ogb's
    ``Evaluator``.
    Shapes: ``scores, labels`` :math:`(M, T)` -> scalar. Ties get arbitrary (not average) ranks.
    """
    m = scores.size(0)
    ranks = torch.empty_like(scores)
    order = scores.argsort(dim=0)
    ranks.scatter_(0, order, torch.arange(1, m + 1, dtype=scores.dtype).unsqueeze(1).expand_as(scores))
    pos = labels.sum(0)
    neg = m - pos
    valid = (pos > 0) & (neg > 0)
    auc = ((ranks * labels).sum(0) - pos * (pos + 1) / 2) / (pos * neg).clamp_min(1)
    return auc[valid].mean()


def linear_probe(z: Tensor, y: Tensor, splits: list[SplitMasks], *, epochs: int = 1000,
                 lr: float = 0.01, weight_decay: float = 0.0, eval_every: int = 10,
                 seed: int = 0, multilabel: bool = False, first_slot: int = 0) -> ProbeResult:
    """Train ``len(splits)`` logistic-regression probes at once; see the module docstring.

    Args:
        z: embeddings ``[N, d]`` (already normalized as wanted).
        y: labels ``[N]`` (class ids) or ``[N, T]`` (0/1, with ``multilabel``).
        splits: one split per probe seed.
        first_slot: index of ``splits[0]`` among all probe seeds; probe ``s`` draws its initial
            weights from ``(seed, first_slot + s)``, so running seeds one at a time reproduces
            the batched run exactly.
    """
    z = z.detach().float().cpu()
    num_seeds, d = len(splits), z.size(1)
    multilabel = multilabel or y.dim() == 2
    num_out = int(y.size(1)) if multilabel else int(y.max()) + 1
    train_m, val_m, test_m = _stack_masks(splits)
    bound = math.sqrt(6.0 / (d + num_out))  # Xavier-uniform, as PyGCL's LogisticRegression
    inits = [torch.rand(d, num_out, generator=torch.Generator().manual_seed(
        seed * 1_000_003 + first_slot + s)) for s in range(num_seeds)]
    weight = ((torch.stack(inits) * 2 - 1) * bound).requires_grad_()
    bias = torch.zeros(num_seeds, 1, num_out, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    train_idx, train_w = _padded_index(train_m)
    x_train = z[train_idx]  # [S, M, d]
    y_train = y[train_idx]
    counts = train_w.sum(1)

    best_val = torch.full((num_seeds,), -1.0)
    best_test = torch.zeros(num_seeds)
    best_epoch = torch.zeros(num_seeds, dtype=torch.long)
    best_weight, best_bias = weight.detach().clone(), bias.detach().clone()
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        logits = torch.baddbmm(bias, x_train, weight)  # [S, M, C]
        if multilabel:
            per = F.binary_cross_entropy_with_logits(logits, y_train.float(), reduction="none")
            per = per.mean(-1)
        else:
            per = F.cross_entropy(logits.reshape(-1, num_out), y_train.reshape(-1),
                                  reduction="none").view(num_seeds, -1)
        loss = ((per * train_w).sum(1) / counts).sum()  # sum of per-seed mean losses
        loss.backward()
        opt.step()
        if epoch % eval_every == 0 or epoch == epochs:
            with torch.no_grad():
                full = torch.einsum("nd,sdc->snc", z, weight) + bias  # [S, N, C]
                val = _scores(full, y, val_m, multilabel)
                test = _scores(full, y, test_m, multilabel)
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_test = torch.where(better, test, best_test)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
            best_weight[better] = weight.detach()[better]
            best_bias[better] = bias.detach()[better]
    if multilabel:
        # Report ogb's own ROC-AUC at the validation-selected epoch.
        best_test = torch.tensor([ogb_rocauc(z[test_m[s]] @ best_weight[s] + best_bias[s],
                                             y[test_m[s]]) / 100.0 for s in range(num_seeds)])
    return ProbeResult([100.0 * float(s) for s in best_test], [int(e) for e in best_epoch])


def _scores(logits: Tensor, y: Tensor, masks: Tensor, multilabel: bool) -> Tensor:
    out = torch.zeros(masks.size(0))
    for s in range(masks.size(0)):
        m = masks[s]
        if multilabel:
            out[s] = fast_rocauc(logits[s, m], y[m].float())
        else:
            out[s] = (logits[s, m].argmax(-1) == y[m]).float().mean()
    return out


def ogb_rocauc(scores: Tensor, labels: Tensor, name: str = "ogbn-proteins") -> float:
    """Mean ROC-AUC over tasks with ogb's ``Evaluator`` (percent)."""
    from ogb.nodeproppred import Evaluator

    result = Evaluator(name).eval({"y_true": labels.long().numpy(),
                                   "y_pred": scores.detach().numpy()})
    return 100.0 * float(result["rocauc"])


def clustering_scores(z: Tensor, y: Tensor, num_classes: int, runs: int = 3,
                      seed: int = 0) -> dict[str, float]:
    """k-means (k = number of classes) on L2-normalized embeddings; mean NMI, ARI, FMI."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import (adjusted_rand_score, fowlkes_mallows_score,
                                 normalized_mutual_info_score)

    x = F.normalize(z.detach().float().cpu(), dim=1).numpy()
    labels = y.cpu().numpy()
    nmi, ari, fmi = [], [], []
    for r in range(runs):
        pred = KMeans(n_clusters=num_classes, n_init=10, random_state=seed + r).fit_predict(x)
        nmi.append(normalized_mutual_info_score(labels, pred))
        ari.append(adjusted_rand_score(labels, pred))
        fmi.append(fowlkes_mallows_score(labels, pred))
    return {"nmi": float(np.mean(nmi)), "ari": float(np.mean(ari)), "fmi": float(np.mean(fmi))}
