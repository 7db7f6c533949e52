r"""Graph services over graph-shard actors, handed to methods through
:class:`~distgcl.work.GraphServices` (the method never knows they are remote).

:class:`ShardedEigensolver` is E2Neg's spectral step on :math:`P` :data:`GraphShard` actors:
the graph is partitioned once (cached on disk by content), the actors serve the sharded
products, the block solver's driver holds :math:`b \times b` matrices, and only the
:math:`N \times k` eigenvectors come back. Enabled by ``dist.shards: P`` in a Ray Train run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from distgcl.config import ConfigError
from distgcl.memory import peak_rss_mb

# E2Neg's solver names -> the block methods the sharded space runs
BLOCK_METHODS = {"chebyshev": "chebyshev", "lobpcg-block": "lobpcg"}


@dataclass(frozen=True)
class ShardedEigensolver:
    r"""The :math:`k` smallest eigenpairs of :math:`\mathbf{L} = \mathbf{I} - \mathbf{S}` over
    ``num_shards`` graph-shard actors (needs a running Ray).

    Same block solvers, block width rule and starting block as ``smallest_eigenpairs(...,
    solver="chebyshev" | "lobpcg-block")``; for one shard the same arithmetic. The actors take
    no CPU reservation: they run while the training workers wait for the spectral step.

    Args:
        root (str): directory of the partitions (reused across runs and restarts: the
            partition is keyed by the graph's content).
        num_shards (int): :math:`P`.
        order (str, optional): node order of the partition (``auto``: METIS when installed,
            else reverse Cuthill-McKee) (default: ``auto``).
    """

    root: str
    num_shards: int
    order: str = "auto"

    @property
    def cache_tag(self) -> str:
        return f"sharded-p{self.num_shards}"

    def __call__(self, adjacency: sp.spmatrix, k: int, *, solver: str, tol: float,
                 maxiter: int, seed: int, pad: int | None = None,
                 max_matvecs: int | None = None, dtype: Any = np.float64,
                 progress: bool = False) -> Any:
        from distgcl.distributed.linalg import sharded_eigenpairs
        from distgcl.distributed.partition import partition_graph
        from distgcl.distributed.shards import GraphShards
        from distgcl.spectral.eigensolvers import block_width

        method = BLOCK_METHODS.get(solver)
        if method is None:
            raise ConfigError(f"dist.shards needs a block eigensolver: e2neg.solver must be one "
                              f"of {', '.join(BLOCK_METHODS)} (got {solver!r})")
        adj = sp.csr_matrix(adjacency)
        n = adj.shape[0]
        start = time.perf_counter()
        coo = adj.tocoo()
        edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        del coo
        manifest = partition_graph(edge_index, n, self.num_shards, Path(self.root),
                                   order=self.order, seed=seed, progress=progress)
        del edge_index
        partition_seconds = time.perf_counter() - start
        # the single-process block width rule (smallest_eigenpairs), for the pairs beyond the
        # components' trivial ones (the partition counted the components)
        m = k - manifest.num_components
        block = block_width(solver, m, pad) if m > 0 else None
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        with GraphShards(manifest, dtype=np.dtype(dtype).name, num_cpus=0, threads=1,
                         serve="operator") as shards:
            start_seconds = time.perf_counter() - start
            eig = sharded_eigenpairs(shards, k, method=method, tol=tol, maxiter=maxiter,
                                     seed=seed, block=block, max_matvecs=max_matvecs,
                                     progress=progress)
            shard_rss = shards.peak_rss_mb()
        eig.details.update({
            "shards": self.num_shards, "partition_seconds": round(partition_seconds, 2),
            "shard_start_seconds": round(start_seconds, 2), "order": manifest.order["method"],
            "cut_fraction": round(manifest.order["cut_fraction"], 4),
            "shard_peak_rss_mb": [round(r, 1) for r in shard_rss],
            "solver_process_rss_rise_mb": round(peak_rss_mb() - rss_before, 1)})
        return eig


__all__ = ["ShardedEigensolver"]
