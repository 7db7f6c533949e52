"""Linear-probe speed and agreement on PubMed -> bench/results/probe.json.

    DISTGCL_DATA=../shared/data python bench/probe.py

Three probes on the same frozen embeddings (a 2-layer GCN, 512 wide, seeded, untrained — the
probe's cost does not depend on how good the embeddings are), 10 seeds each:
  * ``batched``: distgcl's probe, all seeds trained as one batched model;
  * ``plain``: the same Adam logistic regression run one seed at a time with a plain
    ``nn.Linear`` loop (PyGCL ``LREvaluator`` style: full logits every check);
  * ``sklearn``: scikit-learn ``LogisticRegression`` (lbfgs) on train, C picked on validation.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from distgcl.data import default_root, load_dataset  # noqa: E402
from distgcl.eval import linear_probe, normalize_embeddings  # noqa: E402
from distgcl.nn import GCNEncoder  # noqa: E402

EPOCHS, EVAL_EVERY, SEEDS = 1000, 10, 10


def plain_probe(z: torch.Tensor, y: torch.Tensor, split, slot: int, seed: int = 0) -> float:
    num_classes = int(y.max()) + 1
    lin = torch.nn.Linear(z.size(1), num_classes)
    # The same Xavier-uniform draw as slot `slot` of the batched probe, so the comparison
    # isolates batching (on PubMed's 60-node public train set, init alone moves accuracy ~1 pt).
    bound = math.sqrt(6.0 / (z.size(1) + num_classes))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + slot)
    with torch.no_grad():
        lin.weight.copy_(((torch.rand(z.size(1), num_classes, generator=gen) * 2 - 1) * bound).t())
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=0.01)
    best_val, best_test = -1.0, 0.0
    for epoch in range(1, EPOCHS + 1):
        opt.zero_grad()
        F.cross_entropy(lin(z[split.train]), y[split.train]).backward()
        opt.step()
        if epoch % EVAL_EVERY == 0:
            with torch.no_grad():
                pred = lin(z).argmax(1)
            val = (pred[split.val] == y[split.val]).float().mean().item()
            if val > best_val:
                best_val = val
                best_test = (pred[split.test] == y[split.test]).float().mean().item()
    return 100 * best_test


def sklearn_probe(z: np.ndarray, y: np.ndarray, split) -> float:
    from sklearn.linear_model import LogisticRegression

    best_val, best_test = -1.0, 0.0
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=1000).fit(z[split.train], y[split.train])
        val = clf.score(z[split.val], y[split.val])
        if val > best_val:
            best_val, best_test = val, clf.score(z[split.test], y[split.test])
    return 100 * best_test


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared; one thread avoids oversubscription
    ds = load_dataset("pubmed", default_root(), normalize_features=True)
    torch.manual_seed(0)
    with torch.no_grad():
        z = GCNEncoder(ds.data.num_features, 512, 512, 2, "relu").eval()(ds.data.x, ds.data.edge_index)
    z = normalize_embeddings(z, "standardize")
    y = ds.data.y
    # PubMed's public split is fixed; use random 1:1:8 splits too so the seeds differ in data
    from distgcl.data import random_split

    rows = []
    for split_kind in ("public", "random-1:1:8"):
        splits = ([ds.split_masks(s) for s in range(SEEDS)] if split_kind == "public"
                  else [random_split(ds.data.num_nodes, s) for s in range(SEEDS)])
        tick = time.perf_counter()
        batched = linear_probe(z, y, splits, epochs=EPOCHS, eval_every=EVAL_EVERY)
        t_batched = time.perf_counter() - tick
        tick = time.perf_counter()
        plain = [plain_probe(z, y, sp, s) for s, sp in enumerate(splits)]
        t_plain = time.perf_counter() - tick
        tick = time.perf_counter()
        skl = [sklearn_probe(z.numpy(), y.numpy(), sp) for sp in splits]
        t_skl = time.perf_counter() - tick
        for name, scores, secs in (("batched", batched.scores, t_batched),
                                   ("plain", plain, t_plain), ("sklearn", skl, t_skl)):
            rows.append({"dataset": "pubmed", "method": "probe", "variant": f"{name}/{split_kind}",
                         "accuracy_mean": round(float(np.mean(scores)), 2),
                         "accuracy_std": round(float(np.std(scores, ddof=1)), 2),
                         "seconds": round(secs, 2), "seeds": SEEDS, "epochs": EPOCHS,
                         "speedup_vs_plain": round(t_plain / secs, 1),
                         "accuracy_diff_vs_batched": round(float(np.mean(scores)) - batched.mean, 2)})
    write_results("probe", rows, notes=(
        f"1 torch thread. {SEEDS} probe seeds on PubMed embeddings from a seeded untrained 2-layer GCN (512). "
        f"batched = distgcl.eval.linear_probe (all seeds in one model), plain = same Adam probe "
        f"(same initial weights per seed) one seed at a time, sklearn = LogisticRegression(lbfgs) with C in {{0.01,0.1,1,10}} "
        f"picked on validation. {EPOCHS} epochs, validation every {EVAL_EVERY}. "
        f"{args.note}".strip()))


if __name__ == "__main__":
    main()
