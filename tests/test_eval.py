import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from distgcl.data import random_split
from distgcl.eval import (clustering_scores, fast_rocauc, lbfgs_probe, liblinear_cv_probe,
                          linear_probe)


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


def _pygcl_lr_evaluator(z, y, split, epochs, lr, eval_every, seed, slot):
    """PyGCL's LREvaluator written out for one split (nn.Linear, LogSoftmax + NLLLoss, Adam,
    test micro-F1 = accuracy at the first best validation check), with the batched probe's
    initial weights of slot ``slot``."""
    import math

    num_classes = int(y.max()) + 1
    lin = torch.nn.Linear(z.size(1), num_classes)
    bound = math.sqrt(6.0 / (z.size(1) + num_classes))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + slot)
    with torch.no_grad():
        lin.weight.copy_(((torch.rand(z.size(1), num_classes, generator=gen) * 2 - 1) * bound).t())
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    best_val, best_test, best_epoch = 0.0, 0.0, 0
    for epoch in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log_softmax(lin(z[split.train]), -1),
                                            y[split.train])
        loss.backward()
        opt.step()
        if (epoch + 1) % eval_every == 0:
            with torch.no_grad():
                test = (lin(z[split.test]).argmax(-1) == y[split.test]).float().mean().item()
                val = (lin(z[split.val]).argmax(-1) == y[split.val]).float().mean().item()
            if val > best_val:
                best_val, best_test, best_epoch = val, test, epoch + 1
    return 100 * best_test, best_epoch


def test_adam_probe_equals_pygcl_lr_evaluator() -> None:
    z, y = _blobs(noise=4.0)
    splits = [random_split(300, s) for s in range(3)]
    res = linear_probe(z, y, splits, epochs=80, lr=0.01, eval_every=4, seed=2, chunk_rows=7)
    for s, split in enumerate(splits):
        score, epoch = _pygcl_lr_evaluator(z, y, split, 80, 0.01, 4, seed=2, slot=s)
        assert res.scores[s] == pytest.approx(score, abs=1e-4)
        assert res.best_epochs[s] == epoch


def _full_logits_probe(z, y, splits, epochs, eval_every):
    """The probe as it was before chunking: S x N x C logits at every check (the reference
    the chunked evaluation must reproduce exactly)."""
    import math

    import torch.nn.functional as F

    from distgcl.eval import _padded_index, _stack_masks, ogb_rocauc

    num_seeds, d, num_out = len(splits), z.size(1), y.size(1)
    train_m, val_m, test_m = _stack_masks(splits)
    bound = math.sqrt(6.0 / (d + num_out))
    inits = [torch.rand(d, num_out, generator=torch.Generator().manual_seed(s))
             for s in range(num_seeds)]
    weight = ((torch.stack(inits) * 2 - 1) * bound).requires_grad_()
    bias = torch.zeros(num_seeds, 1, num_out, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.01)
    idx, w = _padded_index(train_m)
    best_val = torch.full((num_seeds,), -1.0)
    best_epoch = torch.zeros(num_seeds, dtype=torch.long)
    best_w, best_b = weight.detach().clone(), bias.detach().clone()
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        per = F.binary_cross_entropy_with_logits(torch.baddbmm(bias, z[idx], weight),
                                                 y[idx].float(), reduction="none").mean(-1)
        ((per * w).sum(1) / w.sum(1)).sum().backward()
        opt.step()
        if epoch % eval_every == 0:
            with torch.no_grad():
                full = torch.einsum("nd,sdc->snc", z, weight) + bias  # [S, N, C]
                val = torch.stack([fast_rocauc(full[s, val_m[s]], y[val_m[s]].float())
                                   for s in range(num_seeds)])
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
            best_w[better], best_b[better] = weight.detach()[better], bias.detach()[better]
    return ([ogb_rocauc(z[test_m[s]] @ best_w[s] + best_b[s], y[test_m[s]])
             for s in range(num_seeds)], best_epoch.tolist())


def test_multilabel_probe_scores_only_val_and_test_rows_same_numbers() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 6, generator=g)
    # 112 tasks, as ogbn-proteins (ogb's Evaluator checks the task count)
    y = ((z @ torch.randn(6, 112, generator=g) + torch.randn(400, 112, generator=g)) > 0).long()
    splits = [random_split(400, s) for s in range(3)]
    ref_scores, ref_epochs = _full_logits_probe(z, y, splits, epochs=40, eval_every=5)
    for chunk in (7, 65536):  # several row chunks per check, and one
        res = linear_probe(z, y, splits, epochs=40, eval_every=5, multilabel=True,
                           chunk_rows=chunk)
        assert res.best_epochs == ref_epochs
        assert res.scores == pytest.approx(ref_scores, abs=1e-9)
    assert 60 < min(ref_scores) < 100


def test_lbfgs_probe_picks_c_on_validation() -> None:
    from sklearn.linear_model import LogisticRegression

    z, y = _blobs(noise=3.0)
    splits = [random_split(300, s) for s in range(3)]
    grid = (0.01, 1.0, 100.0)
    res = lbfgs_probe(z, y, splits, c_grid=grid)
    x, labels = z.numpy().astype(np.float64), y.numpy()
    for s, sp in enumerate(splits):
        tr, va, te = sp.train.numpy(), sp.val.numpy(), sp.test.numpy()
        fits = [LogisticRegression(C=c, max_iter=1000).fit(x[tr], labels[tr]) for c in grid]
        vals = [f.score(x[va], labels[va]) for f in fits]
        best = int(np.argmax(vals))  # the first best: the strongest regularization on ties
        assert res.best_c[s] == grid[best]
        assert res.scores[s] == pytest.approx(100 * fits[best].score(x[te], labels[te]))
    # a fixed split is fitted once and every seed reports it (the probe is deterministic)
    fixed = lbfgs_probe(z, y, [splits[0]] * 4, c_grid=grid)
    assert fixed.scores == [res.scores[0]] * 4 and fixed.std == 0.0


def test_liblinear_cv_probe_is_graces_label_classification() -> None:
    """GRACE's eval.py spelled out: 5-fold KFold (no shuffle: the targets are one-hot) on the
    train rows, each C scored by exact match of the thresholded one-vs-rest predictions, refit,
    argmax of the probabilities on the test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    from distgcl.protocols import train_test_split

    z, y = _blobs(n=200, noise=3.0)
    z = torch.nn.functional.normalize(z, dim=1)
    split = train_test_split(200, 0, 0.3)
    grid = (0.25, 4.0, 64.0)
    res = liblinear_cv_probe(z, y, [split], c_grid=grid)
    x, labels = z.numpy().astype(np.float64), y.numpy()
    tr = np.flatnonzero(split.train.numpy())
    onehot = np.eye(3, dtype=bool)[labels]

    def ovr(c, rows):
        return [LogisticRegression(solver="liblinear", C=c, random_state=0)
                .fit(x[rows], onehot[rows, k]) for k in range(3)]

    cv = []
    for c in grid:
        scores = []
        for fit_rows, score_rows in KFold(5).split(tr):
            models = ovr(c, tr[fit_rows])
            pred = np.stack([m.predict(x[tr[score_rows]]) for m in models], 1)
            scores.append(np.mean((pred == onehot[tr[score_rows]]).all(1)))
        cv.append(np.mean(scores))
    best = grid[int(np.argmax(cv))]
    models = ovr(best, tr)
    te = split.test.numpy()
    proba = np.stack([m.predict_proba(x[te])[:, 1] for m in models], 1)
    assert res.best_c == [best]
    assert res.scores[0] == pytest.approx(100 * np.mean(proba.argmax(1) == labels[te]))


def test_one_pass_accuracies_equal_per_seed_rows() -> None:
    """The probe's checks score every seed's rows from one GEMM over all nodes; the reference
    gathers each seed's rows and scores them alone."""
    from distgcl.eval import _accuracies

    g = torch.Generator().manual_seed(5)
    n, d, c, s = 97, 6, 4, 3
    z, y = torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)
    weight, bias = torch.randn(s, d, c, generator=g), torch.randn(s, 1, c, generator=g)
    masks = [torch.rand(s, n, generator=g) < p for p in (0.8, 0.1)]
    masks[1][2] = False  # a seed without rows scores 0
    got = _accuracies(z, y, weight, bias, masks, chunk_rows=10)
    for mask, acc in zip(masks, got):
        for k in range(s):
            rows = mask[k].nonzero().view(-1)
            ref = ((z[rows] @ weight[k] + bias[k]).argmax(-1) == y[rows]).float().mean() \
                if rows.numel() else torch.tensor(0.0)
            assert acc[k].item() == pytest.approx(ref.item(), abs=1e-7)
    assert len(set(got[0].tolist())) > 1  # the seeds' weights really differ
