r"""The raw files of a dataset as a :class:`~distgcl.distributed.partition.GraphSource`, for the
job's driver to partition in chunks (:func:`~distgcl.distributed.partition.stream_partition`)
without holding the graph: :func:`graph_source`.

The shards must hold what :func:`~distgcl.data.load_dataset` gives the local backend, array by
array, so each source reproduces its loader:

* **ogbn-proteins** (OGB raw layout, also what ``distgcl generate proteins`` writes): ogb's
  loader adds the inverse edges interleaved (``add_inverse_edge``: row :math:`k` becomes edges
  :math:`2k, 2k+1`), node features are :func:`~distgcl.data.ogb.proteins_node_features` of
  those edges (``data.proteins_node_features``), labels float32, the species split's index
  CSVs become fixed masks.
* **file** graphs (``torch.save``\ d ``Data`` or dict, memory-mapped): edges int64, features
  float32, labels and masks as stored.

The ``data.log_features`` / ``standardize_features`` / ``normalize_features`` options go
through :func:`~distgcl.data.registry.preprocess_features`, the loader's own function; with any
of them the source holds the :math:`(N, F)` feature matrix once (standardization needs column
statistics over all rows, and the same torch reductions keep the rows bit-identical) -- the
features, never the edges.

Not streamed (:func:`stream_plan` says why): ogbn-arxiv (ogb's loader symmetrizes it with
``to_undirected``, which sorts and merges: a stream would number the edges differently), the
small PyG datasets and CSBM (loaded whole, as before), and OGB folders with missing files (the
loader names them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgcl.data.registry import (SPECS, DatasetError, DatasetInfo, default_root,
                                   missing_files, preprocess_features)
from distgcl.data.splits import SplitMasks, index_to_mask
from distgcl.distributed.partition import CsvGraphSource, FileGraphSource, GraphSource

OGB_SPLITS = {"ogbn-proteins": "species"}
"""OGB datasets a stream reproduces, and the split folder their fixed masks come from."""


class PreprocessedSource(GraphSource):
    """``inner`` with its features through :func:`~distgcl.data.registry.preprocess_features`
    (edges and labels passed through). Holds the :math:`(N, F)` float32 features during
    :meth:`features` (column statistics need every row)."""

    def __init__(self, inner: GraphSource, name: str, *, log: bool, standardize: bool,
                 normalize: bool) -> None:
        self.inner, self.name = inner, name
        self.options = {"log": bool(log), "standardize": bool(standardize),
                        "normalize": bool(normalize)}
        self.num_nodes = inner.num_nodes

    def edges(self, chunk: int) -> Any:
        return self.inner.edges(chunk)

    def labels(self, chunk: int) -> Any:
        return self.inner.labels(chunk)

    def features(self, chunk: int) -> Any:
        parts = [torch.from_numpy(np.asarray(rows)) for rows in self.inner.features(chunk)]
        if not parts:
            return
        x = preprocess_features(torch.cat(parts).float(), self.name, **self.options)
        del parts
        for lo in range(0, x.size(0), chunk):
            yield x[lo:lo + chunk].numpy()

    def fingerprint(self) -> str:
        flags = ":".join(f"{k}={int(v)}" for k, v in self.options.items())
        return f"{self.inner.fingerprint()}|features:{flags}"


def _preprocessed(source: GraphSource, cfg: Any) -> GraphSource:
    log, std, norm = bool(cfg.log_features), bool(cfg.standardize_features), \
        bool(cfg.normalize_features)
    if not (log or std or norm):
        return source  # chunk by chunk, nothing held
    return PreprocessedSource(source, cfg.name, log=log, standardize=std, normalize=norm)


def _read_column(path: Path) -> np.ndarray:
    """A header-less one-column (gzip) CSV of integers as int64 (the split index files)."""
    import pandas as pd

    return np.array(pd.read_csv(path, header=None, dtype=np.int64).to_numpy().reshape(-1))


def _csv_columns(path: Path) -> int:
    """Columns of a header-less CSV (its first line only)."""
    import pandas as pd

    return int(pd.read_csv(path, header=None, nrows=1).shape[1])


def _ogb_plan(cfg: Any) -> tuple[GraphSource, DatasetInfo] | str:
    name = cfg.name
    if name not in OGB_SPLITS:
        return (f"ogb's loader symmetrizes {name} with to_undirected (sorted, merged edges), "
                f"which a stream would number differently")
    root = Path(cfg.root) if cfg.root is not None else default_root()
    if missing_files(name, root):
        return f"raw files of {name} are missing under {root}"
    folder = root / SPECS[name].raw_dir
    how = cfg.proteins_node_features
    source = CsvGraphSource(folder, edge_features=how, add_inverse=True, label_dtype="float32")
    n = source.num_nodes
    raw = folder / "raw"
    width = _csv_columns(raw / "edge-feat.csv.gz")
    species = 0
    if "species" in how:
        species = int(np.unique(_read_column(raw / "node_species.csv.gz")).size)
    num_features = {"sum": width, "mean": width, "species": species}
    split = OGB_SPLITS[name]
    masks = SplitMasks(*(index_to_mask(torch.from_numpy(_read_column(
        folder / "split" / split / f"{part}.csv.gz")), n) for part in ("train", "valid", "test")))
    info = DatasetInfo(name=name, num_nodes=n,
                       num_features=sum(num_features[p] for p in how.split("+")),
                       num_classes=_csv_columns(raw / "node-label.csv.gz"), multilabel=True,
                       split=split, has_labels=True, fixed_masks=masks)
    return _preprocessed(source, cfg), info


def _file_plan(cfg: Any) -> tuple[GraphSource, DatasetInfo] | str:
    path = cfg.path
    if path is None or not Path(path).is_file():
        return "data.path is not a file"  # the loader says so in its own words
    try:
        source = FileGraphSource(path)
    except Exception as exc:  # any problem with the file: the loader's one-line message
        return f"cannot memory-map {path}: {str(exc).splitlines()[0] if str(exc) else exc}"
    x, y = source.x, source.y
    if x is None or x.dim() != 2:
        return f"{path} has no [N, F] features x"
    masks = [source.attr(k) for k in ("train_mask", "val_mask", "test_mask")]
    multilabel, num_classes, split = False, 0, "none"
    if y is not None:  # as load_dataset reads the labels of a file graph
        multilabel = y.dim() == 2 and y.size(1) > 1
        num_classes = int(y.size(1)) if multilabel else int(y.max()) + 1
        split = "file" if all(m is not None for m in masks) else "random"
    fixed = SplitMasks(*(torch.as_tensor(m).clone() for m in masks)) if split == "file" \
        else None
    info = DatasetInfo(name=cfg.name, num_nodes=int(source.num_nodes),
                       num_features=int(x.size(1)), num_classes=num_classes,
                       multilabel=bool(multilabel), split=split, has_labels=y is not None,
                       fixed_masks=fixed)
    return _preprocessed(source, cfg), info


def stream_plan(cfg: Any) -> tuple[GraphSource, DatasetInfo] | str:
    """:func:`graph_source`'s answer, or why the dataset is not streamed (a short phrase).

    Raises:
        DatasetError: unknown dataset name.
    """
    if cfg.name not in SPECS:
        raise DatasetError(f"unknown dataset {cfg.name!r}; valid names: {', '.join(SPECS)}")
    family = SPECS[cfg.name].family
    if family == "ogb":
        return _ogb_plan(cfg)
    if family == "file":
        return _file_plan(cfg)
    return f"{cfg.name} is small ({family}): no streaming reader"


def graph_source(cfg: Any) -> tuple[GraphSource, DatasetInfo] | None:
    """The raw files of the dataset of ``cfg`` (a :class:`~distgcl.config.DataConfig`) as a
    chunked :class:`~distgcl.distributed.partition.GraphSource`, with its
    :class:`~distgcl.data.registry.DatasetInfo` read from those files (sizes, label shape,
    fixed split masks), without building the graph; None where the dataset is not streamed
    (module docstring; :func:`stream_plan` says why). Partitioned with
    :func:`~distgcl.distributed.partition.stream_partition`, the source gives the shards that
    :func:`~distgcl.distributed.partition.partition_graph` builds (same order) from
    :func:`~distgcl.data.load_from_config`'s graph, and the info equals its ``info()``.

    Memory: :math:`O(N)` (split masks, species ids); the features :math:`(N, F)` only with a
    feature option, at partition time.
    """
    plan = stream_plan(cfg)
    return None if isinstance(plan, str) else plan


__all__ = ["OGB_SPLITS", "PreprocessedSource", "graph_source", "stream_plan"]
