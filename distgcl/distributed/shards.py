r"""Graph shards as Ray actors: each :class:`GraphShard` serves one row block of a partition
written by :func:`~distgcl.distributed.partition.partition_graph`.

An actor loads its shard file in ``__init__`` and verifies the file's sha256 against the
manifest (a mismatch is a :class:`~distgcl.distributed.partition.ShardChecksumError`). Its whole
state comes from the constructor arguments and that verified file, so when the actor process dies
Ray restarts it (``max_restarts``) into an identical state, and because every method is a pure
function of its arguments and that state, Ray may re-run a call that was in flight
(``max_task_retries``) and get the same answer.

Methods serve the rest of the system:

* block linear algebra for :class:`~distgcl.distributed.linalg.ShardedBlockSpace`: the rows of
  :math:`\mathbf{S}\mathbf{X}` from the rows of :math:`\mathbf{X}` it owns plus its halo rows,
  linear combinations, partial Gram matrices, deflation of the trivial eigenvectors (blocks are
  numpy arrays in Ray's object store, passed in and returned, never kept in the actor);
* neighbour sampling for :class:`~distgcl.distributed.sampling.ShardedNeighborSampler`: in-degrees
  and selected in-edges of given nodes, which original ids it owns, feature rows;
* layer-wise GCN inference for :mod:`distgcl.distributed.inference` (``infer_*``): its rows of
  every layer from its rows and its halo rows of the layer before, exchanged shard to shard
  through the object store. These are the only stateful methods (the current layer stays in the
  actor); a restarted actor answers them with :class:`InferenceStateLost` and the driver starts
  the pass again;
* introspection: its pid, its peak RSS, a digest of the data it holds.

:class:`GraphShards` is the driver-side handle: it starts the :math:`P` actors of a manifest,
waits until they are ready (turning a checksum failure into a
:class:`~distgcl.distributed.partition.ShardChecksumError`), and shuts them down.
"""
from __future__ import annotations

import hashlib
import os
import resource
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import ray
import torch

from distgcl.distributed.partition import (OPERATOR_KEYS, SAMPLING_KEYS, Manifest,
                                           ShardChecksumError, load_manifest, load_shard)
from distgcl.spectral.block import Coefficient, combine_tensors, gram_tensors, hashed_normal, spmm

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
SERVE = ("all", "operator", "sampling")


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A torch view of a (possibly read-only, object-store backed) numpy array; the kernels
    never write into their inputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.asarray(a))


class InferenceStateLost(RuntimeError):
    """A shard has no state of the inference pass it was asked about (it was restarted)."""


class GraphShardServer:
    r"""The state and methods of one graph shard (the class behind the :data:`GraphShard` actor;
    usable in-process as well).

    Args:
        manifest_path (str): the partition's ``manifest.json`` (or its directory).
        index (int): the shard :math:`p`.
        dtype (str, optional): ``float64 | float32``, precision of :math:`\mathbf{S}` and of
            the blocks it produces (default: ``float64``).
        threads (int, optional): torch threads of this process (default: torch's default).
        chunk (int, optional): columns per sparse product (default: ``16``).
        serve (str, optional): ``all | operator | sampling``: load only what the spectral step
            (operator) or the sampler needs; the whole file is checksummed either way
            (default: ``all``).
    """

    def __init__(self, manifest_path: str, index: int, dtype: str = "float64",
                 threads: int | None = None, chunk: int = 16, serve: str = "all") -> None:
        if threads is not None:
            torch.set_num_threads(int(threads))
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        if serve not in SERVE:
            raise ValueError(f"unknown serve {serve!r}; known: {', '.join(SERVE)}")
        self.dtype = _DTYPES[dtype]
        self.chunk = int(chunk)
        self.serve = serve
        self.manifest: Manifest = load_manifest(manifest_path)
        self.index = int(index)
        keys = {"all": None, "operator": OPERATOR_KEYS, "sampling": SAMPLING_KEYS}[serve]
        arrays = load_shard(self.manifest, self.index, verify=True, keys=keys)
        self._digest = _arrays_digest(arrays)
        self.lo, self.hi = (int(v) for v in arrays["rows"])
        self.num_rows = self.hi - self.lo
        self.old_ids = arrays["old_ids"].astype(np.int64)
        self.s: torch.Tensor | None = None
        self.in_indptr: torch.Tensor | None = None
        if serve in ("all", "operator"):
            self._build_operator(arrays)
        if serve in ("all", "sampling"):
            self._build_sampling(arrays)

    def _build_operator(self, arrays: dict[str, np.ndarray]) -> None:
        """The operator rows: S = D^-1/2 A D^-1/2 with columns relabelled own rows first, then
        the halo; the trivial-eigenvector entries; the send lists."""
        bounds = np.asarray(self.manifest.bounds)
        p = self.manifest.num_shards
        halo = arrays.pop("halo").astype(np.int64)
        indices = arrays.pop("adj_indices")
        n_ext = self.num_rows + halo.size
        index_np = np.int32 if max(indices.size, n_ext) < 2**31 - 1 else np.int64
        local = np.empty(indices.size, dtype=index_np)
        own = (indices >= self.lo) & (indices < self.hi)
        local[own] = indices[own] - self.lo
        remote = ~own
        local[remote] = self.num_rows + np.searchsorted(halo, indices[remote])
        del own, remote, indices
        deg = arrays["degree"]
        np_dtype = _np_dtype(self.dtype)
        inv_row = (1.0 / np.sqrt(np.where(deg == 0, 1.0, deg))).astype(np_dtype)
        inv_col = np.concatenate([inv_row, (1.0 / np.sqrt(np.maximum(arrays["halo_degree"], 1.0))
                                            ).astype(np_dtype)])
        indptr = arrays.pop("adj_indptr")
        rows = np.repeat(np.arange(self.num_rows, dtype=index_np), np.diff(indptr))
        values = inv_row[rows]
        del rows
        values *= inv_col[local]
        index_dtype = torch.int32 if index_np == np.int32 else torch.int64
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            self.s = torch.sparse_csr_tensor(
                torch.from_numpy(indptr).to(index_dtype), torch.from_numpy(local),
                torch.from_numpy(values), size=(self.num_rows, n_ext), check_invariants=False)
        del local, values
        self.isolated = torch.from_numpy(deg == 0)
        self.any_isolated = bool(self.isolated.any())
        # halo rows arrive grouped by owner (ascending), each group sorted: the halo order.
        self.halo_size = int(halo.size)
        cuts = np.searchsorted(halo, bounds)
        self.halo_counts = [int(cuts[q + 1] - cuts[q]) for q in range(p)]
        send_ptr, send = arrays["send_ptr"], arrays["send"].astype(np.int64)
        self.send = [torch.from_numpy(send[send_ptr[q]:send_ptr[q + 1]] - self.lo)
                     for q in range(p)]
        # trivial eigenvectors: component of every row, its entry, and which components have
        # rows on other shards (those need a global sum; the others are summed here)
        self.component = arrays["component"].astype(np.int64)
        self.trivial = torch.from_numpy(arrays["trivial"].astype(np.float64))
        shared = arrays["component_shared"].astype(bool)
        self.local_ids, self.y_local = self._indicator(~shared)
        self.shared_ids, self.y_shared = self._indicator(shared)

    def _indicator(self, rows: np.ndarray) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
        r"""The trivial eigenvectors restricted to ``rows`` as a sparse :math:`(n_p, c')` matrix
        :math:`\mathbf{Y}` (one entry per selected row) and its transpose, so that
        :math:`\mathbf{Y}^\top X` and :math:`\mathbf{Y}G` are sparse products (no fancy
        indexing of the block): ``(component ids, (Y, Y^T))``."""
        ids, slot = np.unique(self.component[rows], return_inverse=True)
        coo = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([np.flatnonzero(rows), slot])),
            self.trivial[torch.from_numpy(rows)], (self.num_rows, ids.size)).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            return ids, (coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())

    def _build_sampling(self, arrays: dict[str, np.ndarray]) -> None:
        """In-edge lists, the original-id lookup, features and labels."""
        self._old_order = np.argsort(self.old_ids, kind="stable")
        self._old_sorted = self.old_ids[self._old_order]
        self.in_indptr = torch.from_numpy(arrays["in_indptr"])
        self.in_src_new = torch.from_numpy(arrays["in_src_new"])
        self.in_src_old = torch.from_numpy(arrays["in_src_old"])
        self.in_eid = torch.from_numpy(arrays["in_eid"])
        self.x = torch.from_numpy(arrays["x"]) if "x" in arrays else None
        self.y = torch.from_numpy(arrays["y"]) if "y" in arrays else None

    def _need(self, part: str) -> None:
        if (self.s if part == "operator" else self.in_indptr) is None:
            raise RuntimeError(f"shard {self.index} was started with serve={self.serve!r}: "
                               f"it does not serve the {part}")

    # ------------------------------------------------------------------ introspection

    def info(self) -> dict[str, Any]:
        """Index, pid, node range, sizes, and the digest of the loaded arrays."""
        return {"index": self.index, "pid": os.getpid(), "rows": [self.lo, self.hi],
                "serve": self.serve,
                "nnz": None if self.s is None else int(self.s.values().numel()),
                "halo": getattr(self, "halo_size", None),
                "in_edges": None if self.in_indptr is None else int(self.in_src_new.numel()),
                "digest": self._digest, "dtype": str(self.dtype).replace("torch.", "")}

    def pid(self) -> int:
        return os.getpid()

    def peak_rss_mb(self) -> float:
        """Peak resident set size of this actor process (MB)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def memory_mb(self) -> dict[str, float]:
        """Current RSS, USS (private pages: what this actor alone holds; RSS also counts the
        shared object-store pages it has read) and peak RSS of this process (MB)."""
        import psutil

        info = psutil.Process().memory_full_info()
        return {"rss": info.rss / 2**20, "uss": info.uss / 2**20,
                "peak_rss": self.peak_rss_mb()}

    def data_digest(self) -> str:
        """sha256 over every array loaded from the shard file (identical after a restart)."""
        return self._digest

    def old_ids_of_rows(self) -> np.ndarray:
        """Original ids of the rows, in row order."""
        return self.old_ids

    # ------------------------------------------------------------------ block linear algebra

    def random(self, seed: int, cols: int) -> np.ndarray:
        """Rows of :func:`~distgcl.spectral.block.hashed_normal` (original ids)."""
        return hashed_normal(seed, self.old_ids, cols).astype(_np_dtype(self.dtype))

    def export(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """For every shard ``q`` the rows of ``x`` that ``q``'s halo needs (empty for itself)."""
        self._need("operator")
        t = _tensor(x)
        parts = tuple(t.index_select(0, s).numpy() if s.numel() else
                      np.zeros((0, t.shape[1]), dtype=x.dtype) for s in self.send)
        return parts if len(parts) > 1 else parts[0]  # type: ignore[return-value]

    def matmul(self, x: np.ndarray, *halo_parts: np.ndarray) -> np.ndarray:
        r"""Its rows of :math:`\mathbf{S}\mathbf{X}`: ``x`` its own rows, ``halo_parts`` the
        exports of the other shards (ascending shard order, itself left out)."""
        self._need("operator")
        parts = [_tensor(x)] + [_tensor(h) for h in halo_parts]
        ext = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if ext.shape[0] != self.num_rows + self.halo_size:
            raise ValueError(f"shard {self.index}: got {ext.shape[0]} rows, expected "
                             f"{self.num_rows} own + {self.halo_size} halo")
        out = spmm(self.s, ext, self.chunk)
        if self.any_isolated:
            out[self.isolated] += _tensor(x)[self.isolated]  # S_ii = 1 for isolated nodes
        return out.numpy()

    def combine(self, coefs: Sequence[Coefficient], *blocks: np.ndarray) -> np.ndarray:
        return combine_tensors([(_tensor(b), c) for b, c in zip(blocks, coefs)]).numpy()

    def take(self, x: np.ndarray, columns: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x)[:, np.asarray(columns, dtype=np.int64)])

    def gram(self, num_left: int, *blocks: np.ndarray) -> np.ndarray:
        """Partial :math:`[X_i]^\\top[Y_j]` over its rows; ``blocks`` = lefts then rights (no
        rights: the lefts again)."""
        left = [_tensor(b) for b in blocks[:num_left]]
        right = [_tensor(b) for b in blocks[num_left:]] or left
        return gram_tensors(left, right)

    def sq_norms(self, x: np.ndarray) -> np.ndarray:
        return (_tensor(x).double() ** 2).sum(0).numpy()

    def _sums(self, y: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            return torch.sparse.mm(y[1], x)

    def shared_sums(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Partial :math:`y_C^\top X` over its rows, for the components it shares with other
        shards: ``(component ids, sums (c_shared, b))`` (float64)."""
        self._need("operator")
        if not self.shared_ids.size:
            return self.shared_ids, np.zeros((0, np.shape(x)[1]))
        return self.shared_ids, self._sums(self.y_shared, _tensor(x).double()).numpy()

    def deflate(self, x: np.ndarray, shared_totals: np.ndarray | None = None) -> np.ndarray:
        r"""Its rows of :math:`X - \mathbf{Y}(\mathbf{Y}^\top X)`; ``shared_totals`` are the
        global :math:`y_C^\top X` of its shared components (order of :meth:`shared_sums`), the
        others are summed here. The correction is computed in float64."""
        self._need("operator")
        t = _tensor(x)
        x64 = t.double()
        correction = torch.zeros_like(x64)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            if self.local_ids.size:
                correction += torch.sparse.mm(self.y_local[0], self._sums(self.y_local, x64))
            if self.shared_ids.size:
                if shared_totals is None:
                    raise ValueError(f"shard {self.index} shares components: pass their totals")
                totals = torch.from_numpy(np.asarray(shared_totals, dtype=np.float64))
                correction += torch.sparse.mm(self.y_shared[0], totals)
        return (x64 - correction).to(t.dtype).numpy()

    def null_block(self, cols: int) -> np.ndarray:
        """Its rows of the first ``cols`` trivial eigenvectors (by component id)."""
        out = np.zeros((self.num_rows, cols), dtype=_np_dtype(self.dtype))
        keep = self.component < cols
        out[np.flatnonzero(keep), self.component[keep]] = self.trivial.numpy()[keep]
        return out

    def component_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(original ids, component ids)`` of its rows, in row order. The labelling is the
        partition's global one (a component's id is the rank of its smallest original id, as
        scipy's ``connected_components`` numbers them on the original graph), so it agrees
        across shards."""
        self._need("operator")
        return self.old_ids, self.component

    def random_within(self, seed: int, cols: int, nodes: np.ndarray) -> np.ndarray:
        r"""Rows of :func:`~distgcl.spectral.block.hashed_normal` for the subgraph induced by
        ``nodes`` (sorted original ids): a row whose original id is ``nodes[i]`` gets row
        :math:`i` (the subgraph's own numbering, as a single process numbers it), the others
        zero. Shapes: ``nodes`` :math:`(n',)`, output :math:`(n_p, \text{cols})`."""
        nodes = np.asarray(nodes, dtype=np.int64)
        out = np.zeros((self.num_rows, cols), dtype=_np_dtype(self.dtype))
        if not nodes.size:
            return out
        pos = np.searchsorted(nodes, self.old_ids)
        inside = np.flatnonzero(nodes[np.minimum(pos, nodes.size - 1)] == self.old_ids)
        out[inside] = hashed_normal(seed, pos[inside], cols)
        return out

    def null_block_of(self, components: np.ndarray) -> np.ndarray:
        r"""Its rows of the trivial eigenvectors of ``components`` (column :math:`j`:
        :math:`y_{C_j}` with :math:`C_j` = ``components[j]``, distinct ids)."""
        self._need("operator")
        comps = np.asarray(components, dtype=np.int64)
        out = np.zeros((self.num_rows, comps.size), dtype=_np_dtype(self.dtype))
        if not comps.size:
            return out
        order = np.argsort(comps)
        pos = np.minimum(np.searchsorted(comps[order], self.component), comps.size - 1)
        hit = np.flatnonzero(comps[order][pos] == self.component)
        out[hit, order[pos[hit]]] = self.trivial.numpy()[hit]
        return out

    def get_rows(self, x: np.ndarray, col_lo: int = 0, col_hi: int | None = None) -> np.ndarray:
        """Columns ``col_lo:col_hi`` of its rows of ``x`` as float64 (for gathering)."""
        return np.asarray(x)[:, col_lo:col_hi].astype(np.float64)

    # ------------------------------------------------------------------ sampling and features

    def locate(self, old_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``old_ids`` (original ids) it owns: ``(positions in old_ids, new ids)``."""
        self._need("sampling")
        old = np.asarray(old_ids, dtype=np.int64)
        pos = np.searchsorted(self._old_sorted, old)
        pos = np.minimum(pos, max(self._old_sorted.size - 1, 0))
        hit = np.flatnonzero(self._old_sorted[pos] == old) if self._old_sorted.size else \
            np.zeros(0, dtype=np.int64)
        return hit, self.lo + self._old_order[pos[hit]]

    def in_degree(self, new_ids: np.ndarray) -> np.ndarray:
        """Number of in-edges (directed, as given to the partitioner) of its nodes ``new_ids``."""
        self._need("sampling")
        local = torch.as_tensor(np.asarray(new_ids, dtype=np.int64) - self.lo)
        return (self.in_indptr[local + 1] - self.in_indptr[local]).numpy()

    def in_edges(self, new_ids: np.ndarray, offsets: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``offsets[i]``-th in-edge of node ``new_ids[i]``:
        ``(source original ids, source new ids, edge ids)``."""
        self._need("sampling")
        local = torch.as_tensor(np.asarray(new_ids, dtype=np.int64) - self.lo)
        pos = self.in_indptr[local] + torch.as_tensor(np.asarray(offsets, dtype=np.int64))
        return (self.in_src_old[pos].long().numpy(), self.in_src_new[pos].long().numpy(),
                self.in_eid[pos].long().numpy())

    def features(self, old_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of the ``old_ids`` it owns: ``(positions in old_ids, rows)``."""
        if self.x is None:
            raise ValueError("this partition was written without features")
        hit, new = self.locate(old_ids)
        return hit, self.x[torch.from_numpy(new - self.lo)].numpy()

    def labels(self, old_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the ``old_ids`` it owns: ``(positions in old_ids, labels)``."""
        if self.y is None:
            raise ValueError("this partition was written without labels")
        hit, new = self.locate(old_ids)
        return hit, self.y[torch.from_numpy(new - self.lo)].numpy()

    # ------------------------------------------------------------------ layer-wise GCN inference
    # (driven by distgcl.distributed.inference). Unlike everything above, these methods keep
    # state between calls: the current layer's rows stay in the actor, so no process ever holds
    # a whole layer. A restarted actor has lost that state and says so (InferenceStateLost); the
    # driver then starts the pass again from the features.

    def _gcn_structure(self) -> dict[str, Any]:
        r"""Its rows of GCNConv's operator before the weights
        (:func:`~distgcl.nn.gcn_rows.gcn_row_structure`: the in-edges of its rows, self-loops
        dropped and one added per row, columns own rows first, then the *inference halo*,
        sorted by new id, so grouped by owner), :math:`\hat d` and, for every shard, the
        halo rows it owns. Recomputable from the shard file, so cached."""
        cached = getattr(self, "_gcn_struct", None)
        if cached is not None:
            return cached
        self._need("sampling")
        from distgcl.nn.gcn_rows import gcn_row_structure  # imports PyG: only for inference

        crow, col, deg_hat, halo = gcn_row_structure(self.in_indptr, self.in_src_new,
                                                     self.lo, self.hi)
        cuts = torch.searchsorted(halo, torch.tensor(self.manifest.bounds, dtype=torch.long))
        requests = [halo[cuts[q]:cuts[q + 1]].numpy() if q != self.index else
                    np.zeros(0, dtype=np.int64) for q in range(self.manifest.num_shards)]
        self._gcn_struct = {"crow": crow, "col": col, "deg_hat": deg_hat,
                            "halo_size": int(halo.numel()), "requests": requests}
        return self._gcn_struct

    def _parts(self, parts: list[np.ndarray]) -> Any:
        """``parts`` as a Ray multi-return (one object per shard; a single one when P = 1)."""
        return tuple(parts) if len(parts) > 1 else parts[0]

    def _session(self, session: str) -> dict[str, Any]:
        state = getattr(self, "_infer", None)
        if state is None or state["session"] != session:
            raise InferenceStateLost(f"shard {self.index} holds no state of inference pass "
                                     f"{session!r} (restarted?); run the pass again")
        return state

    def infer_halo_requests(self) -> Any:
        """For every shard ``q`` the new ids of ``q``'s rows its GCN rows need (own slot
        empty); :meth:`infer_begin` of shard ``q`` receives them."""
        return self._parts(self._gcn_structure()["requests"])

    def infer_begin(self, session: str, encoder: dict[str, Any], *requests: np.ndarray) -> Any:
        r"""Start pass ``session`` with ``encoder`` (``{"hparams", "state_dict"}`` of a
        :class:`~distgcl.nn.encoder.GCNEncoder`, rebuilt here in eval mode, so PReLU/RReLU act
        as they do at evaluation), :math:`\mathbf{H}^{(0)}` its feature rows. ``requests``:
        the other shards' :meth:`infer_halo_requests` addressed to it (ascending, itself left
        out). Returns, for every shard, the :math:`\hat d` of the rows it asked for."""
        from distgcl.nn.encoder import GCNEncoder

        if self.x is None:
            raise ValueError("this partition was written without features: nothing to embed")
        struct = self._gcn_structure()
        others = [q for q in range(self.manifest.num_shards) if q != self.index]
        if len(requests) != len(others):
            raise ValueError(f"shard {self.index}: got {len(requests)} halo requests, "
                             f"expected {len(others)}")
        send = [torch.zeros(0, dtype=torch.long) for _ in range(self.manifest.num_shards)]
        for q, req in zip(others, requests):
            send[q] = torch.as_tensor(np.asarray(req, dtype=np.int64)) - self.lo
        model = GCNEncoder(**encoder["hparams"])
        model.load_state_dict(encoder["state_dict"])
        model.eval()
        self._infer = {"session": session, "send": send, "model": model, "h": self.x,
                       "layer": 0, "op": None}
        return self._parts([struct["deg_hat"].index_select(0, s).numpy() for s in send])

    def infer_operator(self, session: str, *halo_degrees: np.ndarray) -> Any:
        r"""Build its rows of :math:`\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}
        \hat{\mathbf{D}}^{-1/2}` (CSR :math:`(n_p, n_p + h)`, float32 as ``gcn_norm`` on
        float32 features; weights in float64 first) from the other shards' :math:`\hat d`
        (ascending, itself left out), then return layer 0's exports (:meth:`infer_layer`)."""
        state = self._session(session)
        struct = self._gcn_structure()
        deg_ext = torch.cat([struct["deg_hat"]] + [_tensor(d).double() for d in halo_degrees])
        if deg_ext.numel() != self.num_rows + struct["halo_size"]:
            raise ValueError(f"shard {self.index}: got {deg_ext.numel() - self.num_rows} halo "
                             f"degrees, expected {struct['halo_size']}")
        from distgcl.nn.gcn_rows import gcn_row_values

        vals = gcn_row_values(struct["crow"], struct["col"], deg_ext.rsqrt())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
            state["op"] = torch.sparse_csr_tensor(
                struct["crow"], struct["col"], vals, (self.num_rows, deg_ext.numel()),
                check_invariants=False)
        return self._export_layer(state)

    def _aggregate_first(self, state: dict[str, Any], layer: int) -> bool:
        # as GCNEncoder.embed_sparse: multiply the operator by the narrower side
        lin = state["model"].convs[layer].lin
        return lin.in_channels < lin.out_channels

    @torch.no_grad()
    def _export_layer(self, state: dict[str, Any]) -> Any:
        r"""What the next layer exchanges (its rows of :math:`\mathbf{H}` or of
        :math:`\mathbf{H}\boldsymbol{\Theta}`, the narrower), kept as ``state["t"]``, and
        the rows of it each shard's halo needs."""
        layer, convs = state["layer"], state["model"].convs
        if layer == len(convs):
            state["t"] = None
            return self._parts([np.zeros((0, 0), dtype=np.float32) for _ in state["send"]])
        h = state["h"]
        t = h if self._aggregate_first(state, layer) else convs[layer].lin(h)
        state["t"] = t
        return self._parts([t.index_select(0, s).numpy() for s in state["send"]])

    @torch.no_grad()
    def infer_layer(self, session: str, layer: int, *halo_parts: np.ndarray) -> Any:
        r"""Its rows of layer ``layer + 1``,
        :math:`\sigma(\hat{\mathbf{A}}_p[\mathbf{H}_p; \mathbf{H}_\text{halo}]
        \boldsymbol{\Theta} + b)` (exactly the layer of ``GCNEncoder.embed_sparse``), from
        its rows and the other shards' exports of layer ``layer`` (ascending, itself left
        out); keeps them (dropping layer ``layer``) and returns their exports."""
        state = self._session(session)
        if layer != state["layer"]:
            raise ValueError(f"shard {self.index} is at layer {state['layer']}, got {layer}")
        model = state["model"]
        parts = [state["t"]] + [_tensor(h) for h in halo_parts]
        ext = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if ext.shape[0] != state["op"].shape[1]:
            raise ValueError(f"shard {self.index}: got {ext.shape[0]} rows, expected "
                             f"{state['op'].shape[1]} own + halo")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
            out = state["op"] @ ext
        conv = model.convs[layer]
        if self._aggregate_first(state, layer):
            out = conv.lin(out)
        if conv.bias is not None:
            out = out + conv.bias
        if layer < len(model.activations):
            out = model.activations[layer](out)
        state.update(h=out, t=None, layer=layer + 1)
        return self._export_layer(state)

    def infer_shape(self, session: str) -> tuple[int, int, int]:
        """``(layer reached, rows, width)`` of the pass."""
        state = self._session(session)
        return state["layer"], int(state["h"].shape[0]), int(state["h"].shape[1])

    def infer_rows(self, session: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``lo:hi`` (local) of the current layer: ``(original ids, rows float32)``."""
        state = self._session(session)
        return (self.old_ids[lo:hi],
                state["h"][lo:hi].detach().to(torch.float32).contiguous().numpy())

    def infer_end(self, session: str) -> None:
        """Drop the pass's state (a no-op for another or no pass)."""
        if getattr(self, "_infer", None) is not None and self._infer["session"] == session:
            self._infer = None

    # ------------------------------------------------------------------ (end of inference)


def _np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype}:{a.shape}".encode())
        digest.update(a.data)
    return digest.hexdigest()


def gather_components(parts: Sequence[tuple[np.ndarray, np.ndarray]], num_nodes: int
                      ) -> np.ndarray:
    """The :math:`(N,)` component labels (original id order) from every shard's
    :meth:`GraphShardServer.component_rows`; ValueError if a node is missing."""
    out = np.full(num_nodes, -1, dtype=np.int64)
    for ids, comp in parts:
        out[np.asarray(ids, dtype=np.int64)] = comp
    missing = int(np.count_nonzero(out < 0))
    if missing:
        raise ValueError(f"the shards' component rows miss {missing} of {num_nodes} nodes")
    return out


GraphShard = ray.remote(GraphShardServer)
"""The Ray actor class of :class:`GraphShardServer` (options are set by :class:`GraphShards`)."""


class GraphShards:
    r"""Start the :math:`P` :data:`GraphShard` actors of a partition, and shut them down.

    Args:
        manifest (Manifest or path): the partition.
        dtype (str, optional): ``float64 | float32`` for the operator and blocks
            (default: ``float64``).
        num_cpus (float, optional): Ray CPUs reserved per actor (default: the cluster's CPUs
            divided by :math:`P`).
        threads (int, optional): torch threads per actor (default: ``max(1, int(num_cpus))``).
        max_restarts (int, optional): restarts of a dead actor (default: ``3``).
        max_task_retries (int, optional): re-runs of a call that was in flight when its actor
            died; safe because every method is pure (default: ``3``).
        timeout (float, optional): seconds to wait for the actors to load (default: ``600``).
        chunk (int, optional): columns per sparse product (default: ``16``).
        serve (str, optional): ``all | operator | sampling`` (:class:`GraphShardServer`)
            (default: ``all``).
        resources (dict, optional): custom Ray resources each actor requests, which places
            the actors on the nodes that have them (default: none).

    Raises:
        ShardChecksumError: a shard file does not match its manifest.
    """

    def __init__(self, manifest: Manifest | str | Path, *, dtype: str = "float64",
                 num_cpus: float | None = None, threads: int | None = None,
                 max_restarts: int = 3, max_task_retries: int = 3, timeout: float = 600.0,
                 chunk: int = 16, serve: str = "all",
                 resources: dict[str, float] | None = None) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.timeout = float(timeout)
        self.dtype = dtype
        p = self.manifest.num_shards
        if num_cpus is None:
            num_cpus = max(float(ray.cluster_resources().get("CPU", 1.0)) / p, 0.01)
        self.threads = int(threads) if threads is not None else max(1, int(num_cpus))
        self.actors = [GraphShard.options(num_cpus=num_cpus, max_restarts=max_restarts,
                                          max_task_retries=max_task_retries,
                                          resources=dict(resources or {})).remote(
            str(self.manifest.path), i, dtype, self.threads, chunk, serve) for i in range(p)]
        try:
            self.infos = self.get([a.info.remote() for a in self.actors])
        except Exception as err:  # turn a remote checksum failure into our own error
            self.shutdown()
            if "ShardChecksumError" in str(err):
                line = next((s for s in str(err).splitlines() if "ShardChecksumError" in s),
                            str(err))
                raise ShardChecksumError(line.split("ShardChecksumError:", 1)[-1].strip()
                                         ) from None
            raise

    def __len__(self) -> int:
        return len(self.actors)

    def __enter__(self) -> "GraphShards":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def get(self, refs: Any) -> Any:
        """``ray.get`` bounded by the handle's timeout."""
        return ray.get(refs, timeout=self.timeout)

    def pids(self) -> list[int]:
        return self.get([a.pid.remote() for a in self.actors])

    def peak_rss_mb(self) -> list[float]:
        return self.get([a.peak_rss_mb.remote() for a in self.actors])

    def memory_mb(self) -> list[dict[str, float]]:
        return self.get([a.memory_mb.remote() for a in self.actors])

    def digests(self) -> list[str]:
        return self.get([a.data_digest.remote() for a in self.actors])

    def components(self) -> np.ndarray:
        """Component id of every node :math:`(N,)`, original id order
        (:meth:`GraphShardServer.component_rows`; operator-serving actors)."""
        return gather_components(self.get([a.component_rows.remote() for a in self.actors]),
                                 self.manifest.num_nodes)

    def shutdown(self) -> None:
        """Kill the actors (no restart)."""
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []

@ray.remote(num_cpus=0)
class EmptyShard:
    """A shard actor's process without a graph: the same imports, nothing loaded (the baseline
    that :func:`shard_memory` subtracts)."""

    def __init__(self) -> None:
        # Ray ships the class by value: import what a GraphShard's process holds explicitly
        import distgcl.distributed.shards  # noqa: F401

    def memory_mb(self) -> dict[str, float]:
        import psutil

        info = psutil.Process().memory_full_info()
        return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)}


def shard_memory(manifest: Manifest, dtype: str = "float32") -> dict[str, Any]:
    """Memory of every operator-serving shard actor of ``manifest`` once loaded
    (:meth:`GraphShardServer.memory_mb`), beside an :class:`EmptyShard`'s. Starts a local Ray on
    127.0.0.1 (and shuts it down) unless one is running."""
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_worker_niceness", "0")  # as ensure_ray: not at nice 15
        ray.init(num_cpus=max(2, manifest.num_shards), include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    try:
        empty = EmptyShard.remote()
        empty_mb = ray.get(empty.memory_mb.remote(), timeout=300)
        ray.kill(empty)
        with GraphShards(manifest, dtype=dtype, num_cpus=0, threads=1, serve="operator") as sh:
            actors = sh.memory_mb()
    finally:
        if started:
            ray.shutdown()
    return {"empty_actor": empty_mb, "actors": actors}
