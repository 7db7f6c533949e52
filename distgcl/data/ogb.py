"""OGB node-property datasets through ogb's own ``PygNodePropPredDataset``.

Three fixes are applied here: (1) ogb 1.3.6 calls ``torch.load`` without ``weights_only`` and fails
on torch >= 2.6, so the PyG storage classes it pickles are allow-listed; (2) the raw files may sit in
a read-only root, so the dataset directory is mirrored into a writable cache with symlinks and
processed there; (3) the mirror remembers the raw files' sizes and times, and drops the processed
file when they change (a dataset regenerated in the same folder would otherwise load stale).
Mirroring and processing run under a file lock and count once their completion marker (holding
those sizes and times) is written last (:func:`distgcl.data.cache.build_once`), so concurrent
ranks and nodes never load a half-written processed file.

ogbn-proteins has no node features; :func:`proteins_node_features` aggregates the edge features.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from distgcl.data.cache import build_once
from distgcl.data.splits import index_to_mask

_SAFE_GLOBALS_DONE = False


def allow_pyg_pickles() -> None:
    """Allow-list the PyG classes inside OGB's processed files for ``weights_only`` loads."""
    global _SAFE_GLOBALS_DONE
    if _SAFE_GLOBALS_DONE:
        return
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    torch.serialization.add_safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage])
    _SAFE_GLOBALS_DONE = True


OGB_RAW_FILES = {
    "ogbn-proteins": ["raw/edge.csv.gz", "raw/edge-feat.csv.gz", "raw/num-node-list.csv.gz",
                      "raw/num-edge-list.csv.gz", "raw/node-label.csv.gz",
                      "raw/node_species.csv.gz", "split/species/train.csv.gz",
                      "split/species/valid.csv.gz", "split/species/test.csv.gz"],
    "ogbn-arxiv": ["raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/num-node-list.csv.gz",
                   "raw/num-edge-list.csv.gz", "raw/node-label.csv.gz",
                   "split/time/train.csv.gz", "split/time/valid.csv.gz",
                   "split/time/test.csv.gz"],
}


def ogb_dir(name: str) -> str:
    return name.replace("-", "_")


PROTEINS_NODE_FEATURES = ("sum", "mean", "sum+mean", "sum+mean+species")


def proteins_node_features(edge_index: Tensor, edge_attr: Tensor, num_nodes: int,
                           node_species: Tensor | None = None,
                           how: str = "sum+mean") -> Tensor:
    r"""Node features of ogbn-proteins from its edge features, as ``how`` lists them:

    .. math::
        \mathrm{sum}_i = \sum_{(j, i) \in E} e_{ji}, \qquad
        \mathrm{mean}_i = \mathrm{sum}_i / \max(1, \deg_i), \qquad
        \mathrm{species}_i = \mathrm{onehot}(s_i),

    concatenated in the order ``sum``, ``mean``, ``species`` (one column per species present, in
    increasing taxonomy id). Edges are directed as stored (ogb stores both directions), so a node
    aggregates every edge it belongs to once.

    Args:
        edge_index (Tensor): :math:`(2, E)`.
        edge_attr (Tensor): :math:`(E, F)` edge features.
        num_nodes (int): :math:`N`.
        node_species (Tensor, optional): :math:`(N)` or :math:`(N, 1)` species ids (needed for
            ``species``).
        how (str, optional): one of :obj:`PROTEINS_NODE_FEATURES` (default: ``sum+mean``, as
            :class:`~distgcl.config.DataConfig` explains).

    Shapes: output :math:`(N, F)` (``sum``, ``mean``), :math:`(N, 2F)`, or :math:`(N, 2F + S)`.

    Memory: one :math:`(N, F)` sum and a degree vector beyond the inputs (the edge features are
    added in place into the sum, never copied or gathered per edge).
    """
    if how not in PROTEINS_NODE_FEATURES:
        raise ValueError(f"unknown proteins node features {how!r}; known: "
                         f"{', '.join(PROTEINS_NODE_FEATURES)}")
    target = edge_index[1]
    total = torch.zeros(num_nodes, edge_attr.size(1), dtype=torch.float32)
    total.index_add_(0, target, edge_attr.float())
    degree = torch.bincount(target, minlength=num_nodes).clamp_min(1).unsqueeze(1)
    parts = {"sum": total, "mean": total / degree}
    if "species" in how:
        if node_species is None:
            raise ValueError("species features need node_species")
        species = node_species.view(-1)
        ids, which = torch.unique(species, sorted=True, return_inverse=True)
        parts["species"] = torch.nn.functional.one_hot(which, ids.numel()).float()
    return torch.cat([parts[p] for p in how.split("+")], dim=1)


def _fingerprint(source: Path, name: str) -> list:
    files = [source / f for f in OGB_RAW_FILES[name]]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _mirror(source: Path, cache: Path) -> None:
    """Symlink the raw/split folders and the release marker into a writable directory (the
    caller holds its lock and drops a stale processed folder)."""
    cache.mkdir(parents=True, exist_ok=True)
    for entry in ("raw", "split"):
        link = cache / entry
        if not link.exists():
            link.symlink_to((source / entry).resolve(), target_is_directory=True)
    release = sorted(source.glob("RELEASE_v*.txt"))
    marker = cache / (release[0].name if release else "RELEASE_v1.txt")
    if not marker.exists():
        marker.write_text("mirrored by distgcl\n")


def load_ogb(name: str, source_root: Path, cache_root: Path, *, download: bool,
             node_features: str = "sum+mean") -> tuple[Data, int, bool]:
    """Load ``ogbn-proteins`` / ``ogbn-arxiv`` as (data with masks, num_classes or tasks, multilabel)."""
    from ogb.nodeproppred import PygNodePropPredDataset

    allow_pyg_pickles()
    source, mirror = source_root / ogb_dir(name), cache_root / ogb_dir(name)
    if not source.is_dir() and not download:  # the registry checks files first; a last guard
        raise FileNotFoundError(f"{source} does not exist")

    def process() -> tuple[Data, dict]:
        if source.is_dir():
            _mirror(source, mirror)
        dataset = PygNodePropPredDataset(name=name, root=str(cache_root))
        return dataset[0], dataset.get_idx_split()

    # the marker holds the raw files' sizes and times: processed files of other ones are dropped
    stamp = json.dumps(_fingerprint(source, name)) if source.is_dir() else "downloaded"
    data, split = build_once(mirror, mirror / "processed", process, stamp=stamp)
    n = data.num_nodes
    if name == "ogbn-proteins":
        x = proteins_node_features(data.edge_index, data.edge_attr, n, data.node_species,
                                   node_features)
        out = Data(x=x, edge_index=data.edge_index, y=data.y.float(), num_nodes=n)
        num_out, multilabel = int(data.y.size(1)), True
    else:
        out = Data(x=data.x, edge_index=to_undirected(data.edge_index, num_nodes=n),
                   y=data.y.view(-1), num_nodes=n)
        num_out, multilabel = int(data.y.max()) + 1, False
    out.train_mask = index_to_mask(split["train"], n)
    out.val_mask = index_to_mask(split["valid"], n)
    out.test_mask = index_to_mask(split["test"], n)
    return out, num_out, multilabel
