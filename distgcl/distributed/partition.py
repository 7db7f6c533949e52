r"""Cut a graph into :math:`P` row blocks on disk: the store the graph-shard actors serve from.

**Order.** Nodes are renumbered by a locality-improving order, then split into :math:`P`
contiguous ranges of the new ids (shard :math:`p` owns new ids ``bounds[p]:bounds[p+1]``):

* ``metis``: METIS parts (through ``torch_sparse`` or ``pyg-lib``, as PyG's ``ClusterData``),
  nodes sorted by part; only when one of those libraries is importable (not on this machine);
* ``rcm``: scipy's reverse Cuthill-McKee (bandwidth reduction: a node's neighbours get nearby
  ids, so few of them fall in another range), equal ranges;
* ``identity`` / ``random``: the input order / a seeded random order (the baseline), equal ranges;
* ``auto`` (default): METIS when available, else whichever of RCM and the input order cuts fewer
  edges (generators and datasets often number nodes by community already).

The *edge cut* (undirected edges of the simple symmetric graph whose ends live in different
shards) of the chosen order and of a random order is recorded in the manifest.

**Files** (one directory per graph and parameters, ``<root>/p<P>-<key>``, ``key`` = a hash of the
edges, features, labels and parameters; written once: a second call with the same input reuses
it; written atomically: everything goes to a uniquely named temporary directory that is renamed
into place):

* ``shard-<p>.npz``, per shard: its node range, the original ids of its rows, the rows of the
  symmetric simple adjacency :math:`\mathbf{A}` in CSR (global **new** column ids, int32 where
  they fit), the global degrees of its rows, the *halo* (the sorted remote columns its rows touch,
  exactly) with their degrees, the send lists (its rows each peer's halo needs), the connected
  component of each row, whether that component has rows on other shards, and the
  trivial-eigenvector entry :math:`y_i = \sqrt{d_i}/\lVert D^{1/2}1_C\rVert`, the
  **directed** in-edges of its rows for neighbour sampling (sources in new and
  original ids and the edge ids, in the order of the input ``edge_index``, as
  :class:`~distgcl.sampling.CSRNeighborSampler`), features and labels;
* ``permutation.npz``: ``new_to_old`` and ``old_to_new``;
* ``manifest.json``: :math:`P`, :math:`N`, :math:`E`, bounds, the order and its edge cut, the
  component count, and the sha256 of every file above.

Degrees and components are global properties, computed here once on the full graph (scipy), so a
shard needs nothing else to apply its rows of
:math:`\mathbf{S} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch import Tensor
from tqdm.auto import tqdm

from distgcl.spectral.laplacian import adjacency, connected_components, degrees
from distgcl.typing import EdgeIndex

FORMAT_VERSION = 1
ORDERS: tuple[str, ...] = ("auto", "metis", "rcm", "identity", "random")


class ShardChecksumError(ValueError):
    """A shard file does not match the checksum in its manifest."""


@dataclass
class Manifest:
    """The partition's ``manifest.json``, with the directory it lives in."""

    root: Path
    key: str
    num_shards: int
    num_nodes: int
    num_edges: int
    """Directed input edges (columns of ``edge_index``)."""
    nnz: int
    """Stored entries of the symmetric simple adjacency."""
    bounds: list[int]
    """:math:`P + 1` new-id boundaries; shard ``p`` owns ``bounds[p]:bounds[p+1]``."""
    shards: list[dict[str, Any]]
    permutation: dict[str, Any]
    order: dict[str, Any]
    num_components: int
    num_features: int
    shared_components: int = 0
    """Components with rows on more than one shard (they need a global sum to deflate)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def shard_path(self, index: int) -> Path:
        return self.root / self.shards[index]["file"]

    @property
    def path(self) -> Path:
        return self.root / "manifest.json"

    def owner(self, new_ids: np.ndarray) -> np.ndarray:
        """Shard index of every new id."""
        return np.searchsorted(np.asarray(self.bounds), new_ids, side="right") - 1


def load_manifest(path: str | Path) -> Manifest:
    """Read ``manifest.json`` (``path`` is the file or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no partition manifest at {path}")
    d = json.loads(path.read_text())
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: partition format {d.get('version')} (this code reads "
                         f"{FORMAT_VERSION}); delete the directory to rebuild it")
    return Manifest(root=path.parent, key=d["key"], num_shards=d["num_shards"],
                    num_nodes=d["num_nodes"], num_edges=d["num_edges"], nnz=d["nnz"],
                    bounds=d["bounds"], shards=d["shards"], permutation=d["permutation"],
                    order=d["order"], num_components=d["num_components"],
                    num_features=d["num_features"],
                    shared_components=d.get("shared_components", 0), extra=d.get("extra", {}))


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, read in 4 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _verified_npz(path: Path, expected: str | None,
                  keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise ShardChecksumError(f"{path}: sha256 {actual[:16]}... does not match the "
                                     f"manifest's {expected[:16]}... (corrupted or replaced; "
                                     f"re-partition)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if keys is None or k in keys}


OPERATOR_KEYS = ("rows", "old_ids", "adj_indptr", "adj_indices", "degree", "halo",
                 "halo_degree", "send_ptr", "send", "component", "component_shared", "trivial")
"""What the operator (sharded products, deflation) needs from a shard file."""
SAMPLING_KEYS = ("rows", "old_ids", "in_indptr", "in_src_new", "in_src_old", "in_eid", "x", "y")
"""What neighbour sampling and feature lookup need from a shard file."""


def load_shard(manifest: Manifest, index: int, verify: bool = True,
               keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of shard ``index`` (only ``keys`` if given), after checking the whole file's
    sha256 against the manifest (streamed, so the check costs no memory).

    Raises:
        ShardChecksumError: the file's checksum differs from the manifest's.
    """
    if not 0 <= index < manifest.num_shards:
        raise IndexError(f"shard {index} of {manifest.num_shards}")
    return _verified_npz(manifest.shard_path(index),
                         manifest.shards[index]["sha256"] if verify else None, keys)


def load_permutation(manifest: Manifest, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(new_to_old, old_to_new)`` (checksum verified)."""
    arrays = _verified_npz(manifest.root / manifest.permutation["file"],
                           manifest.permutation["sha256"] if verify else None)
    return arrays["new_to_old"], arrays["old_to_new"]


# ----------------------------------------------------------------------------- orders

def metis_available() -> bool:
    """Whether an installed library provides METIS (``torch_sparse`` or ``pyg-lib``)."""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_METIS or pyg_typing.WITH_TORCH_SPARSE)


def _metis_parts(adj: sp.csr_matrix, num_parts: int) -> np.ndarray:
    """METIS part of every node, through the libraries PyG's ``ClusterData`` uses."""
    import torch_geometric.typing as pyg_typing

    rowptr = torch.from_numpy(adj.indptr.astype(np.int64))
    col = torch.from_numpy(adj.indices.astype(np.int64))
    if pyg_typing.WITH_TORCH_SPARSE:
        try:
            return torch.ops.torch_sparse.partition(rowptr, col, None, num_parts,
                                                    False).numpy()
        except (AttributeError, RuntimeError):
            pass
    import pyg_lib  # type: ignore[import-not-found]

    return pyg_lib.partition.metis(rowptr, col, num_parts, recursive=False).numpy()


def _equal_bounds(n: int, parts: int) -> np.ndarray:
    return np.linspace(0, n, parts + 1).round().astype(np.int64)


def edge_cut(adj: sp.csr_matrix, old_to_new: np.ndarray, bounds: np.ndarray) -> int:
    """Undirected edges of the symmetric ``adj`` whose ends fall in different ranges of
    ``bounds`` under the renumbering ``old_to_new``."""
    owner = (np.searchsorted(bounds, old_to_new, side="right") - 1).astype(np.int16)
    row_owner = np.repeat(owner, np.diff(adj.indptr))
    cut = int(np.count_nonzero(row_owner != owner[adj.indices]))
    return cut // 2


def locality_order(adj: sp.csr_matrix, num_parts: int, method: str = "auto", seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """A renumbering and its ranges: ``(new_to_old, bounds, method used)`` (module docstring)."""
    if method not in ORDERS:
        raise ValueError(f"unknown order {method!r}; known: {', '.join(ORDERS)}")
    n = adj.shape[0]
    bounds = _equal_bounds(n, num_parts)
    if method == "metis" or (method == "auto" and metis_available() and num_parts > 1):
        if not metis_available():
            raise ImportError("order 'metis' needs torch-sparse or pyg-lib (use 'auto' or 'rcm')")
        parts = _metis_parts(adj, num_parts)
        new_to_old = np.argsort(parts, kind="stable")
        counts = np.bincount(parts, minlength=num_parts)
        return new_to_old, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), "metis"
    if method == "identity":
        return np.arange(n), bounds, "identity"
    if method == "random":
        return np.random.default_rng(seed).permutation(n), bounds, "random"
    rcm = reverse_cuthill_mckee(adj, symmetric_mode=True).astype(np.int64)
    if method == "rcm" or num_parts == 1:
        return rcm, bounds, "rcm"
    identity = np.arange(n)
    if edge_cut(adj, _inverse(rcm), bounds) <= edge_cut(adj, identity, bounds):
        return rcm, bounds, "rcm"
    return identity, bounds, "identity"


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv


def _index_dtype(limit: int) -> type:
    return np.int32 if limit < 2**31 - 1 else np.int64


# ----------------------------------------------------------------------------- writing

def partition_key(edge_index: EdgeIndex, num_nodes: int, num_shards: int, *,
                  x: Tensor | None, y: Tensor | None, order: str, seed: int) -> str:
    """Hash of everything a partition depends on (edge bytes, N, features, labels, parameters)."""
    digest = hashlib.blake2b(digest_size=16)
    ei = edge_index.detach().cpu().contiguous()
    digest.update(f"v{FORMAT_VERSION}:{num_nodes}:{num_shards}:{order}:{seed}:"
                  f"{tuple(ei.shape)}:{ei.dtype}".encode())
    digest.update(ei.numpy().tobytes())
    for t in (x, y):
        if t is None:
            digest.update(b"none")
        else:
            t = t.detach().cpu().contiguous()
            digest.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    with open(path, "wb") as f:  # an open file: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    return file_sha256(path)


def partition_graph(edge_index: EdgeIndex, num_nodes: int, num_shards: int,
                    root: str | Path, *, x: Tensor | None = None, y: Tensor | None = None,
                    order: str = "auto", seed: int = 0, progress: bool = False) -> Manifest:
    r"""Partition a graph into ``num_shards`` row blocks under ``root`` (module docstring), or
    reuse the partition already there for the same input and parameters.

    Args:
        edge_index (Tensor): :math:`(2, E)` directed edges (source, target), duplicates and
            self-loops allowed (sampling sees them as given; the operator symmetrizes, merges
            and drops self-loops, as :func:`~distgcl.spectral.laplacian.adjacency`).
        num_nodes (int): :math:`N`.
        num_shards (int): :math:`P \ge 1`.
        root (str or Path): parent directory of the partitions.
        x (Tensor, optional): node features :math:`(N, F)` (stored as float32).
        y (Tensor, optional): labels :math:`(N,)` or :math:`(N, T)`.
        order (str, optional): ``auto | metis | rcm | identity | random`` (default: ``auto``).
        seed (int, optional): seed of the random order (also the random baseline of the edge
            cut) (default: ``0``).
        progress (bool, optional): tqdm bar over shards (default: :obj:`False`).

    Returns:
        Manifest: the partition (read back from its ``manifest.json``).

    Memory: the symmetric boolean adjacency (about 5 bytes per stored entry), the input edges,
    and one int64 sort permutation of them (8 bytes per edge), plus one shard at a time.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1 (got {num_shards})")
    n = int(num_nodes)
    if n < num_shards:
        raise ValueError(f"need at least one node per shard (N = {n}, P = {num_shards})")
    if x is not None and x.size(0) != n:
        raise ValueError(f"x has {x.size(0)} rows, expected N = {n}")
    if y is not None and y.size(0) != n:
        raise ValueError(f"y has {y.size(0)} rows, expected N = {n}")
    root = Path(root)
    key = partition_key(edge_index, n, num_shards, x=x, y=y, order=order, seed=seed)
    final = root / f"p{num_shards}-{key[:20]}"
    if (final / "manifest.json").is_file():
        return load_manifest(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_partition(tmp, edge_index, n, num_shards, x, y, order, seed, key, progress)
        try:
            os.replace(tmp, final)  # atomic: the directory appears complete or not at all
        except OSError:
            if not (final / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote it first
        return load_manifest(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_partition(out: Path, edge_index: EdgeIndex, n: int, num_shards: int,
                     x: Tensor | None, y: Tensor | None, order: str, seed: int, key: str,
                     progress: bool) -> None:
    ei = edge_index.detach().cpu()
    num_edges = int(ei.size(1))
    adj = adjacency(ei, n, dtype=bool)
    deg = degrees(adj)
    count, comp = connected_components(adj)
    sqrt_d = np.sqrt(np.where(deg == 0, 1.0, deg))
    comp_norm = np.sqrt(np.bincount(comp, weights=sqrt_d ** 2, minlength=count))
    y_entry = sqrt_d / comp_norm[comp]

    new_to_old, bounds, used = locality_order(adj, num_shards, order, seed)
    new_to_old = new_to_old.astype(np.int64)
    old_to_new = _inverse(new_to_old)
    cut = edge_cut(adj, old_to_new, bounds)
    random_perm = np.random.default_rng(seed).permutation(n)
    cut_random = edge_cut(adj, _inverse(random_perm), _equal_bounds(n, num_shards))
    del random_perm
    cut_identity = edge_cut(adj, np.arange(n), _equal_bounds(n, num_shards))
    # Components with rows on several shards need a global sum to deflate; the others not.
    owner = np.searchsorted(bounds, old_to_new, side="right") - 1
    first = np.full(count, num_shards, dtype=np.int64)
    last = np.full(count, -1, dtype=np.int64)
    np.minimum.at(first, comp, owner)
    np.maximum.at(last, comp, owner)
    shared = first[comp] != last[comp]
    del owner
    undirected = adj.nnz // 2

    idx_n = _index_dtype(n)
    idx_e = _index_dtype(num_edges)
    # Directed in-edges grouped by new target id, inside a target in input order (as the
    # single-process sampler's stable argsort by target).
    src_old_all = ei[0].numpy()
    target_new = old_to_new[ei[1].numpy()].astype(idx_n)
    by_target = np.argsort(target_new, kind="stable")
    in_counts = np.bincount(target_new, minlength=n)
    del target_new
    in_start = np.concatenate([[0], np.cumsum(in_counts)])

    # Halos first (a shard's send lists are the other shards' halos restricted to its range).
    halos: list[np.ndarray] = []
    rows_of: list[sp.csr_matrix] = []
    for p in range(num_shards):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        sub = adj[new_to_old[lo:hi]]
        sub = sp.csr_matrix((sub.data, old_to_new[sub.indices].astype(idx_n), sub.indptr),
                            shape=sub.shape)
        sub.has_sorted_indices = False
        sub.sort_indices()
        cols = np.unique(sub.indices)
        halos.append(cols[(cols < lo) | (cols >= hi)])
        rows_of.append(sub)
    del adj

    xs = None if x is None else x.detach().cpu().float().numpy()
    ys = None if y is None else y.detach().cpu().numpy()
    shards = []
    for p in tqdm(range(num_shards), desc="partition", disable=not progress, leave=False):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        old = new_to_old[lo:hi]
        sub = rows_of[p]
        send_parts = []
        for q in range(num_shards):
            h = halos[q]
            send_parts.append(h[(h >= lo) & (h < hi)] if q != p else h[:0])
        send_ptr = np.concatenate([[0], np.cumsum([s.size for s in send_parts])])
        edges = by_target[in_start[lo]:in_start[hi]]
        src_old = src_old_all[edges]
        arrays: dict[str, np.ndarray] = {
            "rows": np.array([lo, hi], dtype=np.int64),
            "old_ids": old.astype(idx_n),
            "adj_indptr": sub.indptr.astype(np.int64),
            "adj_indices": sub.indices.astype(idx_n),
            "degree": deg[old],
            "halo": halos[p].astype(idx_n),
            "halo_degree": deg[new_to_old[halos[p]]],
            "send_ptr": send_ptr.astype(np.int64),
            "send": np.concatenate(send_parts).astype(idx_n),
            "component": comp[old].astype(idx_n),
            "trivial": y_entry[old],
            "component_shared": shared[old],
            "in_indptr": (in_start[lo:hi + 1] - in_start[lo]).astype(np.int64),
            "in_src_new": old_to_new[src_old].astype(idx_n),
            "in_src_old": src_old.astype(idx_n),
            "in_eid": edges.astype(idx_e),
        }
        if xs is not None:
            arrays["x"] = xs[old]
        if ys is not None:
            arrays["y"] = ys[old]
        name = f"shard-{p}.npz"
        digest = _save_npz(out / name, **arrays)
        shards.append({"file": name, "sha256": digest, "bytes": (out / name).stat().st_size,
                       "rows": [lo, hi], "nnz": int(sub.nnz), "in_edges": int(edges.size),
                       "halo": int(halos[p].size)})
        del arrays, edges, src_old
        rows_of[p] = None  # type: ignore[call-overload]
    perm_digest = _save_npz(out / "permutation.npz", new_to_old=new_to_old.astype(idx_n),
                            old_to_new=old_to_new.astype(idx_n))
    manifest = {
        "version": FORMAT_VERSION, "key": key, "num_shards": num_shards, "num_nodes": n,
        "num_edges": num_edges, "nnz": int(sum(s["nnz"] for s in shards)),
        "bounds": [int(b) for b in bounds], "shards": shards,
        "permutation": {"file": "permutation.npz", "sha256": perm_digest},
        "order": {"requested": order, "method": used, "metis_available": metis_available(),
                  "edge_cut": cut, "edge_cut_random": cut_random,
                  "edge_cut_identity": cut_identity, "undirected_edges": undirected,
                  "cut_fraction": cut / max(undirected, 1),
                  "cut_fraction_random": cut_random / max(undirected, 1),
                  "halo_total": int(sum(h.size for h in halos)), "seed": seed},
        "num_components": count,
        "shared_components": int(np.count_nonzero(first != last)),
        "num_features": 0 if xs is None else int(xs.shape[1]),
        "extra": {"has_labels": ys is not None},
    }
    tmp = out / f"manifest.json.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / "manifest.json")
