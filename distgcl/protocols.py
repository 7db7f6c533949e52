r"""Evaluation protocols: which split rule, which linear probe, which embedding normalization.

A number is only comparable with another measured under the same protocol. The anchors' codes
each use their own, so each is a preset here (``eval.protocol``); any ``eval.probe_*`` /
``eval.normalize`` set in the config overrides the preset's value.

=====================  =====================================  ======================================  =========
preset                 split per probe seed                   probe                                   embeddings
=====================  =====================================  ======================================  =========
``default``            the dataset's (public; random 1:1:8)   L-BFGS LR, C on validation              L2
``pygcl-10-80-10``     PyGCL ``get_split``: 10/80/10          Adam LR (PyGCL ``LREvaluator``): lr     raw
                       (train / **validation** / test)        0.01, wd 0, 10000 epochs, check every
                                                              20 (E2Neg's ``eval.py``)
``grace-random-10-90`` random 10 % train / 90 % test          one-vs-rest liblinear LR, C in          L2
                                                              :math:`2^{-10..9}` by 5-fold CV
                                                              (GRACE's ``eval.py``)
``grace-public``       the dataset's (public) split           GRACE's probe (as above), fitted on     L2
                                                              the public train nodes (the DGL
                                                              example's ``--split public``, which
                                                              gives GRACE's public-split figures)
``nml-public``         public split on Planetoid, else        Adam LR: lr 0.001, wd 0, 3000 epochs,   raw
                       PyGCL ``get_split``                    check every 2 (NML-GCL's ``eval.py``)
=====================  =====================================  ======================================  =========

PyGCL's ``get_split(N, train_ratio=0.1, test_ratio=0.8)`` permutes the nodes and returns the
first :math:`\lfloor 0.1N\rfloor` as train, the next :math:`\lfloor 0.8N\rfloor` as
*validation* and the rest (10 %) as test (papers.md §1.2 E). GRACE's split is scikit-learn's
``train_test_split(test_size=0.9)``: :math:`\lceil 0.9N\rceil` test nodes, the rest train, no
validation. Multi-label data always uses the batched Adam probe. Each seed's split is drawn from
``train.seed * 1000 + s`` (as the dataset's own random splits).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
from torch import Tensor

from distgcl.data.splits import SplitMasks, index_to_mask
from distgcl.eval import (DEFAULT_C_GRID, ProbeResult, liblinear_cv_probe, lbfgs_probe,
                          linear_probe, normalize_embeddings)

if TYPE_CHECKING:
    from distgcl.config import EvalConfig
    from distgcl.data import DatasetInfo, GraphDataset

SplitRule = Literal["dataset", "pygcl", "train-test", "fixed-else-pygcl"]


@dataclass(frozen=True)
class Protocol:
    """A resolved evaluation protocol (a preset with the config's overrides applied)."""

    name: str
    split: SplitRule
    """``dataset``: the dataset's own split; ``pygcl``: PyGCL ``get_split``; ``train-test``:
    random train / test, no validation; ``fixed-else-pygcl``: the dataset's fixed (public)
    split where it has one, else ``pygcl``."""
    probe: Literal["lbfgs", "adam", "liblinear-cv"]
    normalize: Literal["none", "l2", "standardize"]
    train_fraction: float = 0.1
    """``pygcl`` / ``train-test``: fraction of train nodes."""
    val_fraction: float = 0.8
    """``pygcl``: fraction of validation nodes (PyGCL's ``test_ratio``; the rest is test)."""
    epochs: int = 1000
    lr: float = 0.01
    weight_decay: float = 0.0
    eval_every: int = 10
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    cv_folds: int = 5
    anchor: str = ""
    """Whose evaluation this reproduces."""


GRACE_C_GRID = tuple(float(2.0 ** k) for k in range(-10, 10))

PRESETS: dict[str, Protocol] = {
    "default": Protocol("default", "dataset", "lbfgs", "l2", anchor="distgcl"),
    "pygcl-10-80-10": Protocol("pygcl-10-80-10", "pygcl", "adam", "none", epochs=10000,
                               lr=0.01, weight_decay=0.0, eval_every=20,
                               anchor="E2Neg eval.py (PyGCL get_split + LREvaluator)"),
    "grace-random-10-90": Protocol("grace-random-10-90", "train-test", "liblinear-cv", "l2",
                                   c_grid=GRACE_C_GRID, cv_folds=5,
                                   anchor="GRACE eval.py (label_classification)"),
    "grace-public": Protocol("grace-public", "dataset", "liblinear-cv", "l2",
                             c_grid=GRACE_C_GRID, cv_folds=5,
                             anchor="GRACE eval.py on the public split (DGL example --split "
                                    "public)"),
    "nml-public": Protocol("nml-public", "fixed-else-pygcl", "adam", "none", epochs=3000,
                           lr=1e-3, weight_decay=0.0, eval_every=2,
                           anchor="NML-GCL eval.py (LREvaluator)"),
}

_OVERRIDES = {"probe": "probe", "probe_epochs": "epochs", "probe_lr": "lr",
              "probe_weight_decay": "weight_decay", "probe_eval_every": "eval_every",
              "probe_cv_folds": "cv_folds", "normalize": "normalize"}


def resolve_protocol(config: EvalConfig) -> Protocol:
    """``config.protocol``'s preset with every ``probe_*`` / ``normalize`` the config sets."""
    try:
        preset = PRESETS[config.protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {config.protocol!r}; known: {sorted(PRESETS)}") \
            from None
    changes: dict[str, Any] = {dst: getattr(config, src) for src, dst in _OVERRIDES.items()
                               if getattr(config, src) is not None}
    if config.probe_c_grid is not None:
        changes["c_grid"] = tuple(float(c) for c in config.probe_c_grid)
    return dataclasses.replace(preset, **changes)


def pygcl_split(num_nodes: int, seed: int, train_ratio: float = 0.1,
                test_ratio: float = 0.8) -> SplitMasks:
    r"""PyGCL's ``get_split``: a seeded permutation; the first :math:`\lfloor rN\rfloor` nodes
    train, the next :math:`\lfloor tN\rfloor` **validation**, the rest test (PyGCL names the
    middle block ``valid``: with ``test_ratio = 0.8`` the test set is the last 10 %)."""
    if not (0 < train_ratio < 1 and 0 < test_ratio < 1 and train_ratio + test_ratio < 1):
        raise ValueError(f"bad split ratios train={train_ratio}, test={test_ratio}")
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(num_nodes * train_ratio), int(num_nodes * test_ratio)
    return SplitMasks(index_to_mask(perm[:n_train], num_nodes),
                      index_to_mask(perm[n_train:n_train + n_val], num_nodes),
                      index_to_mask(perm[n_train + n_val:], num_nodes))


def train_test_split(num_nodes: int, seed: int, train_ratio: float = 0.1) -> SplitMasks:
    r"""scikit-learn's ``train_test_split(test_size=1 - r)`` as GRACE calls it:
    :math:`\lceil (1-r)N\rceil` random test nodes, the rest train, no validation nodes."""
    if not 0 < train_ratio < 1:
        raise ValueError(f"bad train ratio {train_ratio}")
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    n_test = math.ceil((1 - train_ratio) * num_nodes)  # exactly sklearn's rounding
    return SplitMasks(index_to_mask(perm[n_test:], num_nodes),
                      torch.zeros(num_nodes, dtype=torch.bool),
                      index_to_mask(perm[:n_test], num_nodes))


def protocol_splits(protocol: Protocol, dataset: GraphDataset, seeds: list[int]) -> list[SplitMasks]:
    """The split of every probe seed under ``protocol``'s split rule."""
    n = dataset.num_nodes
    rule = protocol.split
    if rule == "fixed-else-pygcl":
        rule = "dataset" if dataset.fixed_split else "pygcl"
    if rule == "dataset":
        return [dataset.split_masks(s) for s in seeds]
    if rule == "pygcl":
        return [pygcl_split(n, s, protocol.train_fraction, protocol.val_fraction) for s in seeds]
    if rule == "train-test":
        return [train_test_split(n, s, protocol.train_fraction) for s in seeds]
    raise ValueError(f"unknown split rule {rule!r}")


def run_probe(z: Tensor, y: Tensor, splits: list[SplitMasks], protocol: Protocol, *,
              seed: int = 0, multilabel: bool = False,
              device: torch.device | str | None = None,
              column_stats: tuple[Tensor, Tensor] | None = None,
              num_classes: int | None = None) -> ProbeResult:
    """``protocol``'s probe on ``z`` (normalized here) over ``splits``.

    ``z`` may be a subset of the rows (:func:`probe_scored_rows`): ``column_stats`` are then
    the ``(mean, std)`` over *all* rows, ``[d]`` each, for ``normalize: standardize`` (a
    subset's own statistics would change the numbers), and ``num_classes`` the classes of the
    whole graph (the Adam probe's output width, else ``y.max() + 1`` of the rows given)."""
    x = z.detach().float().cpu()
    if column_stats is not None and protocol.normalize == "standardize":
        mean, std = (t.to(x) for t in column_stats)
        x = (x - mean) / std.clamp_min(1e-8)
    else:
        x = normalize_embeddings(x, protocol.normalize)
    multilabel = multilabel or y.dim() == 2
    if protocol.probe == "adam" or multilabel:
        return linear_probe(x, y, splits, epochs=protocol.epochs, lr=protocol.lr,
                            weight_decay=protocol.weight_decay, eval_every=protocol.eval_every,
                            seed=seed, multilabel=multilabel, device=device,
                            num_classes=num_classes)
    if protocol.probe == "lbfgs":
        return lbfgs_probe(x, y, splits, c_grid=protocol.c_grid, cv_folds=protocol.cv_folds)
    return liblinear_cv_probe(x, y, splits, c_grid=protocol.c_grid, cv_folds=protocol.cv_folds)


def probe_settings(protocol: Protocol, multilabel: bool, splits: list[SplitMasks]) -> dict[str, Any]:
    """What ``result.json`` records about the probe that ran (``metrics.probe``)."""
    probe = "adam" if multilabel else protocol.probe
    out: dict[str, Any] = {"protocol": protocol.name, "anchor": protocol.anchor,
                           "split": protocol.split, "probe": probe,
                           "normalize": protocol.normalize, "seeds": len(splits)}
    if probe == "adam":
        out.update(epochs=protocol.epochs, lr=protocol.lr, weight_decay=protocol.weight_decay,
                   eval_every=protocol.eval_every)
    else:
        out.update(c_grid=list(protocol.c_grid), cv_folds=protocol.cv_folds)
    if splits:
        s = splits[0]
        out["split_sizes"] = [int(s.train.sum()), int(s.val.sum()), int(s.test.sum())]
    return out


def probe_embeddings(z: Tensor, dataset: GraphDataset, config: EvalConfig, seed: int,
                     device: torch.device | str | None = None
                     ) -> tuple[ProbeResult, dict[str, Any]]:
    """Run ``config``'s evaluation protocol on frozen embeddings ``z`` of ``dataset``.

    Returns the probe result and its settings (incl. ``seconds``, the probe's wall time).
    """
    protocol = resolve_protocol(config)
    start = time.perf_counter()
    splits = probe_splits(protocol, dataset, config, seed)
    result = run_probe(z, dataset.data.y.cpu(), splits, protocol, seed=seed,
                       multilabel=dataset.multilabel, device=device)
    return result, _settings(protocol, dataset, splits, result, start)


def probe_splits(protocol: Protocol, dataset: GraphDataset | DatasetInfo, config: EvalConfig,
                 seed: int) -> list[SplitMasks]:
    """The split of every probe seed of a run with seed ``seed`` (``seed * 1000 + s``)."""
    return protocol_splits(protocol, dataset, [seed * 1000 + s
                                               for s in range(config.probe_seeds)])


def scored_ids(splits: list[SplitMasks]) -> Tensor:
    """``[k]`` ascending ids of the nodes some split trains, validates or tests on: the only
    rows a probe reads."""
    used = torch.zeros_like(splits[0].train)
    for s in splits:
        used |= s.train | s.val | s.test
    return used.nonzero().view(-1)


def restrict_splits(splits: list[SplitMasks], ids: Tensor) -> list[SplitMasks]:
    """``splits`` over the rows ``ids`` only (masks ``[k]``: row ``j`` is node ``ids[j]``).
    With ascending ``ids`` every mask lists its nodes in the same order as before, so a probe
    on the rows ``z[ids]`` computes what it computes on ``z``."""
    return [SplitMasks(s.train[ids], s.val[ids], s.test[ids]) for s in splits]


def probe_scored_rows(rows: Callable[[Tensor], tuple[Tensor, Tensor]],
                      dataset: GraphDataset | DatasetInfo, config: EvalConfig, seed: int,
                      device: torch.device | str | None = None,
                      column_stats: Callable[[], tuple[Tensor, Tensor]] | None = None
                      ) -> tuple[ProbeResult, dict[str, Any], Tensor]:
    """:func:`probe_embeddings` reading only the rows it scores: ``rows(ids)`` returns the
    embedding rows ``[k, d]`` and labels ``[k]`` / ``[k, T]`` of ascending node ids ``ids``
    (e.g. from an embeddings file and a graph store); ``column_stats()`` the ``(mean, std)``
    of all rows (needed for ``normalize: standardize`` only). The same result as
    :func:`probe_embeddings` on the whole ``z``. Returns ``(result, settings, rows read)``."""
    protocol = resolve_protocol(config)
    start = time.perf_counter()
    splits = probe_splits(protocol, dataset, config, seed)
    ids = scored_ids(splits)
    z_rows, y_rows = rows(ids)
    stats = column_stats() if column_stats is not None and \
        protocol.normalize == "standardize" else None
    result = run_probe(z_rows, y_rows.cpu(), restrict_splits(splits, ids), protocol, seed=seed,
                       multilabel=dataset.multilabel, device=device, column_stats=stats,
                       num_classes=None if dataset.multilabel else dataset.num_classes)
    settings = _settings(protocol, dataset, splits, result, start)
    settings["rows_read"] = int(ids.numel())
    return result, settings, z_rows


def _settings(protocol: Protocol, dataset: GraphDataset | DatasetInfo,
              splits: list[SplitMasks], result: ProbeResult, start: float) -> dict[str, Any]:
    settings = probe_settings(protocol, dataset.multilabel, splits)
    settings["seconds"] = time.perf_counter() - start
    if result.best_c:
        settings["best_c"] = result.best_c
    return settings


__all__ = ["PRESETS", "Protocol", "probe_embeddings", "probe_scored_rows", "probe_splits",
           "protocol_splits", "pygcl_split", "resolve_protocol", "restrict_splits", "run_probe",
           "scored_ids", "train_test_split"]
