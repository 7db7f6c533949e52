"""Evaluation of frozen embeddings: linear probes, k-means clustering, multi-label ROC-AUC.

Three linear probes, each over S splits (one per probe seed); which one a run uses, on which
split rule, is its evaluation protocol (:mod:`distgcl.protocols`):

* :func:`lbfgs_probe` (the default for single-label data): scikit-learn's multinomial logistic
  regression solved by L-BFGS for each C of a grid; the test accuracy at the C with the best
  validation accuracy. It chooses the regularization on validation data instead of stopping a
  fixed-rate Adam run early, is deterministic, and is 10-50x faster on 128-512-d embeddings.
  The Adam probe under-reports: 4.1 / 2.3 points below on PubMed (public / random 1:1:8,
  ``bench/results/probe.json``), 1.0 below on GRACE's Cora embeddings (public split), level
  on random splits and on NML-GCL's CiteSeer embeddings (``bench/results/protocols.json``,
  rows ``default`` against ``default+adam``).
* :func:`linear_probe`: PyGCL's ``LREvaluator`` (E2Neg's and NML-GCL's protocols, and every
  multi-label dataset): logistic regression trained with Adam on the train nodes, validation
  checked every ``eval_every`` epochs, the test score read at the best validation check. The S
  probes are trained *together* as one batched model: parameters ``W [S, d, C]`` and a loss that
  is the sum of the S per-seed losses. Adam is element-wise, so each seed's trajectory is exactly
  the one it would have alone — same numbers as S separate runs, at the cost of one. Validation
  and test logits are computed for the scored rows only, in row chunks (never ``S x N x C``).
* :func:`liblinear_cv_probe`: GRACE's ``eval.py``: one-vs-rest liblinear logistic regression on
  one-hot targets, C by k-fold grid search on the train nodes, argmax of the probabilities.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

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
    """Adam probe: the epoch of the best validation check per seed (0 for the other probes)."""
    best_c: list[float] = field(default_factory=list)
    """L-BFGS / liblinear probes: the C chosen per seed."""
    predicted_classes: list[int] = field(default_factory=list)
    """Adam probe, single-label data: distinct classes predicted on the test set per seed (at
    the selected epoch; :mod:`distgcl.health` flags a probe predicting one class)."""

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
    index = torch.zeros(masks.size(0), m, dtype=torch.long, device=masks.device)
    weight = torch.zeros(masks.size(0), m, device=masks.device)
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
    ranks.scatter_(0, order, torch.arange(1, m + 1, dtype=scores.dtype, device=scores.device)
                   .unsqueeze(1).expand_as(scores))
    pos = labels.sum(0)
    neg = m - pos
    valid = (pos > 0) & (neg > 0)
    auc = ((ranks * labels).sum(0) - pos * (pos + 1) / 2) / (pos * neg).clamp_min(1)
    return auc[valid].mean()


def linear_probe(z: Tensor, y: Tensor, splits: list[SplitMasks], *, epochs: int = 1000,
                 lr: float = 0.01, weight_decay: float = 0.0, eval_every: int = 10,
                 seed: int = 0, multilabel: bool = False, first_slot: int = 0,
                 device: torch.device | str | None = None,
                 chunk_rows: int = 65536, num_classes: int | None = None) -> ProbeResult:
    """Train ``len(splits)`` logistic-regression probes with Adam at once (module docstring).

    Args:
        z: embeddings ``[N, d]`` (already normalized as wanted).
        y: labels ``[N]`` (class ids) or ``[N, T]`` (0/1, with ``multilabel``).
        splits: one split per probe seed.
        first_slot: index of ``splits[0]`` among all probe seeds; probe ``s`` draws its initial
            weights from ``(seed, first_slot + s)``, so running seeds one at a time reproduces
            the batched run exactly.
        device: where to train (default: ``z``'s device); the initial weights are drawn on the
            CPU, so a device changes only the floating-point rounding.
        chunk_rows: validation/test logits are computed for at most this many rows at a time.
        num_classes: single-label outputs (default: ``y.max() + 1``; a subset of the rows
            may lack the last class).

    Memory: O(S M d) for the S training sets of M rows, plus O(chunk_rows C) per check.
    """
    dev = torch.device(device) if device is not None else z.device
    z = z.detach().float().to(dev)
    y = y.to(dev)
    num_seeds, d = len(splits), z.size(1)
    multilabel = multilabel or y.dim() == 2
    num_out = int(y.size(1)) if multilabel else \
        max(int(y.max()) + 1, int(num_classes or 0))
    train_m, val_m, test_m = (m.to(dev) for m in _stack_masks(splits))
    bound = math.sqrt(6.0 / (d + num_out))  # Xavier-uniform, as PyGCL's LogisticRegression
    inits = [torch.rand(d, num_out, device="cpu", generator=torch.Generator().manual_seed(
        seed * 1_000_003 + first_slot + s)) for s in range(num_seeds)]
    # the weights are held transposed, [S, C, d]: the logits' backward is then
    # grad^T [S, C, M] @ x_train [S, M, d], a plain batched GEMM; with [S, d, C] weights it is
    # x_train^T @ grad, which torch's CPU bmm ran ~6x slower on 4096-d embeddings (1 thread),
    # dominating the 10000-epoch PyGCL probe. Adam is element-wise: the same updates.
    weight_t = ((torch.stack(inits) * 2 - 1) * bound).transpose(1, 2).contiguous()
    weight_t = weight_t.to(dev).requires_grad_()
    bias = torch.zeros(num_seeds, num_out, 1, device=dev, requires_grad=True)
    opt = torch.optim.Adam([weight_t, bias], lr=lr, weight_decay=weight_decay)
    train_idx, train_w = (t.to(dev) for t in _padded_index(train_m))
    x_train_t = z[train_idx].transpose(1, 2)  # [S, d, M] (a view of [S, M, d] rows)
    y_train = y[train_idx]
    y_train_t = y_train.float().transpose(1, 2).contiguous() if multilabel else None  # [S, C, M]
    counts = train_w.sum(1)
    val_ids = [val_m[s].nonzero().view(-1) for s in range(num_seeds)]
    test_ids = [test_m[s].nonzero().view(-1) for s in range(num_seeds)]

    # the per-seed bookkeeping stays on the CPU (the scores come back there)
    best_val = torch.full((num_seeds,), -1.0, device="cpu")
    best_test = torch.zeros(num_seeds, device="cpu")
    best_epoch = torch.zeros(num_seeds, dtype=torch.long, device="cpu")
    best_weight, best_bias = weight_t.detach().clone(), bias.detach().clone()
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        logits = torch.baddbmm(bias, weight_t, x_train_t)  # [S, C, M]
        if multilabel:  # in the GEMM's own layout: a quarter off proteins' probe epoch
            per = F.binary_cross_entropy_with_logits(logits, y_train_t, reduction="none")
            per = per.mean(1)
        else:
            per = F.cross_entropy(logits.transpose(1, 2).reshape(-1, num_out),
                                  y_train.reshape(-1), reduction="none").view(num_seeds, -1)
        loss = ((per * train_w).sum(1) / counts).sum()  # sum of per-seed mean losses
        loss.backward()
        opt.step()
        if epoch % eval_every == 0 or epoch == epochs:
            with torch.no_grad():
                weight, bias_row = weight_t.transpose(1, 2), bias.transpose(1, 2)  # [S, d, C]
                if multilabel:
                    val = _scores(z, y, weight, bias_row, val_ids, multilabel, chunk_rows)
                    test = _scores(z, y, weight, bias_row, test_ids, multilabel, chunk_rows)
                else:
                    val, test = _accuracies(z, y, weight, bias_row, (val_m, test_m),
                                            chunk_rows)
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_test = torch.where(better, test, best_test)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
            best_weight[better.to(dev)] = weight_t.detach()[better.to(dev)]
            best_bias[better.to(dev)] = bias.detach()[better.to(dev)]
    if multilabel:
        # Report ogb's own ROC-AUC at the validation-selected epoch.
        best_test = torch.tensor([ogb_rocauc(_logits(z, best_weight[s].t(), best_bias[s].t(),
                                                     test_ids[s], chunk_rows).cpu(),
                                             y[test_ids[s]].cpu()) / 100.0
                                  for s in range(num_seeds)], dtype=torch.float64, device="cpu")
    predicted = [] if multilabel else [
        int(_logits(z, best_weight[s].t(), best_bias[s].t(), test_ids[s], chunk_rows)
            .argmax(1).unique().numel()) for s in range(num_seeds)]
    return ProbeResult([100.0 * float(s) for s in best_test], [int(e) for e in best_epoch],
                       predicted_classes=predicted)


def _logits(z: Tensor, weight: Tensor, bias: Tensor, ids: Tensor, chunk_rows: int) -> Tensor:
    """``z[ids] @ weight + bias`` :math:`(|ids|, C)`, ``chunk_rows`` rows at a time."""
    return torch.cat([z[part] @ weight + bias for part in ids.split(chunk_rows)]) \
        if ids.numel() else z.new_zeros(0, weight.size(1))


def _accuracies(z: Tensor, y: Tensor, weight: Tensor, bias: Tensor, masks: Sequence[Tensor],
                chunk_rows: int) -> list[Tensor]:
    """Per-seed accuracy on each of ``masks`` (``[S, N]`` bool each) from one pass over ``z``.

    All seeds' logits of a chunk of rows come from one GEMM with the ``[d, S C]`` weights, so
    ``z`` is read once per check, however many seeds and scored rows (PyGCL's split scores 90 %
    of the nodes per seed: gathering each seed's rows read ``z`` ~10 times per check).
    Memory: O(chunk_rows S C).
    """
    num_seeds, d, num_out = weight.shape
    w = weight.permute(1, 0, 2).reshape(d, num_seeds * num_out)
    b = bias.permute(1, 0, 2).reshape(1, num_seeds * num_out)
    correct = [torch.zeros(num_seeds, dtype=torch.long, device=z.device) for _ in masks]
    for start in range(0, z.size(0), chunk_rows):
        rows = slice(start, start + chunk_rows)
        pred = torch.addmm(b, z[rows], w).view(-1, num_seeds, num_out).argmax(-1)  # [R, S]
        hit = pred == y[rows].unsqueeze(1)
        for total, mask in zip(correct, masks):
            total += (hit & mask[:, rows].t()).sum(0)
    return [(total.float() / mask.sum(1).clamp_min(1).float()).cpu()
            for total, mask in zip(correct, masks)]


def _scores(z: Tensor, y: Tensor, weight: Tensor, bias: Tensor, ids: list[Tensor],
            multilabel: bool, chunk_rows: int) -> Tensor:
    """Per-seed accuracy (or fast ROC-AUC) on rows ``ids[s]``, from their logits only.

    Accuracy is accumulated chunk by chunk (O(chunk_rows C) memory); ROC-AUC ranks all scored
    rows at once, so it keeps their :math:`(|ids_s|, C)` logits.
    """
    out = torch.zeros(len(ids), device="cpu")
    for s, rows in enumerate(ids):
        if rows.numel() == 0:
            continue
        if multilabel:
            out[s] = fast_rocauc(_logits(z, weight[s], bias[s], rows, chunk_rows),
                                 y[rows].float()).cpu()
        else:
            correct = sum(int(((z[part] @ weight[s] + bias[s]).argmax(-1) == y[part]).sum())
                          for part in rows.split(chunk_rows))
            out[s] = correct / rows.numel()
    return out


def _distinct(splits: Sequence[SplitMasks]) -> tuple[list[int], list[int]]:
    """Indices of the distinct splits and, per split, which distinct one it is (a deterministic
    probe is fitted once per distinct split: a fixed public split is one fit, not ten)."""
    keys: dict[bytes, int] = {}
    first, which = [], []
    for i, sp in enumerate(splits):
        key = b"".join(np.packbits(m.cpu().numpy()).tobytes() for m in (sp.train, sp.val, sp.test))
        if key not in keys:
            keys[key] = len(first)
            first.append(i)
        which.append(keys[key])
    return first, which


def _threads(threads: int | None):  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_limits

    # scikit-learn's BLAS/OpenMP pools follow the run's torch thread count
    return threadpool_limits(threads if threads is not None else torch.get_num_threads())


# up to 1e4: on L2-normalized embeddings the chosen C is often 1e3 (E2Neg PubMed), and it must be
# an interior point of the grid for the validation choice to mean anything
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def lbfgs_probe(z: Tensor, y: Tensor, splits: list[SplitMasks], *,
                c_grid: Sequence[float] = DEFAULT_C_GRID, cv_folds: int = 5,
                max_iter: int = 1000, threads: int | None = None) -> ProbeResult:
    r"""Multinomial logistic regression by L-BFGS (scikit-learn), C chosen per split.

    For each split and each :math:`C` in ``c_grid`` (ascending), fit
    :math:`\min_W \frac12\|W\|^2 + C\sum_{i \in \text{train}} \mathrm{CE}(x_i W + b, y_i)` on the
    train nodes; the score is the test accuracy at the first :math:`C` with the best validation
    accuracy (stronger regularization wins ties). A split without validation nodes picks
    :math:`C` by stratified ``cv_folds``-fold cross-validation on its train nodes instead.
    Deterministic, so identical splits (a fixed public split) are fitted once.

    Args:
        z: embeddings ``[N, d]`` (already normalized as wanted).
        y: class ids ``[N]``.
        splits: one split per probe seed.
        threads: BLAS threads (default: torch's thread count).

    Returns:
        ProbeResult: test accuracy (percent) and the chosen C per split.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    # float32 as the embeddings themselves: scikit-learn's L-BFGS keeps it, 2.5x faster than
    # float64 on PubMed's 4096-d E2Neg embeddings at the same accuracy (86.0 vs 86.0, 1 split)
    x = z.detach().float().cpu().numpy()
    labels = y.cpu().numpy()
    grid = sorted(float(c) for c in c_grid)
    first, which = _distinct(splits)
    fitted: list[tuple[float, float]] = []
    with _threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds the cost
        for i in first:
            sp = splits[i]
            tr, va, te = (m.cpu().numpy() for m in (sp.train, sp.val, sp.test))
            if va.any():
                best = (-1.0, grid[0], 0.0)
                # each C fitted from zero: warm-starting the path let L-BFGS stop at once at
                # large C (its scaled gradient is under tol there), 0.3 points lower on Photo
                x_train, x_val, x_test = x[tr], x[va], x[te]
                for c in grid:
                    clf = LogisticRegression(C=c, max_iter=max_iter).fit(x_train, labels[tr])
                    val = float((clf.predict(x_val) == labels[va]).mean())
                    if val > best[0]:
                        best = (val, c, float((clf.predict(x_test) == labels[te]).mean()))
                fitted.append((best[2], best[1]))
            else:
                search = GridSearchCV(LogisticRegression(max_iter=max_iter), {"C": grid},
                                      cv=StratifiedKFold(cv_folds)).fit(x[tr], labels[tr])
                acc = float((search.predict(x[te]) == labels[te]).mean())
                fitted.append((acc, float(search.best_params_["C"])))
    return ProbeResult([100.0 * fitted[w][0] for w in which], [0] * len(splits),
                       [fitted[w][1] for w in which])


def liblinear_cv_probe(z: Tensor, y: Tensor, splits: list[SplitMasks], *,
                       c_grid: Sequence[float] = tuple(2.0 ** np.arange(-10, 10)),
                       cv_folds: int = 5, threads: int | None = None) -> ProbeResult:
    """GRACE's evaluation probe (``eval.py`` of CRIPAC-DIG/GRACE), reimplemented.

    One-vs-rest liblinear logistic regression on the one-hot targets of the train nodes, its C
    chosen by grid search with ``cv_folds``-fold cross-validation (scored, as there, by exact
    match of the thresholded one-vs-rest predictions), refitted on all train nodes; the
    prediction is the argmax of the one-vs-rest probabilities, and the score its accuracy
    (= GRACE's micro-F1 on one-hot rows) on the test nodes. Validation nodes are unused.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier

    x = z.detach().float().cpu().numpy().astype(np.float64)
    labels = y.cpu().numpy()
    onehot = np.eye(int(labels.max()) + 1, dtype=bool)[labels]
    first, which = _distinct(splits)
    fitted: list[tuple[float, float]] = []
    with _threads(threads):
        for i in first:
            tr, te = splits[i].train.cpu().numpy(), splits[i].test.cpu().numpy()
            search = GridSearchCV(OneVsRestClassifier(LogisticRegression(solver="liblinear",
                                                                         random_state=0)),
                                  {"estimator__C": list(c_grid)}, cv=cv_folds)
            search.fit(x[tr], onehot[tr])
            pred = search.predict_proba(x[te]).argmax(1)
            fitted.append((float((pred == labels[te]).mean()),
                           float(search.best_params_["estimator__C"])))
    return ProbeResult([100.0 * fitted[w][0] for w in which], [0] * len(splits),
                       [fitted[w][1] for w in which])


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
