r"""Sharded block linear algebra over the graph-shard actors, and the distributed spectral step.

:class:`ShardedBlockSpace` implements :class:`~distgcl.spectral.block.BlockSpace` over
:class:`~distgcl.distributed.shards.GraphShards`: a block :math:`\mathbf{X}` (:math:`N \times b`)
is a list of :math:`P` object references, one row block per shard, in the partition's node
order, living in Ray's object store. The driver holds the references and the small matrices only:

* :math:`\mathbf{S}\mathbf{X}`: every shard :math:`p` *exports* the rows of
  :math:`\mathbf{X}_p` that each peer's halo needs (one object per peer); shard :math:`q` then
  computes its rows of :math:`\mathbf{S}\mathbf{X}` from :math:`\mathbf{X}_q` and the exports
  addressed to it (Ray hands them over through the object store, not through the driver);
* :math:`\sum_i \mathbf{X}_i\mathbf{M}_i`, column selection: row-local, on every shard;
* Gram matrices and column norms: sums of the per-shard partial products (:math:`b \times b`);
* deflation of the trivial eigenvectors: components that live on one shard are handled there;
  for components spread over several shards the partial sums :math:`y_C^\top\mathbf{X}_p`
  (:math:`c_\text{shared} \times b`) are added up on the driver and sent back.

Because blocks are immutable objects owned by the driver, a shard actor that dies is restarted by
Ray (reloading its verified file) and the call it was running is re-run on the same inputs: the
solve continues with identical numbers.

:func:`sharded_eigenpairs` runs the block solvers of :mod:`distgcl.spectral.block` on this space
and returns :class:`~distgcl.spectral.eigensolvers.Eigenpairs`, gathering the :math:`N \times k`
eigenvectors (in the original node order) only at the end, 16 columns at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from distgcl.distributed.shards import GraphShards
from distgcl.spectral.block import BlockSpace, Coefficient, block_eigenpairs


@dataclass
class ShardedBlock:
    """A block as one object reference per shard (rows in partition order)."""

    refs: list[Any]
    cols: int


class ShardedBlockSpace(BlockSpace):
    r""":class:`~distgcl.spectral.block.BlockSpace` over graph-shard actors (module docstring).

    Args:
        shards (GraphShards): the started actors of one partition.
        gather_chunk (int, optional): columns fetched per call when gathering, which bounds the
            driver's extra memory to :math:`N \cdot` ``gather_chunk`` floats beyond the result
            (default: ``16``).
    """

    def __init__(self, shards: GraphShards, gather_chunk: int = 16) -> None:
        self.shards = shards
        self.actors = shards.actors
        m = shards.manifest
        self.num_rows = m.num_nodes
        self.num_components = m.num_components
        self.dtype = torch.float64 if shards.dtype == "float64" else torch.float32
        self.shared = m.shared_components > 0
        self.gather_chunk = int(gather_chunk)
        self.calls = 0

    def _each(self, method: str, *per_shard: Sequence[Any], **common: Any) -> list[Any]:
        """``actor_p.method(per_shard[0][p], per_shard[1][p], ..., **common)`` for every p."""
        self.calls += 1
        return [getattr(a, method).remote(*(args[p] for args in per_shard), **common)
                for p, a in enumerate(self.actors)]

    def _sum(self, refs: list[Any]) -> np.ndarray:
        parts = self.shards.get(refs)
        return np.sum(parts, axis=0)

    # ------------------------------------------------------------------ protocol

    def random(self, cols: int, seed: int) -> ShardedBlock:
        return ShardedBlock([a.random.remote(seed, cols) for a in self.actors], cols)

    def matmul(self, x: ShardedBlock) -> ShardedBlock:
        p = len(self.actors)
        self.calls += 1
        if p == 1:
            return ShardedBlock([self.actors[0].matmul.remote(x.refs[0])], x.cols)
        exports = [a.export.options(num_returns=p).remote(x.refs[i])
                   for i, a in enumerate(self.actors)]
        out = [a.matmul.remote(x.refs[q], *[exports[i][q] for i in range(p) if i != q])
               for q, a in enumerate(self.actors)]
        return ShardedBlock(out, x.cols)

    def combine(self, terms: Sequence[tuple[ShardedBlock, Coefficient]]) -> ShardedBlock:
        if not terms:
            raise ValueError("combine needs at least one term")
        coefs = [c if np.ndim(c) == 0 else np.asarray(c, dtype=np.float64) for _, c in terms]
        first = terms[0][1]
        cols = terms[0][0].cols if np.ndim(first) == 0 else int(np.shape(first)[1])
        self.calls += 1
        refs = [a.combine.remote(coefs, *[b.refs[p] for b, _ in terms])
                for p, a in enumerate(self.actors)]
        return ShardedBlock(refs, cols)

    def take(self, x: ShardedBlock, columns: np.ndarray) -> ShardedBlock:
        columns = np.asarray(columns, dtype=np.int64)
        self.calls += 1
        return ShardedBlock([a.take.remote(x.refs[p], columns)
                             for p, a in enumerate(self.actors)], int(columns.size))

    def gram(self, left: Sequence[ShardedBlock], right: Sequence[ShardedBlock]) -> np.ndarray:
        same = len(left) == len(right) and all(a is b for a, b in zip(left, right))
        self.calls += 1
        refs = []
        for p, a in enumerate(self.actors):
            blocks = [b.refs[p] for b in left] + ([] if same else [b.refs[p] for b in right])
            refs.append(a.gram.remote(len(left), *blocks))
        return self._sum(refs)

    def sq_norms(self, x: ShardedBlock) -> np.ndarray:
        return self._sum(self._each("sq_norms", x.refs))

    def deflate(self, x: ShardedBlock) -> ShardedBlock:
        if self.num_components == 0:
            return x
        if not self.shared:
            return ShardedBlock(self._each("deflate", x.refs), x.cols)
        parts = self.shards.get(self._each("shared_sums", x.refs))
        ids = np.concatenate([i for i, _ in parts])
        sums = np.concatenate([s for _, s in parts], axis=0)
        uniq, slot = np.unique(ids, return_inverse=True)
        totals = np.zeros((uniq.size, x.cols))
        np.add.at(totals, slot, sums)
        per_shard = [totals[np.searchsorted(uniq, i)] for i, _ in parts]
        return ShardedBlock(self._each("deflate", x.refs, per_shard), x.cols)

    def null_block(self, cols: int) -> ShardedBlock:
        return ShardedBlock([a.null_block.remote(cols) for a in self.actors], cols)

    def gather(self, x: ShardedBlock, out: np.ndarray | None = None, col: int = 0
               ) -> np.ndarray:
        if out is None:
            out, col = np.empty((self.num_rows, x.cols), dtype=np.float64), 0
        for p, a in enumerate(self.actors):
            rows = self.shards.get(a.old_ids_of_rows.remote())
            for lo in range(0, x.cols, self.gather_chunk):
                hi = min(lo + self.gather_chunk, x.cols)
                part = self.shards.get(a.get_rows.remote(x.refs[p], lo, hi))
                out[rows, col + lo:col + hi] = part
                del part
            del rows
        return out

    def cols(self, x: ShardedBlock) -> int:
        return x.cols


class InducedBlockSpace(ShardedBlockSpace):
    r""":class:`ShardedBlockSpace` restricted to the subgraph induced by ``nodes``, a union of
    whole connected components: blocks are zero outside ``nodes``, and :math:`\mathbf{S}`,
    the row-local operations and the deflation (the other components' :math:`y_C^\top X`
    vanish) keep them so, so the shards' operator acts as the subgraph's
    :math:`\mathbf{S}_{UU}`. :meth:`random` numbers the rows as the subgraph does (position in
    ``nodes``), the trivial basis is that of its components, and :meth:`gather` returns the
    :math:`(|U|, b)` rows of ``nodes``: the solve of a single process on that subgraph.

    Args:
        shards: started actors of the whole graph's partition (operator served).
        nodes (ndarray): :math:`(n',)` sorted original ids.
        components (ndarray): their distinct component ids, ascending (the partition's
            labelling).
    """

    def __init__(self, shards: GraphShards, nodes: np.ndarray, components: np.ndarray,
                 gather_chunk: int = 16) -> None:
        super().__init__(shards, gather_chunk)
        self.nodes = np.asarray(nodes, dtype=np.int64)
        self.components = np.asarray(components, dtype=np.int64)
        self.num_rows = int(self.nodes.size)
        self.num_components = int(self.components.size)

    def random(self, cols: int, seed: int) -> ShardedBlock:
        return ShardedBlock([a.random_within.remote(seed, cols, self.nodes)
                             for a in self.actors], cols)

    def null_block(self, cols: int) -> ShardedBlock:
        return ShardedBlock([a.null_block_of.remote(self.components[:cols])
                             for a in self.actors], cols)

    def gather(self, x: ShardedBlock, out: np.ndarray | None = None, col: int = 0
               ) -> np.ndarray:
        # N x b for a moment (the chunked gather writes rows by original id), then the n' rows
        full = super().gather(x, np.empty((self.shards.manifest.num_nodes, x.cols)), 0)
        rows = full[self.nodes]
        if out is None:
            return rows
        out[:, col:col + x.cols] = rows
        return out


def sharded_eigenpairs(shards: GraphShards, k: int, *, method: str = "chebyshev",
                       tol: float = 1e-5, maxiter: int = 500, seed: int = 0,
                       block: int | None = None, max_matvecs: int | None = None,
                       subspace_tol: float | None = None, progress: bool = False,
                       **options: Any) -> Any:
    r"""The :math:`k` smallest eigenpairs of the normalized Laplacian of a sharded graph.

    The graph's :math:`\mathbf{S}` and every :math:`N`-sized block stay in the shard actors and
    Ray's object store; the driver holds :math:`b \times b` and :math:`3b \times 3b` matrices
    until the eigenvectors are gathered at the end. Same solvers, same starting block and (for
    one shard) the same arithmetic as the single-process ``solver="chebyshev"`` /
    ``"lobpcg-block"`` backends of :func:`~distgcl.spectral.eigensolvers.smallest_eigenpairs`.

    Args:
        shards (GraphShards): started actors of the partition.
        k (int): eigenpairs.
        method (str, optional): ``chebyshev | lobpcg`` (default: ``chebyshev``).
        tol, maxiter, seed, block, max_matvecs, subspace_tol, progress, **options: as
            :func:`~distgcl.spectral.block.block_eigenpairs` (``subspace_tol``: stop on the
            subspace, ``max_matvecs`` the ceiling; ``details["stop_reason"]`` says which).

    Returns:
        Eigenpairs: eigenvalues of :math:`\mathbf{L}` ascending, eigenvectors :math:`(N, k)` in
        the original node order, residuals, iterations, seconds (``solver`` is
        ``sharded-<method>``).
    """
    space = ShardedBlockSpace(shards)
    return block_eigenpairs(space, k, method=method, tol=tol, maxiter=maxiter, seed=seed,
                            block=block, max_matvecs=max_matvecs, subspace_tol=subspace_tol,
                            progress=progress, solver_name=f"sharded-{method}", **options)


__all__ = ["InducedBlockSpace", "ShardedBlock", "ShardedBlockSpace", "sharded_eigenpairs"]
