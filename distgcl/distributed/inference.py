r"""Full-graph GCN embeddings computed layer by layer over the graph shards, written streamed.

After training, the embedding :math:`\mathbf{Z} = \mathbf{H}^{(L)}` of every node is

.. math::
    \mathbf{H}^{(l+1)} = \sigma_l\left(\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}
    \hat{\mathbf{D}}^{-1/2}\mathbf{H}^{(l)}\boldsymbol{\Theta}^{(l)} + b^{(l)}\right),
    \qquad \mathbf{H}^{(0)} = \mathbf{X},

with :math:`\hat{\mathbf{A}} = \mathbf{A} + \mathbf{I}` over the directed edges as given
(self-loops replaced by one of weight 1, duplicates counted) and :math:`\hat d_i` its in-degree:
exactly :meth:`~distgcl.nn.encoder.GCNEncoder.embed_sparse`. Row :math:`i` of layer
:math:`l+1` needs only the rows of layer :math:`l` of :math:`i` and its in-neighbours, so every
shard :math:`p` computes its rows from its own rows and its *halo* rows (remote in-neighbours).

:func:`sharded_embeddings` drives it: per layer one call per shard. Every shard keeps its rows of
the current layer as actor state and returns, as one object per peer (Ray ``num_returns``), the
rows each peer's halo needs; the driver hands those object references on to the peers' next call,
so halo rows go shard to shard through the object store, never through the driver (the pattern of
:meth:`~distgcl.distributed.linalg.ShardedBlockSpace.matmul`). Each layer exchanges the narrower
of :math:`\mathbf{H}` and :math:`\mathbf{H}\boldsymbol{\Theta}`, as ``embed_sparse``.

The result is then written **streamed** into one file in the **original** node order: the driver
fetches ``chunk_rows`` rows at a time from one shard and writes them at their rows of the file, so
it holds one chunk, never a layer; no process holds graph + features + all layers (a shard holds
its rows of the graph, its features and two layers).

File formats (:class:`RowFile`):

* ``.pt``: a real ``torch.save`` file of a float32 :math:`(N, d)` tensor, loadable with
  ``torch.load(path, weights_only=True)`` as :func:`distgcl.export.save_embeddings` writes it.
  ``torch.save`` cannot stream (it writes a storage from memory in one go), so the file is
  written by ``torch.save`` under :func:`torch.serialization.skip_data` (the zip archive with
  the tensor's metadata and room for its bytes, nothing read from the tensor), the rows are
  written into that room in place, and the zip CRC of the record is patched at the end;
* ``.npy``: the ``.npy`` header, then the rows (``numpy.load(path, mmap_mode="r")`` works).

:func:`read_rows` reads only the given rows (memory-mapped), and :func:`probe_rows` adds their
labels from the shards: what a linear probe needs for the nodes it scores.
"""
from __future__ import annotations

import os
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import ray
import torch
from torch import Tensor

from distgcl.checkpoint import unique_tmp
from distgcl.distributed.shards import GraphShards

_DATA_RECORD = "data/0"


@dataclass
class InferenceResult:
    """What :func:`sharded_embeddings` did."""

    path: Path
    num_nodes: int
    dim: int
    layers: int
    shard_calls: int
    """Rounds of calls to the shards (one call per shard each): setup and one per layer."""
    max_chunk_rows: int
    """Most rows the driver held at once (bounded by ``chunk_rows``)."""
    attempts: int = 1
    chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the pass

def encoder_state(encoder: Any) -> dict[str, Any]:
    """``{"hparams", "state_dict"}`` of a :class:`~distgcl.nn.encoder.GCNEncoder` (CPU tensors),
    what the shards rebuild it from; a dict of that form is passed through."""
    if isinstance(encoder, dict):
        if not {"hparams", "state_dict"} <= set(encoder):
            raise ValueError("an encoder dict needs 'hparams' and 'state_dict'")
        return encoder
    if not hasattr(encoder, "hparams") or not hasattr(encoder, "convs"):
        raise TypeError(f"expected a GCNEncoder, got {type(encoder).__name__}")
    return {"hparams": dict(encoder.hparams),
            "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}


def _fan(actors: Sequence[Any], method: str, inputs: Sequence[Any] | None, *args: Any
         ) -> list[Any]:
    """``actor_q.method(*args, *[inputs[i][q] for i != q])`` for every shard ``q``, each
    returning one object per shard (a single one when :math:`P = 1`)."""
    p = len(actors)
    out = []
    for q, actor in enumerate(actors):
        parts = [] if inputs is None else [inputs[i][q] for i in range(p) if i != q]
        call = getattr(actor, method)
        out.append((call.options(num_returns=p) if p > 1 else call).remote(*args, *parts))
    return out


def run_layers(shards: GraphShards, encoder: Any, session: str) -> tuple[int, int, int]:
    """Compute every layer on the shards (state kept there under ``session``). Returns
    ``(layers, width, rounds of shard calls)``."""
    actors = shards.actors
    state = encoder_state(encoder)
    layers = int(state["hparams"]["layers"])
    if shards.manifest.num_features and \
            int(state["hparams"]["in_dim"]) != shards.manifest.num_features:
        raise ValueError(f"the encoder takes {state['hparams']['in_dim']} features, the "
                         f"partition has {shards.manifest.num_features}")
    enc_ref = ray.put(state)
    requests = _fan(actors, "infer_halo_requests", None)
    degrees = _fan(actors, "infer_begin", requests, session, enc_ref)
    exports = _fan(actors, "infer_operator", degrees, session)
    for layer in range(layers):
        exports = _fan(actors, "infer_layer", exports, session, layer)
    shapes = shards.get([a.infer_shape.remote(session) for a in actors])
    widths = {w for _, _, w in shapes}
    if any(l != layers for l, _, _ in shapes) or len(widths) != 1 or \
            sum(r for _, r, _ in shapes) != shards.manifest.num_nodes:
        raise RuntimeError(f"inconsistent inference state on the shards: {shapes}")
    return layers, widths.pop(), layers + 4


def _chunks(shards: GraphShards, session: str, chunk_rows: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(original ids, rows)`` of every shard, ``chunk_rows`` rows at a time; the next chunk
    is requested before the current one is handed out (two chunks in flight at most)."""
    calls = [(a, lo, min(lo + chunk_rows, hi - b))
             for a, (b, hi) in zip(shards.actors, zip(shards.manifest.bounds,
                                                      shards.manifest.bounds[1:]))
             for lo in range(0, hi - b, chunk_rows)]
    pending = None
    for actor, lo, hi in calls:
        ref = actor.infer_rows.remote(session, lo, hi)
        if pending is not None:
            yield shards.get(pending)
        pending = ref
    if pending is not None:
        yield shards.get(pending)


def sharded_embeddings(shards: GraphShards, encoder: Any, path: str | Path, *,
                       chunk_rows: int = 65536, attempts: int = 2) -> InferenceResult:
    r"""Embed every node of the sharded graph with ``encoder`` and write the float32
    :math:`(N, d)` embeddings to ``path`` (``.npy``: numpy, else torch) in the original node
    order (module docstring). Equal to ``GCNEncoder.embed_sparse`` on the whole graph (float
    rounding: the same products, summed in another order).

    Args:
        shards (GraphShards): started actors of the partition (``serve`` ``all`` or
            ``sampling``: the pass uses the in-edges and features).
        encoder (GCNEncoder or dict): the trained encoder (or :func:`encoder_state`).
        path (str or Path): output file, written atomically (temporary file and rename).
        chunk_rows (int, optional): rows fetched and written at once by the driver
            (default: ``65536``).
        attempts (int, optional): passes to try when a shard restarted during one
            (default: ``2``).

    Memory: driver :math:`O(\text{chunk\_rows} \cdot d)`; shard :math:`p` its rows of the graph
    and features plus two layers :math:`O(n_p d)` and its halo rows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1 (got {chunk_rows})")
    path = Path(path)
    n = shards.manifest.num_nodes
    for attempt in range(1, attempts + 1):
        session = uuid.uuid4().hex
        try:
            layers, dim, rounds = run_layers(shards, encoder, session)
            writer = RowFile(path, n, dim)
            biggest, count = 0, 0
            try:
                for ids, rows in _chunks(shards, session, chunk_rows):
                    biggest, count = max(biggest, rows.shape[0]), count + 1
                    writer.write(ids, rows)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            return InferenceResult(path, n, dim, layers, rounds + count, biggest, attempt,
                                   count)
        except Exception as err:  # a restarted shard lost the pass: run it again
            if attempt == attempts or "InferenceStateLost" not in f"{type(err)} {err}":
                raise
        finally:
            for a in shards.actors:
                a.infer_end.remote(session)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- the file

class RowFile:
    r"""A float32 :math:`(N, d)` file (``.npy`` or torch ``.pt``) written by rows in any
    order, holding one chunk in memory (module docstring). ``close`` renames it into place."""

    def __init__(self, path: str | Path, num_rows: int, dim: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (int(num_rows), int(dim))
        self.tmp = unique_tmp(self.path)
        self.npy = self.path.suffix == ".npy"
        self.written = 0
        if self.npy:
            with open(self.tmp, "wb") as fh:
                np.lib.format.write_array_header_2_0(
                    fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                         "fortran_order": False, "shape": self.shape})
                self.offset = fh.tell()
                fh.truncate(self.offset + 4 * self.shape[0] * self.shape[1])
        else:
            # the archive with room for the bytes; torch.empty's pages are never touched
            with torch.serialization.skip_data():
                torch.save(torch.empty(self.shape, dtype=torch.float32), self.tmp)
            self.offset = int(torch._C.PyTorchFileReader(str(self.tmp))
                              .get_record_offset(_DATA_RECORD))

    def write(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Rows ``rows`` :math:`(k, d)` at file rows ``ids`` :math:`(k,)` (distinct)."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.float32)
        if rows.shape != (ids.size, self.shape[1]):
            raise ValueError(f"rows of shape {rows.shape} for {ids.size} ids of width "
                             f"{self.shape[1]}")
        if ids.size == 0:
            return
        if int(ids.min()) < 0 or int(ids.max()) >= self.shape[0]:
            raise ValueError(f"row ids outside [0, {self.shape[0]})")
        # a mapping per chunk, dropped after it: only this chunk's pages are ever mapped
        mm = np.memmap(self.tmp, dtype=np.float32, mode="r+", offset=self.offset,
                       shape=self.shape)
        order = np.argsort(ids, kind="stable")
        mm[ids[order]] = rows[order]
        mm.flush()
        del mm
        self.written += ids.size

    def close(self) -> Path:
        """Check every row was written, fix the zip CRC (``.pt``), rename into place."""
        if self.written != self.shape[0]:
            self.abort()
            raise RuntimeError(f"{self.written} rows written of {self.shape[0]}")
        if not self.npy:
            _patch_zip_crc(self.tmp, self.offset, 4 * self.shape[0] * self.shape[1])
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _patch_zip_crc(path: Path, offset: int, size: int, block: int = 1 << 22) -> None:
    """Write the CRC-32 of the ``size`` bytes at ``offset`` (a stored zip record) into its
    local header and central-directory entry (``skip_data`` left the CRC of the empty room)."""
    crc = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = size
        while left:
            piece = fh.read(min(block, left))
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/" + _DATA_RECORD))
        start_dir = zf.start_dir
    packed = crc.to_bytes(4, "little")
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 14)  # local file header: CRC-32 at byte 14
        fh.write(packed)
        fh.seek(start_dir)
        central = fh.read()
        name = info.filename.encode()
        pos = 0
        while True:  # central-directory entries: signature, CRC-32 at 16, name at 46
            pos = central.find(b"PK\x01\x02", pos)
            if pos < 0:
                raise RuntimeError(f"{path}: no central-directory entry for {info.filename}")
            n_len = int.from_bytes(central[pos + 28:pos + 30], "little")
            if central[pos + 46:pos + 46 + n_len] == name:
                fh.seek(start_dir + pos + 16)
                fh.write(packed)
                return
            pos += 46


def read_rows(path: str | Path, ids: Any) -> Tensor:
    """Rows ``ids`` of an embeddings file (``.pt`` or ``.npy``), memory-mapped: only the pages
    of those rows are read. Returns float32 :math:`(k, d)`."""
    path = Path(path)
    idx = torch.as_tensor(np.asarray(ids), dtype=torch.long).flatten()
    if path.suffix == ".npy":
        z = np.load(path, mmap_mode="r")
        return torch.from_numpy(np.ascontiguousarray(z[idx.numpy()]))
    z = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    if not isinstance(z, Tensor) or z.dim() != 2:
        raise ValueError(f"{path} does not hold an [N, d] embedding tensor")
    return z.index_select(0, idx).clone()


def probe_rows(path: str | Path, ids: Any, actors: Sequence[Any], bounds: Sequence[int]
               ) -> tuple[Tensor, Tensor]:
    """``(embedding rows, labels)`` of original ids ``ids``: the rows from the file
    (:func:`read_rows`), the labels from the shard actors (``actors`` and the manifest's
    ``bounds``, as a worker holds them)."""
    from distgcl.distributed.sampling import ShardedNeighborSampler

    sampler = ShardedNeighborSampler.from_actors(actors, bounds, [1])
    idx = torch.as_tensor(np.asarray(ids), dtype=torch.long).flatten()
    return read_rows(path, idx), sampler.labels(idx)


# ----------------------------------------------------------------------------- a worker's view

def store_shards(store: Any) -> Any:
    """The shard actors behind a :class:`~distgcl.store.ShardedGraphStore` (the job's, as a
    training worker holds them) as what :func:`sharded_embeddings` drives: an
    :class:`~distgcl.distributed.services.AttachedShards` (never started nor stopped here)."""
    from distgcl.distributed.partition import load_manifest
    from distgcl.distributed.services import AttachedShards

    if getattr(store, "manifest_path", None) is None:
        raise ValueError("the graph store does not name its partition (manifest_path): "
                         "inference over the shards needs it")
    # a layer of a large graph may take longer than one sampling round (the store's timeout)
    return AttachedShards(list(store.actors), load_manifest(store.manifest_path), "float32",
                          max(600.0, float(getattr(store, "timeout", 0.0))))


def _row_chunks(path: str | Path, chunk_rows: int) -> Iterator[tuple[np.ndarray, Tensor]]:
    """``(ids, rows)`` of an embeddings file, ``chunk_rows`` rows at a time."""
    n = _num_rows(path)
    for lo in range(0, n, chunk_rows):
        ids = np.arange(lo, min(lo + chunk_rows, n))
        yield ids, read_rows(path, ids)


def _num_rows(path: str | Path) -> int:
    path = Path(path)
    if path.suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    return int(torch.load(path, mmap=True, weights_only=True, map_location="cpu").shape[0])


def column_stats(path: str | Path, chunk_rows: int = 65536) -> tuple[Tensor, Tensor]:
    r"""``(mean, std)`` ``[d]`` of the columns of an embeddings file, read in chunks:
    :math:`\mu = rac1N\sum_i z_i`, :math:`\sigma = \sqrt{rac{1}{N-1}\sum_i (z_i-\mu)^2}`
    (``torch.std``'s unbiased rule), summed in float64 (two passes: no cancellation)."""
    total, count = None, 0
    for _, rows in _row_chunks(path, chunk_rows):
        part = rows.double().sum(0)
        total, count = (part if total is None else total + part), count + rows.shape[0]
    if total is None:
        raise ValueError(f"{path} has no rows")
    mean = total / count
    sq = sum((rows.double() - mean).pow(2).sum(0) for _, rows in _row_chunks(path, chunk_rows))
    std = (sq / max(count - 1, 1)).sqrt()
    return mean.float(), std.float()


def copy_rows(src: str | Path, dst: str | Path, chunk_rows: int = 65536) -> Path:
    """Copy an embeddings file into another format (``.pt`` <-> ``.npy``), streamed."""
    n = _num_rows(src)
    dim = int(read_rows(src, [0]).shape[1]) if n else 0
    writer = RowFile(dst, n, dim)
    try:
        for ids, rows in _row_chunks(src, chunk_rows):
            writer.write(ids, rows.numpy())
        return writer.close()
    except BaseException:
        writer.abort()
        raise


__all__ = ["InferenceResult", "RowFile", "column_stats", "copy_rows", "encoder_state",
           "probe_rows", "read_rows", "run_layers", "sharded_embeddings", "store_shards"]
