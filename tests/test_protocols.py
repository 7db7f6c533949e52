"""Evaluation protocol presets (distgcl.protocols): split rules, probe settings, overrides."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import distgcl.methods  # noqa: F401  (registers the method sections)
from distgcl.config import load_config
from distgcl.data import GraphDataset
from distgcl.protocols import (PRESETS, probe_embeddings, protocol_splits, pygcl_split,
                               resolve_protocol, train_test_split)

N = 2708  # Cora's size: the split sizes below are the ones the anchors' codes get on Cora


def _dataset(fixed: bool, n: int = N, classes: int = 4, d: int = 8) -> GraphDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(classes, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g)
    data = Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long), y=y, num_nodes=n)
    if fixed:  # a public-style split: 140 / 500 / 1000
        perm = torch.randperm(n, generator=g)
        for name, ids in (("train_mask", perm[:140]), ("val_mask", perm[140:640]),
                          ("test_mask", perm[640:1640])):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[ids] = True
            data[name] = mask
    return GraphDataset("toy", data, classes, split="public" if fixed else "random")


def _eval(*overrides: str):
    return load_config(None, [f"eval.{o}" for o in overrides]).eval


def _sizes(split) -> tuple[int, int, int]:
    return int(split.train.sum()), int(split.val.sum()), int(split.test.sum())


def test_config_names_every_preset() -> None:
    import typing

    from distgcl.config import EvalConfig

    names = typing.get_args(typing.get_type_hints(EvalConfig)["protocol"])
    assert set(names) == set(PRESETS)


def test_pygcl_preset_is_e2negs_evaluation() -> None:
    p = resolve_protocol(_eval("protocol=pygcl-10-80-10"))
    assert (p.probe, p.normalize, p.epochs, p.lr, p.weight_decay, p.eval_every) == \
        ("adam", "none", 10000, 0.01, 0.0, 20)
    splits = protocol_splits(p, _dataset(fixed=True), [5, 6])  # ignores the public masks
    assert _sizes(splits[0]) == (270, 2166, 272)  # int(0.1 N), int(0.8 N) validation, the rest
    # PyGCL get_split: one permutation; train = its first 10 %, "valid" the next 80 %
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    assert torch.equal(splits[0].train.nonzero().view(-1), perm[:270].sort().values)
    assert torch.equal(splits[0].val.nonzero().view(-1), perm[270:2436].sort().values)
    assert torch.equal(splits[0].test.nonzero().view(-1), perm[2436:].sort().values)
    assert not torch.equal(splits[0].train, splits[1].train)  # a fresh split per seed


def test_grace_preset_is_graces_evaluation() -> None:
    p = resolve_protocol(_eval("protocol=grace-random-10-90"))
    assert (p.probe, p.normalize, p.cv_folds) == ("liblinear-cv", "l2", 5)
    assert p.c_grid == tuple(2.0 ** k for k in range(-10, 10))  # np.arange(-10, 10)
    split = protocol_splits(p, _dataset(fixed=True), [3])[0]
    # sklearn train_test_split(test_size=0.9): ceil(0.9 N) test nodes, the rest train
    assert _sizes(split) == (N - math.ceil(0.9 * N), 0, math.ceil(0.9 * N)) == (270, 0, 2438)
    assert not (split.train & split.test).any()


def test_grace_public_preset_fits_graces_probe_on_the_public_masks() -> None:
    p = resolve_protocol(_eval("protocol=grace-public"))
    assert (p.probe, p.normalize, p.cv_folds, p.c_grid) == \
        ("liblinear-cv", "l2", 5, PRESETS["grace-random-10-90"].c_grid)
    assert [_sizes(s) for s in protocol_splits(p, _dataset(fixed=True), [0, 1])] == \
        [(140, 500, 1000)] * 2


def test_nml_and_default_presets_use_the_datasets_split() -> None:
    p = resolve_protocol(_eval("protocol=nml-public"))
    assert (p.probe, p.normalize, p.epochs, p.lr, p.weight_decay, p.eval_every) == \
        ("adam", "none", 3000, 1e-3, 0.0, 2)
    fixed, rand = _dataset(fixed=True), _dataset(fixed=False)
    assert [_sizes(s) for s in protocol_splits(p, fixed, [0, 1])] == [(140, 500, 1000)] * 2
    assert _sizes(protocol_splits(p, rand, [0])[0]) == (270, 2166, 272)  # PyGCL get_split
    d = resolve_protocol(_eval())
    assert (d.name, d.probe, d.normalize) == ("default", "lbfgs", "l2")
    assert _sizes(protocol_splits(d, fixed, [0])[0]) == (140, 500, 1000)
    assert _sizes(protocol_splits(d, rand, [0])[0]) == (271, 271, 2166)  # random 1:1:8


def test_config_values_override_the_preset() -> None:
    p = resolve_protocol(_eval("protocol=pygcl-10-80-10", "probe_epochs=500", "normalize=l2",
                               "probe=lbfgs", "probe_c_grid=[0.5, 2]"))
    assert (p.epochs, p.normalize, p.probe, p.c_grid, p.eval_every) == \
        (500, "l2", "lbfgs", (0.5, 2.0), 20)


def test_probe_embeddings_reports_settings_and_scores() -> None:
    ds = _dataset(fixed=False, n=600)
    z = ds.data.x
    res, settings = probe_embeddings(z, ds, _eval("protocol=pygcl-10-80-10", "probe_seeds=3",
                                                  "probe_epochs=200"), seed=1)
    assert settings["split_sizes"] == [60, 480, 60] and settings["seeds"] == 3
    assert settings["probe"] == "adam" and settings["epochs"] == 200
    assert len(res.scores) == 3 and res.mean > 80
    res, settings = probe_embeddings(z, ds, _eval("protocol=grace-random-10-90",
                                                  "probe_seeds=2"), seed=1)
    assert settings["split_sizes"] == [60, 0, 540] and len(settings["best_c"]) == 2
    assert res.mean > 80
    res, settings = probe_embeddings(z, ds, _eval("probe_seeds=2"), seed=1)
    assert settings["probe"] == "lbfgs" and settings["split_sizes"] == [60, 60, 480]
    assert res.mean > 80 and len(set(res.scores)) == 2  # random splits: the seeds differ


def test_split_helpers_reject_bad_ratios() -> None:
    with pytest.raises(ValueError, match="ratios"):
        pygcl_split(10, 0, 0.5, 0.6)
    with pytest.raises(ValueError, match="ratio"):
        train_test_split(10, 0, 1.0)
    assert np.isclose(pygcl_split(1000, 0).test.float().mean().item(), 0.1)
