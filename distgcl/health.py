"""After-training health check of the embeddings a run hands over (``result.json["health"]``).

A run can finish with numbers that look fine while its product is unusable: the linear probe
L2-normalises, so embeddings scaled by :math:`10^{10}` (or holding NaNs in a few rows) still
print a plausible accuracy. :func:`embedding_health` flags what a user should not take away
silently: non-finite entries, extreme (or collapsed) row norms, and a probe whose test
predictions are all one class. Pure functions, no I/O except :func:`report_health`'s one line.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

MAX_NORM = 1e6
"""Mean row norm above this is flagged (a GCN encoder's outputs are O(1)-O(100))."""
MIN_NORM = 1e-8
"""Largest row norm below this is flagged (every embedding is ~0: collapsed)."""


def embedding_health(z: Tensor, predicted_classes: Sequence[int] | None = None, *,
                     num_classes: int = 0, max_norm: float = MAX_NORM,
                     min_norm: float = MIN_NORM) -> tuple[list[str], dict[str, Any]]:
    """Warnings (one line each, empty when healthy) and the statistics behind them.

    Args:
        z: embeddings :math:`(N, d)`.
        predicted_classes: distinct classes the probe predicted on the test set, per probe seed
            (None or empty: not checked).
        num_classes: classes of the task (a one-class task's probe may predict one class).

    Returns:
        ``(warnings, stats)`` with ``stats``: ``ok``, ``nonfinite`` (entries), ``norm_mean``,
        ``norm_max``, ``norm_min`` (over the finite rows), ``probe_predicted_classes``,
        ``warnings``.
    """
    if z.dim() != 2:
        raise ValueError(f"embeddings must have shape [N, d] (got {list(z.shape)})")
    z = z.detach().double()
    finite_rows = torch.isfinite(z).all(1)
    nonfinite = int((~torch.isfinite(z)).sum())
    norms = z[finite_rows].norm(dim=1)
    stats: dict[str, Any] = {"nonfinite": nonfinite,
                             "norm_mean": float(norms.mean()) if norms.numel() else None,
                             "norm_max": float(norms.max()) if norms.numel() else None,
                             "norm_min": float(norms.min()) if norms.numel() else None}
    warnings: list[str] = []
    if nonfinite:
        warnings.append(f"{nonfinite} non-finite embedding entries in "
                        f"{int((~finite_rows).sum())} of {z.size(0)} rows")
    if norms.numel() and stats["norm_mean"] > max_norm:
        warnings.append(f"extreme embedding norms: mean {stats['norm_mean']:.3g}, max "
                        f"{stats['norm_max']:.3g} (> {max_norm:g}; check the input features' "
                        f"scale, e.g. data.normalize_features / data.standardize_features)")
    elif norms.numel() and stats["norm_max"] < min_norm:
        warnings.append(f"collapsed embeddings: every row norm is below {min_norm:g}")
    classes = list(predicted_classes or [])
    stats["probe_predicted_classes"] = classes
    single = [s for s, c in enumerate(classes) if c <= 1]
    if single and num_classes != 1:
        warnings.append(f"the linear probe predicts a single class on the test set "
                        f"({len(single)} of {len(classes)} seeds)")
    stats["ok"] = not warnings
    stats["warnings"] = warnings
    return warnings, stats


def report_health(z: Tensor, metrics: dict[str, Any], num_classes: int = 0) -> dict[str, Any]:
    """:func:`embedding_health` of a run's embeddings and probe (``metrics`` as
    :func:`distgcl.train.evaluate` returns them); prints one warning line when unhealthy and
    returns the statistics for ``result.json``."""
    warnings, stats = embedding_health(z, metrics.get("probe_predicted_classes"),
                                       num_classes=num_classes)
    if warnings:
        print(f"distgcl: WARNING: unhealthy embeddings: {'; '.join(warnings)}", flush=True)
    return stats
