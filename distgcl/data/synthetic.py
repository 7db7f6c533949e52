r"""Synthetic graphs of ogbn-proteins size for scale benchmarks (no download, seeded).

ogbn-proteins has 132,534 nodes and 39,561,252 undirected edges (79,122,504 directed), mean
degree about 597, and strong community structure (8 species, protein families). The generator
here is a degree-corrected stochastic block model with those sizes: node weights
:math:`\theta_i \sim \mathrm{LogNormal}(0, \sigma)`, ``num_blocks`` equal blocks, and every
undirected edge :math:`(u, v)` draws :math:`u \propto \theta`, then :math:`v \propto \theta`
inside :math:`u`'s block with probability ``p_intra`` and over all nodes otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PROTEINS_NODES = 132_534
PROTEINS_EDGES = 79_122_504  # directed (2 x 39,561,252 undirected)


def proteins_like_graph(num_nodes: int = PROTEINS_NODES, num_edges: int = PROTEINS_EDGES,
                        seed: int = 0, *, num_blocks: int = 50, p_intra: float = 0.7,
                        sigma: float = 0.8) -> Tensor:
    r"""A seeded degree-corrected SBM with ogbn-proteins' size (module docstring).

    Args:
        num_nodes (int, optional): :math:`N` (default: 132,534).
        num_edges (int, optional): directed edges :math:`E` (even; default: 79,122,504).
        seed (int, optional): numpy ``default_rng`` seed (default: ``0``).
        num_blocks (int, optional): planted blocks (default: ``50``).
        p_intra (float, optional): probability that an edge stays in its block (default: ``0.7``).
        sigma (float, optional): log-normal spread of the degree weights (default: ``0.8``).

    Returns:
        Tensor: ``edge_index`` :math:`(2, E)` int64, symmetric (both directions of every drawn
        edge), self-loops removed (so slightly fewer than ``num_edges``); a pair drawn twice
        appears twice (the Laplacian builder merges duplicates).

    Memory: about 16 bytes per directed edge for the result (1.27 GB at full size) plus
    about 8 bytes per undirected edge while drawing.
    """
    if num_nodes < num_blocks or num_blocks < 1:
        raise ValueError(f"need 1 <= num_blocks <= num_nodes (got {num_blocks}, {num_nodes})")
    if not 0.0 <= p_intra <= 1.0:
        raise ValueError(f"p_intra must be in [0, 1] (got {p_intra})")
    rng = np.random.default_rng(seed)
    m = num_edges // 2
    theta = rng.lognormal(0.0, sigma, num_nodes)
    # Nodes are laid out block by block, so a block is a contiguous id range.
    bounds = np.linspace(0, num_nodes, num_blocks + 1).astype(np.int64)
    block_of = np.repeat(np.arange(num_blocks), np.diff(bounds))
    cum = np.cumsum(theta)
    total = cum[-1]
    cum_lo = np.concatenate([[0.0], cum])[bounds[:-1]]  # mass before each block
    mass = cum[bounds[1:] - 1] - cum_lo
    src = np.searchsorted(cum, rng.random(m) * total, side="right").astype(np.int32)
    np.minimum(src, num_nodes - 1, out=src)
    b = block_of[src]
    intra = rng.random(m) < p_intra
    target = np.where(intra, cum_lo[b] + rng.random(m) * mass[b], rng.random(m) * total)
    del b, intra
    dst = np.searchsorted(cum, target, side="right").astype(np.int32)
    del target
    np.minimum(dst, num_nodes - 1, out=dst)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    out = torch.empty((2, 2 * src.size), dtype=torch.long)
    out[0, :src.size] = torch.from_numpy(src)
    out[0, src.size:] = torch.from_numpy(dst)
    out[1, :src.size] = torch.from_numpy(dst)
    out[1, src.size:] = torch.from_numpy(src)
    return out
