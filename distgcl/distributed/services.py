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
    attached: dict[str, Any] | None = None
    """The job's shard actors (:meth:`JobShards.handoff`): used when they serve the operator of
    the graph asked for in the dtype asked for; else (or none) the solver partitions
    ``adjacency`` and starts actors of its own, as before."""

    @property
    def cache_tag(self) -> str:
        return f"sharded-p{self.num_shards}"

    def __call__(self, adjacency: sp.spmatrix, k: int, *, solver: str, tol: float,
                 maxiter: int, seed: int, pad: int | None = None,
                 max_matvecs: int | None = None, dtype: Any = np.float64,
                 progress: bool = False, subspace_tol: float | None = None) -> Any:
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
        m = k - self.attached["num_components"] if self._attached_fits(adj, dtype) else None
        if m is not None:
            return self.attached_eigenpairs(k, solver=solver, tol=tol, maxiter=maxiter,
                                            seed=seed, pad=pad, max_matvecs=max_matvecs,
                                            dtype=dtype, progress=progress,
                                            subspace_tol=subspace_tol)
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
                                     progress=progress, subspace_tol=subspace_tol)
            shard_rss = shards.peak_rss_mb()
        eig.details.update({
            "shards": self.num_shards, "partition_seconds": round(partition_seconds, 2),
            "shard_start_seconds": round(start_seconds, 2), "order": manifest.order["method"],
            "cut_fraction": round(manifest.order["cut_fraction"], 4),
            "shard_peak_rss_mb": [round(r, 1) for r in shard_rss],
            "solver_process_rss_rise_mb": round(peak_rss_mb() - rss_before, 1)})
        return eig

    def serves_attached(self, dtype: Any) -> bool:
        """The job's actors hold the whole graph's operator in ``dtype``: then
        :meth:`attached_eigenpairs` needs no adjacency from the caller."""
        a = self.attached
        return bool(a) and a["serve"] in ("all", "operator") and \
            a["dtype"] == np.dtype(dtype).name

    def attached_eigenpairs(self, k: int, *, solver: str, tol: float, maxiter: int, seed: int,
                            pad: int | None = None, max_matvecs: int | None = None,
                            dtype: Any = np.float64, progress: bool = False,
                            subspace_tol: float | None = None,
                            nodes: np.ndarray | None = None) -> Any:
        r"""The :math:`k` smallest eigenpairs of the **whole** graph the job's shard actors hold
        (:attr:`attached`), trivial ones of its components first, as ``__call__`` on its
        adjacency but without one: for a caller holding no graph (E2Neg from a graph store).

        ``nodes`` (sorted original ids :math:`(n',)`, a union of whole components, e.g. the
        components E2Neg clusters): the pairs of the subgraph they induce instead
        (:class:`~distgcl.distributed.linalg.InducedBlockSpace`), eigenvectors
        :math:`(n', k)` in the order of ``nodes``, as ``__call__`` on that subgraph's
        adjacency. ValueError unless :meth:`serves_attached`, or if ``nodes`` splits a
        component."""
        from distgcl.distributed.linalg import InducedBlockSpace, sharded_eigenpairs
        from distgcl.spectral.block import block_eigenpairs
        from distgcl.spectral.eigensolvers import block_width

        method = BLOCK_METHODS.get(solver)
        if method is None:
            raise ConfigError(f"dist.shards needs a block eigensolver: e2neg.solver must be one "
                              f"of {', '.join(BLOCK_METHODS)} (got {solver!r})")
        if not self.serves_attached(dtype):
            raise ValueError(f"no attached shard actors serving the operator in "
                             f"{np.dtype(dtype).name}")
        assert self.attached is not None
        shards = AttachedShards.of(self.attached)
        options = dict(method=method, tol=tol, maxiter=maxiter, seed=seed,
                       max_matvecs=max_matvecs, progress=progress, subspace_tol=subspace_tol)
        if nodes is None:
            m = k - int(self.attached["num_components"])
            eig = sharded_eigenpairs(shards, k, block=block_width(solver, m, pad)
                                     if m > 0 else None, **options)
        else:
            nodes = np.asarray(nodes, dtype=np.int64)
            space = InducedBlockSpace(shards, nodes, _whole_components(shards.components(),
                                                                       nodes))
            m = k - space.num_components
            eig = block_eigenpairs(space, k, block=block_width(solver, m, pad)
                                   if m > 0 else None, solver_name=f"sharded-{method}",
                                   **options)
        eig.details.update({"shards": self.num_shards, "job_shards": True,
                            "shard_peak_rss_mb": [round(r, 1) for r in shards.peak_rss_mb()]})
        return eig

    def attached_components(self) -> np.ndarray:
        """Component id of every node of the graph the job's shard actors hold, :math:`(N,)`
        int64 in original id order, numbered as scipy's ``connected_components`` numbers them
        on that graph (by smallest original id: the partition's labelling). ValueError unless
        the actors serve the operator (which holds the labels)."""
        a = self.attached
        if not a or a["serve"] not in ("all", "operator"):
            raise ValueError("no attached shard actors serving the operator (component labels)")
        return AttachedShards.of(a).components()

    def _attached_fits(self, adj: sp.csr_matrix, dtype: Any) -> bool:
        """The job's actors serve this operator: same size and stored entries as the
        partitioned graph's symmetric adjacency (E2Neg asks for the whole graph's; a component
        subgraph is partitioned anew), operator loaded, same dtype."""
        a = self.attached
        return bool(a) and a["serve"] in ("all", "operator") and \
            a["dtype"] == np.dtype(dtype).name and adj.shape[0] == a["num_nodes"] and \
            adj.nnz == a["nnz"]


class AttachedShards:
    """The driver-side view of already started shard actors (what
    :class:`~distgcl.distributed.linalg.ShardedBlockSpace` reads of a
    :class:`~distgcl.distributed.shards.GraphShards`), without starting or stopping them."""

    def __init__(self, actors: list[Any], manifest: Any, dtype: str, timeout: float) -> None:
        self.actors, self.manifest, self.dtype, self.timeout = actors, manifest, dtype, timeout

    @classmethod
    def of(cls, handoff: dict[str, Any]) -> "AttachedShards":
        from distgcl.distributed.partition import load_manifest

        return cls(list(handoff["actors"]), load_manifest(handoff["manifest_path"]),
                   handoff["dtype"], float(handoff.get("timeout", 600.0)))

    def get(self, refs: Any) -> Any:
        import ray

        return ray.get(refs, timeout=self.timeout)

    def peak_rss_mb(self) -> list[float]:
        return self.get([a.peak_rss_mb.remote() for a in self.actors])

    def components(self) -> np.ndarray:
        """Component id of every node :math:`(N,)` (as
        :meth:`~distgcl.distributed.shards.GraphShards.components`)."""
        from distgcl.distributed.shards import gather_components

        return gather_components(self.get([a.component_rows.remote() for a in self.actors]),
                                 self.manifest.num_nodes)


def _whole_components(labels: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The distinct component ids of ``nodes`` (ascending); ValueError if ``nodes`` is not
    sorted and unique or holds only part of a component."""
    if nodes.size and (nodes[0] < 0 or nodes[-1] >= labels.size or
                       np.any(np.diff(nodes) <= 0)):
        raise ValueError("nodes must be sorted, unique original ids of the graph")
    ids, counts = np.unique(labels[nodes], return_counts=True)
    if not np.array_equal(counts, np.bincount(labels, minlength=ids.max(initial=-1) + 1)[ids]):
        raise ValueError("nodes must be a union of whole connected components")
    return ids


OPERATOR_METHODS = ("e2neg",)
"""Methods whose sharded step needs the operator rows (the spectral step) besides sampling."""


@dataclass
class JobShards:
    r"""The graph-shard actors of one job, started by the driver before the worker group (so
    they outlive a worker-group restart) and stopped when the job ends.

    :meth:`start` partitions the dataset (:func:`partition_for_job`: from its raw files in
    chunks where a streaming reader exists, else loaded whole; reusing the cached partition of
    the same content under ``cache_root/partitions``) and starts ``dist.shards`` actors serving sampling and
    features (and the operator for :data:`OPERATOR_METHODS`, in the method's spectral dtype).
    :meth:`handoff` is what a worker needs (picklable: actor handles, bounds, sizes, the
    ``dataset_info``), plus ``partitioned_from`` (``stream`` / ``loaded``) and the driver's
    ``driver_peak_rss_mb`` after partitioning;
    :func:`graph_services_from_handoff` turns it into the worker's
    :class:`~distgcl.work.GraphServices`.
    """

    shards: Any
    handoff_info: dict[str, Any]

    @classmethod
    def start(cls, config: Any, cache_root: Path, timeout: float = 600.0) -> "JobShards":
        from distgcl.distributed.shards import GraphShards

        manifest, info, how = partition_for_job(config, cache_root / "partitions")
        operator = config.method in OPERATOR_METHODS
        dtype = getattr(config.section(config.method), "spectral_dtype", "float64") \
            if operator else "float32"
        serve = "all" if operator else "sampling"
        # no CPU reservation: the actors answer while the training workers wait on them
        shards = GraphShards(manifest, dtype=dtype, num_cpus=0, threads=1, serve=serve,
                             timeout=timeout, resources=config.dist.shard_resources)
        return cls(shards, {
            "actors": list(shards.actors), "bounds": list(manifest.bounds),
            "num_features": manifest.num_features, "num_classes": int(info.num_classes),
            "multilabel": bool(info.multilabel), "manifest_path": str(manifest.path),
            "dtype": dtype, "serve": serve, "num_nodes": manifest.num_nodes,
            "nnz": manifest.nnz, "num_components": manifest.num_components,
            "timeout": timeout, "dataset_info": info, "partitioned_from": how,
            "driver_peak_rss_mb": round(peak_rss_mb(), 1)})

    def handoff(self) -> dict[str, Any]:
        return dict(self.handoff_info)

    def shutdown(self) -> None:
        self.shards.shutdown()


STREAM_ORDER = "identity"
"""Node order of a streamed job partition (:data:`~distgcl.distributed.partition.STREAM_ORDERS`:
contiguous ranges of the input ids; METIS and RCM need the whole graph)."""


def partition_for_job(config: Any, root: Path) -> tuple[Any, Any, str]:
    """The job's partition under ``root`` (reused when cached), its
    :class:`~distgcl.data.DatasetInfo`, and how it was built: ``"stream"`` (the raw files read
    in chunks by :func:`~distgcl.distributed.partition.stream_partition`, order
    :data:`STREAM_ORDER`: no process holds the graph) where :func:`~distgcl.data.sources.
    graph_source` has a reader, else ``"loaded"`` (the dataset loaded whole, then
    :func:`~distgcl.distributed.partition.partition_graph`, order ``auto``; one line says so)."""
    from distgcl.data.sources import stream_plan
    from distgcl.distributed.partition import stream_partition

    plan = stream_plan(config.data)
    if not isinstance(plan, str):
        source, info = plan
        manifest = stream_partition(source, config.dist.shards, root, order=STREAM_ORDER,
                                    seed=config.train.seed)
        return manifest, info, "stream"
    print(f"dist.shards: the driver loads {config.data.name} whole to partition it ({plan})",
          flush=True)
    return (*_loaded_partition(config, root), "loaded")


def _loaded_partition(config: Any, root: Path) -> tuple[Any, Any]:
    """:func:`~distgcl.data.load_from_config` then
    :func:`~distgcl.distributed.partition.partition_graph` (the small datasets)."""
    from distgcl.data import load_from_config
    from distgcl.distributed.partition import partition_graph

    dataset = load_from_config(config.data, seed=config.train.seed)
    data = dataset.data
    manifest = partition_graph(data.edge_index, data.num_nodes, config.dist.shards, root,
                               x=data.x, y=getattr(data, "y", None), seed=config.train.seed)
    return manifest, dataset.info()


def graph_services_from_handoff(handoff: dict[str, Any] | None, num_shards: int,
                                cache_root: Path) -> Any:
    """A worker's :class:`~distgcl.work.GraphServices`: with the job's shards (``handoff``) a
    :class:`~distgcl.store.ShardedGraphStore` over them and E2Neg's eigensolver on the same
    actors; without, the eigensolver partitions and starts its own (the old behaviour)."""
    from distgcl.store import ShardedGraphStore
    from distgcl.work import GraphServices

    root = str(cache_root / "partitions")
    if not handoff:
        return GraphServices(eigensolver=ShardedEigensolver(root, num_shards))
    h = handoff
    store = ShardedGraphStore(h["actors"], h["bounds"], h["num_features"], h["num_classes"],
                              h["multilabel"], timeout=min(float(h["timeout"]), 120.0),
                              manifest_path=h["manifest_path"])
    return GraphServices(eigensolver=ShardedEigensolver(root, num_shards, attached=h),
                         store=store, dataset_info=h.get("dataset_info"))


__all__ = ["AttachedShards", "JobShards", "OPERATOR_METHODS", "STREAM_ORDER",
           "ShardedEigensolver", "graph_services_from_handoff", "partition_for_job"]
