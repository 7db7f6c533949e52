"""GRACE loss forward+backward: the three-matrix full path vs the per-direction block path.

    python bench/grace_loss.py [--threads 2] [--repeats 2] -> bench/results/grace_loss.json

Both compute the same full-batch objective (a test checks values and gradients); the block path
is what the chunked mode runs per chunk. Sizes are the node counts and projection widths of
Photo, Computers and PubMed under their GRACE configs; inputs are random (cost does not depend on
values).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from distgcl.losses import grace_block_loss, grace_loss  # noqa: E402

SIZES = {"photo": (7650, 64), "computers": (13752, 128), "pubmed": (19717, 256)}


def _block_path(h1: torch.Tensor, h2: torch.Tensor, tau: float) -> torch.Tensor:
    ids = torch.arange(h1.size(0))
    return 0.5 * (grace_block_loss(h1, h2, ids, ids, tau).mean()
                  + grace_block_loss(h2, h1, ids, ids, tau).mean())


def _seconds(fn, h1: torch.Tensor, h2: torch.Tensor, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), 0.0
    for _ in range(repeats):
        h1.grad = h2.grad = None
        tick = time.perf_counter()
        loss = fn(h1, h2, 0.5)
        loss.backward()
        best = min(best, time.perf_counter() - tick)
        value = loss.item()
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, (n, d) in SIZES.items():
        gen = torch.Generator().manual_seed(0)
        h1 = torch.randn(n, d, generator=gen, requires_grad=True)
        h2 = torch.randn(n, d, generator=gen, requires_grad=True)
        full, v_full = _seconds(lambda a, b, t: grace_loss(a, b, t), h1, h2, args.repeats)
        block, v_block = _seconds(_block_path, h1, h2, args.repeats)
        rows.append({"dataset": name, "method": "grace-loss", "variant": "fwd+bwd", "nodes": n,
                     "dim": d, "full_path_seconds": round(full, 3),
                     "block_path_seconds": round(block, 3),
                     "speedup": round(block / full, 2), "loss_abs_diff": abs(v_full - v_block)})
        print(rows[-1], flush=True)
    write_results("grace_loss", rows,
                  f"Best of {args.repeats} forward+backward passes of the full-batch GRACE loss "
                  f"(tau 0.5, intra-view negatives) on random inputs, {args.threads} torch "
                  f"threads: three N x N matrices (grace_loss unchunked) vs the per-direction "
                  f"block path (four N x N blocks with masks, as each chunk of the chunked mode). "
                  f"{args.note}".strip())


if __name__ == "__main__":
    main()
