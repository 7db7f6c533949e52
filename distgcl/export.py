r"""What a run hands to the user: node embeddings and the trained encoder.

Every run writes, beside ``result.json`` (rank 0 only, once):

- ``embeddings.pt``: the final node embeddings, float32 ``[N, d]`` (``torch.load`` it; with
  ``eval.save_embeddings_npy: true`` also ``embeddings.npy`` for ``numpy.load``),
- ``encoder.pt``: the trained :class:`~distgcl.nn.encoder.GCNEncoder` as plain data
  (``weights_only``-loadable): its constructor arguments, its ``state_dict``, the feature width,
  the feature preprocessing the run applied and the resolved config.

:func:`load_encoder` rebuilds the encoder from a run directory without any training code, and
:func:`embed_graph` embeds a graph with it (``distgcl embed RUN_DIR --graph PATH``). Both the run
and ``distgcl embed`` compute embeddings with :func:`node_embeddings` (row-batched sparse products,
:meth:`~distgcl.nn.encoder.GCNEncoder.embed_sparse`; memory :math:`O(N (F + 2d) + E)`, nothing
:math:`N \times N`), so embedding the training graph again reproduces ``embeddings.pt`` exactly
on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from distgcl.checkpoint import atomic_torch_save, unique_tmp
from distgcl.nn.encoder import GCNEncoder

EMBEDDINGS_FILE = "embeddings.pt"
EMBEDDINGS_NPY = "embeddings.npy"
ENCODER_FILE = "encoder.pt"
ENCODER_FORMAT = "distgcl-encoder"
ENCODER_VERSION = 1


class ExportError(ValueError):
    """A user-facing problem with a run directory or a graph to embed; one-line message."""


@torch.no_grad()
def node_embeddings(encoder: GCNEncoder, data: Data, batch_size: int = 0,
                    progress: bool = False) -> Tensor:
    """Frozen embeddings ``[N, d]`` (float32, CPU) of every node of ``data``.

    The encoder runs in eval mode (its previous mode is restored) on its own device (the
    run's: a GPU run embeds on the GPU), in row chunks of :func:`embed_rows` (``batch_size``,
    capped on CUDA by the free device memory), and the result is gathered to the host chunk by
    chunk (:func:`gather_rows`).

    Args:
        batch_size (int, optional): rows per sparse product (``0``: all at once, as far as the
            device's memory allows); the result does not depend on it (default: :obj:`0`).
        progress (bool, optional): progress bar over the row batches (default: :obj:`False`).
    """
    device = next(encoder.parameters()).device
    rows = embed_rows(encoder, data.num_nodes, batch_size, device)
    was_training = encoder.training
    encoder.eval()
    try:
        z = encoder.embed_sparse(data.x.to(device), data.edge_index.to(device),
                                 batch_size=rows, progress=progress)
    finally:
        encoder.train(was_training)
    return gather_rows(z.detach(), rows)


EMBED_MEMORY_FRACTION = 0.25
"""Share of the free GPU memory one row chunk's temporaries may take (the rest: the operator,
the ``[N, d]`` layer outputs, whatever else the process holds)."""
EMBED_TEMPORARIES = 4
"""Row-sized ``[rows, width]`` temporaries alive at once in a chunk (the sparse product's
output, the linear layer's, the bias add, the activation)."""


def embed_rows(encoder: GCNEncoder, num_nodes: int, batch_size: int,
               device: torch.device) -> int:
    r"""Rows per chunk of the full-graph embedding: ``batch_size`` (``0``: all ``N``), and on
    CUDA at most what fits in :data:`EMBED_MEMORY_FRACTION` of the free memory
    (``torch.cuda.mem_get_info``): :math:`\lfloor f \cdot \mathrm{free} /
    (t \cdot w \cdot 4\,\mathrm{B}) \rfloor` rows, :math:`w` the encoder's widest layer,
    :math:`t` = :data:`EMBED_TEMPORARIES`. On CPU ``batch_size`` is used as given. ``0``
    means all rows (the encoder's convention)."""
    rows = batch_size if batch_size > 0 else max(num_nodes, 1)
    if device.type != "cuda":
        return batch_size
    h = encoder.hparams
    width = max(int(h["in_dim"]), int(h.get("hidden_dim") or h["out_dim"]), int(h["out_dim"]))
    free, _ = torch.cuda.mem_get_info(device)
    fit = int(EMBED_MEMORY_FRACTION * free) // (EMBED_TEMPORARIES * width * 4)
    return max(1, min(rows, fit))


def gather_rows(z: Tensor, rows: int = 0) -> Tensor:
    """``z`` as a contiguous float32 CPU tensor, copied ``rows`` rows at a time (``0``: at once)
    through page-locked memory when ``z`` is on a GPU, so no second ``[N, d]`` float32 copy is
    ever made on the device."""
    if z.device.type == "cpu":
        return z.to(torch.float32).contiguous()
    out = torch.empty(z.shape, dtype=torch.float32, pin_memory=z.device.type == "cuda")
    step = rows if rows > 0 else max(z.size(0), 1)
    for lo in range(0, z.size(0), step):
        out[lo:lo + step].copy_(z[lo:lo + step], non_blocking=True)
    if z.device.type == "cuda":
        torch.cuda.synchronize(z.device)  # the copies above are asynchronous
    return out


def save_embeddings(z: Tensor, path: Path, npy: bool = False) -> list[Path]:
    """Write ``z`` to ``path`` (torch) and, with ``npy``, beside it as ``.npy``; atomic writes.
    Returns the files written."""
    atomic_torch_save(z, path)
    written = [path]
    if npy:
        written.append(save_npy(z, path.with_suffix(".npy")))
    return written


def save_npy(z: Tensor, path: Path) -> Path:
    """``numpy.save`` through a uniquely named temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        with open(tmp, "wb") as fh:  # a file handle: np.save would append ".npy" to a name
            np.save(fh, z.numpy())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def encoder_payload(encoder: GCNEncoder, config_dict: dict[str, Any], *, dataset: str,
                    num_nodes: int) -> dict[str, Any]:
    """What ``encoder.pt`` holds (plain data and tensors, loadable with ``weights_only``)."""
    data_cfg = config_dict.get("data", {})
    return {
        "format": ENCODER_FORMAT,
        "version": ENCODER_VERSION,
        "class": type(encoder).__name__,
        "hparams": dict(encoder.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "num_features": int(encoder.hparams["in_dim"]),
        "preprocessing": {"normalize_features": bool(data_cfg.get("normalize_features", False)),
                          "log_features": bool(data_cfg.get("log_features", False)),
                          "standardize_features": bool(data_cfg.get("standardize_features",
                                                                    False))},
        "embed_batch_size": int(config_dict.get("eval", {}).get("embed_batch_size", 0)),
        "threads": config_dict.get("train", {}).get("threads"),
        "method": config_dict.get("method"),
        "dataset": dataset,
        "num_nodes": int(num_nodes),
        "config": config_dict,
    }


def save_encoder(path: Path, encoder: GCNEncoder, config_dict: dict[str, Any], *, dataset: str,
                 num_nodes: int) -> Path:
    atomic_torch_save(encoder_payload(encoder, config_dict, dataset=dataset,
                                      num_nodes=num_nodes), path)
    return path


@dataclass
class LoadedEncoder:
    """A trained encoder rebuilt from a run directory, with what ``encoder.pt`` says about it."""

    encoder: GCNEncoder
    meta: dict[str, Any]
    """Everything of ``encoder.pt`` but the weights (``hparams``, ``preprocessing``, ``config``)."""
    run_dir: Path

    @property
    def num_features(self) -> int:
        return int(self.meta["num_features"])


def load_encoder(run_dir: str | Path) -> LoadedEncoder:
    """Rebuild the trained encoder of the run in ``run_dir`` (CPU, eval mode).

    Raises:
        ExportError: no such directory, no ``encoder.pt`` in it, or a file that is not one.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"run directory {run} does not exist")
    path = run / ENCODER_FILE
    if not path.is_file():
        raise ExportError(f"{run} has no {ENCODER_FILE} (is it the --out folder of a finished "
                          f"distgcl train run?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: one line, not a traceback
        raise ExportError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise ExportError(f"{path} is not a distgcl encoder file")
    if payload.get("version", 0) > ENCODER_VERSION:
        raise ExportError(f"{path} has format version {payload['version']}; this distgcl reads "
                          f"up to {ENCODER_VERSION}")
    if payload.get("class") != GCNEncoder.__name__:
        raise ExportError(f"{path} holds a {payload.get('class')}, this distgcl rebuilds "
                          f"{GCNEncoder.__name__} only")
    encoder = GCNEncoder(**payload["hparams"])
    try:
        encoder.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ExportError(f"{path}: weights do not fit the encoder it describes "
                          f"({str(exc).splitlines()[0]})") from None
    encoder.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return LoadedEncoder(encoder, meta, run)


def graph_for_encoder(loaded: LoadedEncoder, graph: str | Path | None) -> tuple[str, Data]:
    """The graph to embed, preprocessed as the run preprocessed its training graph: the user file
    ``graph`` (a ``torch.save``d PyG ``Data`` with ``x`` and ``edge_index``), or the run's own
    training graph when ``graph`` is None. Returns ``(name, data)``.

    Raises:
        ExportError: a feature width other than the encoder's.
        DatasetError: the file cannot be read (or the training graph's files are missing).
    """
    from distgcl.data import load_dataset, load_from_config

    normalize = bool(loaded.meta["preprocessing"]["normalize_features"])
    log_features = bool(loaded.meta["preprocessing"].get("log_features", False))
    standardize = bool(loaded.meta["preprocessing"].get("standardize_features", False))
    if graph is None:
        import distgcl.methods  # noqa: F401  (registers the method sections the config names)
        from distgcl.config import config_from_dict

        config = config_from_dict(loaded.meta["config"])
        name, data = config.data.name, load_from_config(config.data, seed=config.train.seed).data
        where = f"the run's training graph ({name})"
    else:
        path = Path(graph)
        if not path.is_file():
            raise ExportError(f"graph file {path} does not exist")
        name = path.stem
        data = load_dataset("file", path=str(path), normalize_features=normalize,
                            log_features=log_features, standardize_features=standardize).data
        where = f"graph {path}"
    if data.num_features != loaded.num_features:
        raise ExportError(f"{where} has {data.num_features} features per node, but the encoder "
                          f"of {loaded.run_dir} was trained on {loaded.num_features}")
    return name, data


def embed_graph(run_dir: str | Path, graph: str | Path | None = None,
                out: str | Path | None = None, *, progress: bool | None = None
                ) -> tuple[Path, Tensor]:
    """``distgcl embed``: rebuild the run's encoder, embed ``graph`` (default: the training
    graph), write the embeddings to ``out`` (``.npy``: numpy, else torch; default:
    ``<run_dir>/embeddings-<graph name>.pt``). Returns ``(out path, embeddings)``.

    Runs on CPU with the run's ``train.threads`` and ``eval.embed_batch_size``; a progress bar
    shows when the graph takes more than one batch (``progress=None``).
    """
    loaded = load_encoder(run_dir)
    name, data = graph_for_encoder(loaded, graph)
    target = Path(out) if out is not None else loaded.run_dir / f"embeddings-{name}.pt"
    threads = loaded.meta.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    batch_size = int(loaded.meta.get("embed_batch_size") or 0)
    if progress is None:
        progress = 0 < batch_size < data.num_nodes
    z = node_embeddings(loaded.encoder, data, batch_size, progress)
    if target.suffix == ".npy":
        save_npy(z, target)
    else:
        atomic_torch_save(z, target)
    return target, z


__all__ = ["EMBEDDINGS_FILE", "EMBEDDINGS_NPY", "ENCODER_FILE", "ExportError", "LoadedEncoder",
           "embed_graph", "embed_rows", "encoder_payload", "gather_rows", "graph_for_encoder",
           "load_encoder",
           "node_embeddings", "save_embeddings", "save_encoder", "save_npy"]
