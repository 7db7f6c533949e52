r"""Cut a graph into :math:`P` row blocks on disk: the store the graph-shard actors serve from.

**Order.** Nodes are renumbered by a locality-improving order, then split into :math:`P`
contiguous ranges of the new ids (shard :math:`p` owns new ids ``bounds[p]:bounds[p+1]``):

* ``metis``: METIS parts (through ``torch_sparse`` or ``pyg-lib``, as PyG's ``ClusterData``),
  nodes sorted by part; only when one of those libraries is importable (not on this machine);
* ``rcm``: scipy's reverse Cuthill-McKee (bandwidth reduction: a node's neighbours get nearby
  ids, so few of them fall in another range), equal ranges;
* ``identity`` / ``random``: the input order / a seeded random order (the baseline), equal ranges;
* ``hash``: :func:`hash_order` (a hash of the node id picks the shard);
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

import abc
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch import Tensor
from tqdm.auto import tqdm

from distgcl.spectral.laplacian import adjacency, connected_components, degrees
from distgcl.typing import EdgeIndex

FORMAT_VERSION = 1
ORDERS: tuple[str, ...] = ("auto", "metis", "rcm", "identity", "random", "hash")


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
    if method == "hash":
        new_to_old, hash_bounds = hash_order(n, num_parts)
        return new_to_old, hash_bounds, "hash"
    if method == "random":
        return np.random.default_rng(seed).permutation(n), bounds, "random"
    rcm = reverse_cuthill_mckee(adj, symmetric_mode=True).astype(np.int64)
    if method == "rcm" or num_parts == 1:
        return rcm, bounds, "rcm"
    identity = np.arange(n)
    if edge_cut(adj, _inverse(rcm), bounds) <= edge_cut(adj, identity, bounds):
        return rcm, bounds, "rcm"
    return identity, bounds, "identity"


def hash_order(n: int, num_parts: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Hash ownership: node :math:`i` goes to shard :math:`h(i) \bmod P` with
    :math:`h(i) = (2654435761\,i) \bmod 2^{32}` (Knuth's multiplicative hash, so shards get
    every residue class of a structured numbering), in input order inside a shard. Needs the
    node ids only, not the graph: ``(new_to_old, bounds)``.

    Raises:
        ValueError: a shard would be empty.
    """
    owner = ((np.arange(n, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
             % np.uint64(num_parts)).astype(np.int64)
    counts = np.bincount(owner, minlength=num_parts)
    if n and int(counts.min()) == 0:
        raise ValueError(f"hash ownership leaves a shard empty (N = {n}, P = {num_parts})")
    return np.argsort(owner, kind="stable"), np.concatenate([[0], np.cumsum(counts)]
                                                            ).astype(np.int64)


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
    key = partition_key(edge_index, n, num_shards, x=x, y=y, order=order, seed=seed)
    return _cached_partition(Path(root), num_shards, key, lambda tmp: _write_partition(
        tmp, edge_index, n, num_shards, x, y, order, seed, key, progress))


def _cached_partition(root: Path, num_shards: int, key: str,
                      write: Callable[[Path], None]) -> Manifest:
    """The partition ``root/p{P}-{key}``: loaded when it exists, else ``write`` fills a fresh
    temporary directory that is renamed into place (atomic: the directory appears complete or
    not at all; a concurrent writer that won keeps its copy)."""
    final = root / f"p{num_shards}-{key[:20]}"
    if (final / "manifest.json").is_file():
        return load_manifest(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
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


# ----------------------------------------------------------------------------- streaming

class GraphSource(abc.ABC):
    """Where :func:`stream_partition` reads a graph from, in chunks: the node count, then
    edges, feature rows and label rows in input order (never all at once).

    Subclasses set ``num_nodes`` and implement :meth:`edges` (``(2, k)`` int64 chunks);
    :meth:`features` / :meth:`labels` yield row chunks in node order (or nothing);
    :meth:`fingerprint` names the input (files, sizes, times), the partition's cache key.
    """

    num_nodes: int

    @abc.abstractmethod
    def edges(self, chunk: int) -> Any:
        """``(2, k)`` int64 edge chunks of at most ``chunk`` columns, in input order."""

    def features(self, chunk: int) -> Any:
        return iter(())

    def labels(self, chunk: int) -> Any:
        return iter(())

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """What names the input (files, sizes, times): the partition's cache key."""


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _csv_chunks(path: Path, chunk: int, dtype: type) -> Any:
    """Row chunks of a header-less (gzip) CSV as numpy arrays (pandas' C parser)."""
    import pandas as pd

    with pd.read_csv(path, header=None, chunksize=chunk, dtype=dtype) as reader:
        for frame in reader:
            yield frame.to_numpy()


class CsvGraphSource(GraphSource):
    r"""A graph in OGB's raw layout (``<dir>/raw/*.csv.gz``, header-less, as
    :mod:`distgcl.data.csv_gz` writes and ogb's ``read_csv_graph_raw`` reads): ``edge.csv.gz``
    (``src,dst`` per line), ``num-node-list.csv.gz``, optional ``node-feat.csv.gz`` (parsed as
    float64 and stored float32, as ogb's loader and :func:`~distgcl.data.load_dataset`) and
    ``node-label.csv.gz``.

    Args:
        root (str or Path): the dataset directory (holding ``raw/``) or ``raw/`` itself.
        add_reverse (bool, optional): also emit :math:`(d, s)` for every row, right after its
            chunk (ogbn-arxiv is stored one way; ogb's loader symmetrizes it with
            ``to_undirected``, which also sorts and merges, so edge ids differ from that
            loader's) (default: :obj:`False`).
        edge_features (str, optional): ``none``, or one of
            :data:`~distgcl.data.ogb.PROTEINS_NODE_FEATURES` (``sum``, ``mean``, ``sum+mean``,
            ``sum+mean+species``): node features from ``edge-feat.csv.gz`` (and
            ``node_species.csv.gz``) as :func:`~distgcl.data.ogb.proteins_node_features`
            over the edges this source emits (ogbn-proteins; the sums are a float32
            :math:`(N, F_e)` accumulator, the one :math:`O(N)`-row array of the pass)
            (default: ``none``).
        add_inverse (bool, optional): ogb's ``add_inverse_edge``: every row :math:`(s, d)`
            becomes :math:`(s, d), (d, s)` in place (interleaved, edge ids :math:`2k, 2k+1`,
            each with row :math:`k`'s edge features), exactly the ``edge_index`` of ogb's
            loader for ogbn-proteins and ogbn-products (default: :obj:`False`).
        label_dtype (str, optional): cast the labels to this numpy dtype (ogbn-proteins'
            loader makes its 0/1 task labels float32) (default: as parsed).
    """

    def __init__(self, root: str | Path, add_reverse: bool = False,
                 edge_features: str = "none", add_inverse: bool = False,
                 label_dtype: str | None = None) -> None:
        from distgcl.data.ogb import PROTEINS_NODE_FEATURES

        root = Path(root)
        self.raw = root if (root / "edge.csv.gz").is_file() else root / "raw"
        for name in ("edge.csv.gz", "num-node-list.csv.gz"):
            if not (self.raw / name).is_file():
                raise FileNotFoundError(f"{self.raw / name} does not exist (an OGB raw folder "
                                        f"has edge.csv.gz and num-node-list.csv.gz)")
        if edge_features not in ("none", *PROTEINS_NODE_FEATURES):
            raise ValueError(f"unknown edge_features {edge_features!r}; known: none, "
                             f"{', '.join(PROTEINS_NODE_FEATURES)}")
        if add_reverse and add_inverse:
            raise ValueError("add_reverse and add_inverse are two ways of adding the reverse "
                             "edges: choose one")
        needed = (["edge-feat.csv.gz"] if edge_features != "none" else []) + \
            (["node_species.csv.gz"] if "species" in edge_features else [])
        for name in needed:
            if not (self.raw / name).is_file():
                raise FileNotFoundError(f"{self.raw / name} does not exist")
        counts = next(_csv_chunks(self.raw / "num-node-list.csv.gz", 1 << 16, np.int64))
        self.num_nodes = int(counts.sum())
        self.add_reverse, self.add_inverse = bool(add_reverse), bool(add_inverse)
        self.edge_features = edge_features
        self.label_dtype = None if label_dtype is None else np.dtype(label_dtype)

    def _files(self) -> list[Path]:
        names = ["edge.csv.gz", "num-node-list.csv.gz", "node-feat.csv.gz", "node-label.csv.gz",
                 "edge-feat.csv.gz", "node_species.csv.gz"]
        return [self.raw / n for n in names if (self.raw / n).is_file()]

    def fingerprint(self) -> str:
        # the options in the old spelling when unused, so existing partitions stay valid
        extra = f":inverse:{self.label_dtype}" if self.add_inverse or self.label_dtype else ""
        return "|".join([f"csv:{self.add_reverse}:{self.edge_features}{extra}"] +
                        [_file_stamp(f) for f in self._files()])

    def _edge_chunks(self, chunk: int) -> Any:
        """``(k, 2)`` rows of ``edge.csv.gz`` (at most ``chunk``; half that with
        ``add_inverse``, so every emitted chunk keeps at most ``chunk`` edges)."""
        step = max(1, chunk // 2) if self.add_inverse else chunk
        return _csv_chunks(self.raw / "edge.csv.gz", step, np.int64)

    @staticmethod
    def _interleaved(rows: np.ndarray) -> np.ndarray:
        """ogb's ``add_inverse_edge``: ``(k, 2)`` rows -> ``(2, 2k)`` with ``(s, d), (d, s)``
        per row."""
        out = np.repeat(rows.T, 2, axis=1)
        out[0, 1::2], out[1, 1::2] = rows[:, 1], rows[:, 0]
        return out

    def edges(self, chunk: int) -> Any:
        for rows in self._edge_chunks(chunk):
            if self.add_inverse:
                yield self._interleaved(rows)
                continue
            yield rows.T
            if self.add_reverse:
                yield rows.T[::-1]

    def features(self, chunk: int) -> Any:
        if self.edge_features != "none":
            yield from self._edge_feature_rows(chunk)
        elif (self.raw / "node-feat.csv.gz").is_file():
            for rows in _csv_chunks(self.raw / "node-feat.csv.gz", chunk, np.float64):
                yield rows.astype(np.float32)

    def _edge_feature_rows(self, chunk: int) -> Any:
        """The parts of ``edge_features`` per node: ``sum`` / ``mean`` of the in-edges'
        features over the emitted edges (float32 sums in edge order, as
        :func:`~distgcl.data.ogb.proteins_node_features`; with ``add_inverse`` both directions
        of a row, interleaved), ``species`` one-hot (ids in increasing order)."""
        total: Tensor | None = None
        degree = torch.zeros(self.num_nodes, dtype=torch.long)
        feats = _csv_chunks(self.raw / "edge-feat.csv.gz", chunk, np.float64)
        for rows in _csv_chunks(self.raw / "edge.csv.gz", chunk, np.int64):
            attr = torch.from_numpy(next(feats)).float()
            if total is None:
                total = torch.zeros(self.num_nodes, attr.shape[1], dtype=torch.float32)
            if self.add_inverse:  # (s, d), (d, s) per row: targets d, s; features repeated
                target = torch.from_numpy(self._interleaved(rows)[1])
                attr = attr.repeat_interleave(2, dim=0)
            else:
                target = torch.from_numpy(np.ascontiguousarray(rows[:, 1]))
            total.index_add_(0, target, attr)
            degree += torch.bincount(target, minlength=self.num_nodes)
            if self.add_reverse:
                source = torch.from_numpy(np.ascontiguousarray(rows[:, 0]))
                total.index_add_(0, source, attr)
                degree += torch.bincount(source, minlength=self.num_nodes)
        if total is None:
            return
        parts = {"sum": total, "mean": total / degree.clamp_min(1).unsqueeze(1)}
        if "species" in self.edge_features:
            parts["species"] = self._species_one_hot()
        names = self.edge_features.split("+")
        for lo in range(0, self.num_nodes, chunk):
            yield torch.cat([parts[p][lo:lo + chunk] for p in names], dim=1).numpy()

    def _species_one_hot(self) -> Tensor:
        """``(N, S)`` float32 one-hot of ``node_species.csv.gz`` (columns: the species ids
        present, increasing; as ``torch.unique(sorted=True)``)."""
        species = np.concatenate([c.reshape(-1) for c in _csv_chunks(
            self.raw / "node_species.csv.gz", 1 << 20, np.int64)])
        ids = np.unique(species)
        which = torch.from_numpy(np.searchsorted(ids, species))
        return torch.nn.functional.one_hot(which, ids.size).float()

    def labels(self, chunk: int) -> Any:
        if (self.raw / "node-label.csv.gz").is_file():
            for rows in _csv_chunks(self.raw / "node-label.csv.gz", chunk, np.float64):
                labels = rows if rows.shape[1] > 1 else rows[:, 0]
                if self.label_dtype is not None:
                    yield labels.astype(self.label_dtype)
                elif np.isnan(labels).any() or not np.array_equal(labels, np.round(labels)):
                    yield labels.astype(np.float32)  # multi-task 0/1 with gaps: float
                else:
                    yield labels.astype(np.int64)


class FileGraphSource(GraphSource):
    """A ``file`` graph (a ``torch.save``d PyG ``Data`` or dict with ``x`` and ``edge_index``,
    as :func:`~distgcl.data.load_dataset` reads it) memory-mapped (``torch.load(mmap=True)``):
    chunks are slices of the mapped tensors, so only the pages of one chunk are read at a
    time. Features are stored float32, edges int64, as ``load_dataset``; its feature
    preprocessing options are not applied here (they need the whole feature matrix)."""

    def __init__(self, path: str | Path) -> None:
        from distgcl.data.ogb import allow_pyg_pickles

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"graph file {self.path} does not exist")
        allow_pyg_pickles()
        obj = torch.load(self.path, mmap=True, weights_only=True, map_location="cpu")
        get = obj.get if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        self._get = get
        self.edge_index, self.x, self.y = get("edge_index"), get("x"), get("y")
        if self.edge_index is None or self.edge_index.dim() != 2 or \
                self.edge_index.size(0) != 2:
            raise ValueError(f"{self.path}: needs edge_index of shape [2, E]")
        num = get("num_nodes")
        self.num_nodes = int(num) if num is not None else (
            int(self.x.size(0)) if self.x is not None else int(self.edge_index.max()) + 1)

    def attr(self, key: str) -> Any:
        """The file's ``key`` (memory-mapped tensor, or None): e.g. the split masks."""
        return self._get(key)

    def fingerprint(self) -> str:
        return f"file:{_file_stamp(self.path)}"

    def edges(self, chunk: int) -> Any:
        for lo in range(0, self.edge_index.size(1), chunk):
            yield self.edge_index[:, lo:lo + chunk].long().numpy()

    def _rows(self, t: Tensor | None, chunk: int, dtype: torch.dtype | None) -> Any:
        if t is None:
            return
        for lo in range(0, t.size(0), chunk):
            part = t[lo:lo + chunk]
            yield (part.to(dtype) if dtype is not None else part.clone()).numpy()

    def features(self, chunk: int) -> Any:
        return self._rows(self.x, chunk, torch.float32)

    def labels(self, chunk: int) -> Any:
        return self._rows(self.y, chunk, None)


STREAM_ORDERS = ("identity", "hash")
"""Orders :func:`stream_partition` can use: both need the node ids only."""


def stream_partition(source: GraphSource, num_shards: int, root: str | Path, *,
                     order: str = "identity", chunk: int = 1 << 20, seed: int = 0,
                     progress: bool = False, block: int | None = None) -> Manifest:
    r"""Partition a graph read from ``source`` in chunks, without any process holding the
    whole graph: the same files and manifest as :func:`partition_graph` with the same
    ``order`` (equal arrays, shard by shard), reused when already there.

    Only orders that need no graph are possible: ``identity`` (contiguous ranges of the input
    ids) and ``hash`` (:func:`hash_order`). METIS and RCM need the whole adjacency in one
    process, which is what this function avoids.

    Passes: (1) edges, chunk by chunk, are routed to per-shard temporary files (in-edges to the
    target's shard; both directions of every non-loop edge to the row's shard, int32 ids where
    they fit); features and labels to per-shard memory-mapped files. (2) One shard at a time:
    its simple symmetric rows (sorted, merged), degrees, halo, in-edges by target (input order),
    and its edges merged into the connected components (scipy on the shard's edges plus one
    edge from every node to its current representative). (3) One shard at a time: the
    component-dependent arrays (trivial-eigenvector entries, shared components) and send lists,
    then the shard file.

    Args:
        source (GraphSource): :class:`CsvGraphSource` or :class:`FileGraphSource`.
        num_shards, root, seed, progress: as :func:`partition_graph` (``seed``: the random
            baseline of the edge cut).
        order (str, optional): ``identity | hash`` (default: ``identity``).
        chunk (int, optional): edges / rows per chunk (default: ``2**20``).
        block (int, optional): routed records (in-edges plus both directions of the symmetric
            entries) per block of rows in pass 2 (default: ``4 * chunk``); does not change the
            files.

    Memory: :math:`O(N)` vectors (permutation, degrees, components) plus one chunk, then one
    block of rows at a time, plus the shard's own arrays while its file is written (about
    16 bytes per in-edge and 4 per symmetric entry with int32 ids); never :math:`O(E)`.
    """
    if order not in STREAM_ORDERS:
        raise ValueError(f"stream_partition supports the orders {', '.join(STREAM_ORDERS)} "
                         f"(METIS and RCM need the whole graph); got {order!r}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1 (got {num_shards})")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (got {chunk})")
    block = 4 * chunk if block is None else int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1 (got {block})")
    n = int(source.num_nodes)
    if n < num_shards:
        raise ValueError(f"need at least one node per shard (N = {n}, P = {num_shards})")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"stream:v{FORMAT_VERSION}:{source.fingerprint()}:{n}:{num_shards}:{order}:"
                  f"{seed}".encode())
    key = digest.hexdigest()
    return _cached_partition(Path(root), num_shards, key, lambda tmp: _StreamWriter(
        tmp, source, n, num_shards, order, seed, key, chunk, progress, block).run())


class _StreamWriter:
    """The passes of :func:`stream_partition` (state: the :math:`O(N)` vectors)."""

    def __init__(self, out: Path, source: GraphSource, n: int, num_shards: int, order: str,
                 seed: int, key: str, chunk: int, progress: bool, block: int) -> None:
        self.out, self.source, self.n, self.p = out, source, n, num_shards
        self.block = block
        self.order, self.seed, self.key, self.chunk, self.progress = order, seed, key, chunk, \
            progress
        if order == "hash":
            self.new_to_old, self.bounds = hash_order(n, num_shards)
        else:  # identity: contiguous ranges of the input ids
            self.new_to_old, self.bounds = np.arange(n), _equal_bounds(n, num_shards)
        self.new_to_old = self.new_to_old.astype(np.int64)
        self.old_to_new = _inverse(self.new_to_old)
        self.idx_n = _index_dtype(n)
        self.work = out / "work"
        self.work.mkdir()

    def owner(self, new_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.bounds, new_ids, side="right") - 1

    def _routed(self, new_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(shard, positions)`` of ``new_ids`` by owner, positions in input order."""
        owner = self.owner(new_ids)
        order = np.argsort(owner, kind="stable")
        cuts = np.searchsorted(owner[order], np.arange(self.p + 1))
        return [(q, order[cuts[q]:cuts[q + 1]]) for q in range(self.p) if cuts[q + 1] > cuts[q]]

    # ------------------------------------------------------------------ pass 1: routing

    def route_edges(self) -> None:
        n, idx = self.n, self.idx_n
        ins = [open(self.work / f"in-{q}.bin", "wb") for q in range(self.p)]
        adjs = [open(self.work / f"adj-{q}.bin", "wb") for q in range(self.p)]
        self.num_edges = 0
        self.routed = np.zeros(n, dtype=np.int64)  # records routed per row (both files)
        try:
            for ei in self.source.edges(self.chunk):
                ei = np.asarray(ei, dtype=np.int64)
                if ei.size and (int(ei.min()) < 0 or int(ei.max()) >= n):
                    raise ValueError(f"edge ids outside [0, {n}) in edges "
                                     f"{self.num_edges}..{self.num_edges + ei.shape[1]}")
                src_old, dst_old = ei[0], ei[1]
                src, dst = self.old_to_new[src_old], self.old_to_new[dst_old]
                eid = np.arange(self.num_edges, self.num_edges + src.size, dtype=np.int64)
                self.num_edges += int(src.size)
                self.routed += np.bincount(dst, minlength=n)
                for q, pos in self._routed(dst):
                    ins[q].write(np.stack([dst[pos], src[pos], src_old[pos], eid[pos]], 1)
                                 .tobytes())
                loop = src == dst
                rows = np.concatenate([src[~loop], dst[~loop]])
                cols = np.concatenate([dst[~loop], src[~loop]])
                self.routed += np.bincount(rows, minlength=n)
                for q, pos in self._routed(rows):
                    adjs[q].write(np.stack([rows[pos], cols[pos]], 1).astype(idx).tobytes())
        finally:
            for f in ins + adjs:
                f.close()

    def route_rows(self, kind: str) -> tuple[str, ...] | None:
        """Feature (``x``) or label (``y``) rows into per-shard memory-mapped files; returns
        the dtype and trailing shape seen, or None without any."""
        start, maps, meta = 0, None, None
        it = self.source.features(self.chunk) if kind == "x" else self.source.labels(self.chunk)
        for rows in it:
            rows = np.asarray(rows)
            if maps is None:
                meta = (rows.dtype.str, rows.shape[1:])
                maps = [np.lib.format.open_memmap(
                    self.work / f"{kind}-{q}.npy", mode="w+", dtype=rows.dtype,
                    shape=(int(self.bounds[q + 1] - self.bounds[q]), *rows.shape[1:]))
                    for q in range(self.p)]
            new = self.old_to_new[start:start + rows.shape[0]]
            for q, pos in self._routed(new):
                maps[q][new[pos] - self.bounds[q]] = rows[pos]
            start += rows.shape[0]
        if maps is not None:
            for m in maps:
                m.flush()
            if start != self.n:
                raise ValueError(f"{kind}: {start} rows for N = {self.n} nodes")
        return meta

    # ------------------------------------------------------------------ pass 2: per shard

    def shard_structure(self, q: int) -> None:
        """Rows of the simple symmetric adjacency, degrees, halo, in-edges; components. The
        shard's rows are taken in blocks of at most ``block`` routed records (from the degree
        counts of pass 1), so the transient memory is one block's, not the shard's edges'."""
        lo, hi = int(self.bounds[q]), int(self.bounds[q + 1])
        adj_path, in_path = self.work / f"adj-{q}.bin", self.work / f"in-{q}.bin"
        cuts = self._block_cuts(lo, hi)
        if len(cuts) > 2:
            adj_paths = self._split(adj_path, 2, self.idx_n, cuts, f"adj-{q}")
            in_paths = self._split(in_path, 4, np.int64, cuts, f"in-{q}")
        else:
            adj_paths, in_paths = [adj_path], [in_path]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (
            "adj_counts", "adj_indices", "in_counts", "in_src_new", "in_src_old", "in_eid",
            "halo")}
        for i, (a_path, i_path) in enumerate(zip(adj_paths, in_paths)):
            self._block_structure(q, int(cuts[i]), int(cuts[i + 1]), a_path, i_path, parts)
            a_path.unlink()
            i_path.unlink()
        halo = np.unique(np.concatenate(parts.pop("halo")))
        self.halos.append(halo.astype(self.idx_n))
        cols = np.concatenate(parts["adj_indices"])
        in_counts = np.concatenate(parts["in_counts"])
        np.savez(self.work / f"struct-{q}.npz",
                 adj_indptr=np.concatenate([[0], np.cumsum(np.concatenate(parts["adj_counts"]))])
                 .astype(np.int64), adj_indices=cols,
                 in_indptr=np.concatenate([[0], np.cumsum(in_counts)]).astype(np.int64),
                 **{k: np.concatenate(parts[k]) for k in ("in_src_new", "in_src_old", "in_eid")})
        self.nnz.append(int(cols.size))
        self.in_edges.append(int(in_counts.sum()))

    def _block_cuts(self, lo: int, hi: int) -> np.ndarray:
        """Row cuts ``[lo, ..., hi]`` of blocks holding at most ``block`` routed records each
        (a row with more records is a block of its own)."""
        load = np.cumsum(self.routed[lo:hi])
        cuts, start, base = [lo], 0, 0
        while start < hi - lo:
            end = int(np.searchsorted(load, base + self.block, side="right"))
            end = max(end, start + 1)
            cuts.append(lo + end)
            base, start = int(load[end - 1]), end
        if len(cuts) == 1:
            cuts.append(hi)
        return np.asarray(cuts, dtype=np.int64)

    def _split(self, path: Path, width: int, dtype: type, cuts: np.ndarray, stem: str
               ) -> list[Path]:
        """Route the records of ``path`` (rows of ``width`` ids, the row id first) to one file
        per block of ``cuts``, in input order, one chunk in memory at a time."""
        paths = [self.work / f"{stem}.{i}.bin" for i in range(len(cuts) - 1)]
        outs = [open(p, "wb") for p in paths]
        try:
            with open(path, "rb") as f:
                while True:
                    recs = np.fromfile(f, dtype=dtype, count=self.chunk * width)
                    if not recs.size:
                        break
                    recs = recs.reshape(-1, width)
                    block = np.searchsorted(cuts, recs[:, 0], side="right") - 1
                    order = np.argsort(block, kind="stable")
                    bounds = np.searchsorted(block[order], np.arange(len(paths) + 1))
                    for i in range(len(paths)):
                        if bounds[i + 1] > bounds[i]:
                            outs[i].write(recs[order[bounds[i]:bounds[i + 1]]].tobytes())
        finally:
            for f in outs:
                f.close()
        path.unlink()
        return paths

    def _block_structure(self, q: int, lo: int, hi: int, adj_path: Path, in_path: Path,
                         parts: dict[str, list[np.ndarray]]) -> None:
        """Rows ``lo:hi`` of shard ``q``: their adjacency rows, degrees, halo candidates, cuts
        and in-edges into ``parts``; their edges merged into the components."""
        n = self.n
        pairs = np.fromfile(adj_path, dtype=self.idx_n).reshape(-1, 2)
        keys = np.unique((pairs[:, 0].astype(np.int64) - lo) * n + pairs[:, 1])
        del pairs
        rows, cols = keys // n, (keys % n).astype(self.idx_n)
        del keys
        counts = np.bincount(rows, minlength=hi - lo)
        self.deg[lo:hi] = counts
        # components: these edges merged with what earlier blocks found (one edge to every
        # node's representative); representatives are node ids (the smallest member)
        u = np.concatenate([rows + lo, np.arange(n)])
        v = np.concatenate([cols.astype(np.int64), self.rep])
        graph = sp.csr_matrix((np.ones(u.size, dtype=bool), (u, v)), shape=(n, n))
        _, labels = connected_components(graph)
        del graph, u, v
        first = np.full(labels.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, labels, np.arange(n))
        self.rep = first[labels]
        lo_q, hi_q = int(self.bounds[q]), int(self.bounds[q + 1])
        halo = np.unique(cols)
        parts["halo"].append(halo[(halo < lo_q) | (halo >= hi_q)])
        # edge cuts (entries whose ends have different owners), counted twice per edge
        rows_new = rows + lo
        self.cut += int(np.count_nonzero(self.owner(cols) != q))
        for name, own in (("identity", self.owner_identity), ("random", self.owner_random)):
            self.cuts[name] += int(np.count_nonzero(own[rows_new] != own[cols]))
        del rows_new, rows
        parts["adj_counts"].append(counts)
        parts["adj_indices"].append(cols)
        recs = np.fromfile(in_path, dtype=np.int64).reshape(-1, 4)
        recs = recs[np.argsort(recs[:, 0], kind="stable")]
        parts["in_counts"].append(np.bincount(recs[:, 0] - lo, minlength=hi - lo))
        parts["in_src_new"].append(recs[:, 1].astype(self.idx_n))
        parts["in_src_old"].append(recs[:, 2].astype(self.idx_n))
        parts["in_eid"].append(recs[:, 3].astype(_index_dtype(self.num_edges)))

    def components(self) -> None:
        """Component ids as scipy numbers them on the original ids (by smallest original id),
        trivial-eigenvector entries and shared components, in the new order."""
        uniq, inv = np.unique(self.rep, return_inverse=True)
        smallest = np.full(uniq.size, self.n, dtype=np.int64)
        np.minimum.at(smallest, inv, self.new_to_old)
        rank = np.empty(uniq.size, dtype=np.int64)
        rank[np.argsort(smallest)] = np.arange(uniq.size)
        self.comp = rank[inv]
        self.count = int(uniq.size)
        sqrt_d = np.sqrt(np.where(self.deg == 0, 1.0, self.deg))
        comp_norm = np.sqrt(np.bincount(self.comp, weights=sqrt_d ** 2, minlength=self.count))
        self.y_entry = sqrt_d / comp_norm[self.comp]
        owner = self.owner(np.arange(self.n))
        first = np.full(self.count, self.p, dtype=np.int64)
        last = np.full(self.count, -1, dtype=np.int64)
        np.minimum.at(first, self.comp, owner)
        np.maximum.at(last, self.comp, owner)
        self.shared = first[self.comp] != last[self.comp]
        self.shared_count = int(np.count_nonzero(first != last))

    # ------------------------------------------------------------------ pass 3: the files

    def write_shard(self, q: int, has_x: bool, has_y: bool) -> dict[str, Any]:
        lo, hi = int(self.bounds[q]), int(self.bounds[q + 1])
        idx = self.idx_n
        with np.load(self.work / f"struct-{q}.npz") as z:
            st = {k: z[k] for k in z.files}
        send_parts = [h[(h >= lo) & (h < hi)] if r != q else h[:0]
                      for r, h in enumerate(self.halos)]
        halo = self.halos[q].astype(np.int64)
        arrays: dict[str, np.ndarray] = {
            "rows": np.array([lo, hi], dtype=np.int64),
            "old_ids": self.new_to_old[lo:hi].astype(idx),
            "adj_indptr": st["adj_indptr"], "adj_indices": st["adj_indices"].astype(idx),
            "degree": self.deg[lo:hi],
            "halo": halo.astype(idx), "halo_degree": self.deg[halo],
            "send_ptr": np.concatenate([[0], np.cumsum([s.size for s in send_parts])]
                                       ).astype(np.int64),
            "send": np.concatenate(send_parts).astype(idx),
            "component": self.comp[lo:hi].astype(idx),
            "trivial": self.y_entry[lo:hi], "component_shared": self.shared[lo:hi],
            "in_indptr": st["in_indptr"], "in_src_new": st["in_src_new"],
            "in_src_old": st["in_src_old"], "in_eid": st["in_eid"],
        }
        for kind, present in (("x", has_x), ("y", has_y)):
            if present:
                arrays[kind] = np.load(self.work / f"{kind}-{q}.npy")
        name = f"shard-{q}.npz"
        digest = _save_npz(self.out / name, **arrays)
        (self.work / f"struct-{q}.npz").unlink()
        return {"file": name, "sha256": digest, "bytes": (self.out / name).stat().st_size,
                "rows": [lo, hi], "nnz": self.nnz[q], "in_edges": self.in_edges[q],
                "halo": int(halo.size)}

    def run(self) -> None:
        n, p = self.n, self.p
        bar = tqdm(total=2 * p + 2, desc="stream partition", disable=not self.progress,
                   leave=False)
        self.route_edges()
        x_meta = self.route_rows("x")
        y_meta = self.route_rows("y")
        bar.update(2)
        equal = _equal_bounds(n, p)
        self.owner_identity = (np.searchsorted(equal, self.new_to_old, side="right") - 1
                               ).astype(np.int16)
        random_perm = np.random.default_rng(self.seed).permutation(n)
        self.owner_random = (np.searchsorted(equal, _inverse(random_perm)[self.new_to_old],
                                             side="right") - 1).astype(np.int16)
        del random_perm
        self.deg = np.zeros(n, dtype=np.float64)
        self.rep = np.arange(n, dtype=np.int64)
        self.halos: list[np.ndarray] = []
        self.nnz: list[int] = []
        self.in_edges: list[int] = []
        self.cut, self.cuts = 0, {"identity": 0, "random": 0}
        for q in range(p):
            self.shard_structure(q)
            bar.update(1)
        self.components()
        shards = []
        for q in range(p):
            shards.append(self.write_shard(q, x_meta is not None, y_meta is not None))
            bar.update(1)
        bar.close()
        shutil.rmtree(self.work)
        perm_digest = _save_npz(self.out / "permutation.npz",
                                new_to_old=self.new_to_old.astype(self.idx_n),
                                old_to_new=self.old_to_new.astype(self.idx_n))
        nnz = int(sum(self.nnz))
        undirected = nnz // 2
        cut, cut_random, cut_identity = self.cut // 2, self.cuts["random"] // 2, \
            self.cuts["identity"] // 2
        manifest = {
            "version": FORMAT_VERSION, "key": self.key, "num_shards": p, "num_nodes": n,
            "num_edges": self.num_edges, "nnz": nnz,
            "bounds": [int(b) for b in self.bounds], "shards": shards,
            "permutation": {"file": "permutation.npz", "sha256": perm_digest},
            "order": {"requested": self.order, "method": self.order,
                      "metis_available": metis_available(),
                      "edge_cut": cut, "edge_cut_random": cut_random,
                      "edge_cut_identity": cut_identity, "undirected_edges": undirected,
                      "cut_fraction": cut / max(undirected, 1),
                      "cut_fraction_random": cut_random / max(undirected, 1),
                      "halo_total": int(sum(h.size for h in self.halos)), "seed": self.seed},
            "num_components": self.count,
            "shared_components": self.shared_count,
            "num_features": 0 if x_meta is None else int(np.prod(x_meta[1])),
            "extra": {"has_labels": y_meta is not None, "streamed": True},
        }
        tmp = self.out / f"manifest.json.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, self.out / "manifest.json")
