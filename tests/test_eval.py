import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from distgcl.data import random_split
from distgcl.eval import clustering_scores, fast_rocauc, linear_probe


def _blobs(n: int = 300, c: int = 3, d: int = 8, noise: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centers = torch.randn(c, d, generator=g) * 3
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def test_batched_probe_equals_separate_runs() -> None:
    z, y = _blobs(noise=3.0)
    splits = [random_split(300, s) for s in range(4)]
    batched = linear_probe(z, y, splits, epochs=60, eval_every=5, seed=7)
    for s in range(4):
        alone = linear_probe(z, y, [splits[s]], epochs=60, eval_every=5, seed=7, first_slot=s)
        assert alone.scores[0] == pytest.approx(batched.scores[s], abs=1e-6)
        assert alone.best_epochs[0] == batched.best_epochs[s]
    assert len(set(batched.scores)) > 1  # the seeds really differ


def test_probe_separable_data_is_accurate() -> None:
    z, y = _blobs(noise=0.3)
    res = linear_probe(z, y, [random_split(300, s) for s in range(3)], epochs=200)
    assert res.mean > 97


def test_fast_rocauc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 5)) < 0.3).astype(np.float32)
    scores = rng.random((200, 5)).astype(np.float32) + labels * 0.5
    expected = np.mean([roc_auc_score(labels[:, t], scores[:, t]) for t in range(5)])
    got = fast_rocauc(torch.from_numpy(scores), torch.from_numpy(labels))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_clustering_scores_perfect_on_separated_blobs() -> None:
    z, y = _blobs(noise=0.05)
    out = clustering_scores(z, y, 3, runs=1)
    assert out["nmi"] > 0.99 and out["ari"] > 0.99 and out["fmi"] > 0.99
