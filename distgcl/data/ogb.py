"""OGB node-property datasets through ogb's own ``PygNodePropPredDataset``.

Two fixes are applied here: (1) ogb 1.3.6 calls ``torch.load`` without ``weights_only`` and fails on
torch >= 2.6, so the PyG storage classes it pickles are allow-listed; (2) the raw files may sit in a
read-only root, so the dataset directory is mirrored into a writable cache with symlinks and
processed there.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter, to_undirected

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


def _mirror(source: Path, cache: Path) -> None:
    """Symlink the raw/split folders and the release marker into a writable directory."""
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
             proteins_node_features: str = "mean") -> tuple[Data, int, bool]:
    """Load ``ogbn-proteins`` / ``ogbn-arxiv`` as (data with masks, num_classes or tasks, multilabel)."""
    from ogb.nodeproppred import PygNodePropPredDataset

    allow_pyg_pickles()
    source = source_root / ogb_dir(name)
    if source.is_dir():
        _mirror(source, cache_root / ogb_dir(name))
        root = cache_root
    elif download:
        root = cache_root
    else:  # the registry checks files first; this is a last guard
        raise FileNotFoundError(f"{source} does not exist")
    dataset = PygNodePropPredDataset(name=name, root=str(root))
    split = dataset.get_idx_split()
    data = dataset[0]
    n = data.num_nodes
    if name == "ogbn-proteins":
        # No node features: aggregate the 8-d edge features of each node's edges (OGB recipe).
        data.x = scatter(data.edge_attr, data.edge_index[1], dim=0, dim_size=n,
                         reduce=proteins_node_features)
        out = Data(x=data.x, edge_index=data.edge_index, y=data.y.float(), num_nodes=n)
        num_out, multilabel = int(data.y.size(1)), True
    else:
        out = Data(x=data.x, edge_index=to_undirected(data.edge_index, num_nodes=n),
                   y=data.y.view(-1), num_nodes=n)
        num_out, multilabel = int(data.y.max()) + 1, False
    out.train_mask = index_to_mask(split["train"], n)
    out.val_mask = index_to_mask(split["valid"], n)
    out.test_mask = index_to_mask(split["test"], n)
    return out, num_out, multilabel
