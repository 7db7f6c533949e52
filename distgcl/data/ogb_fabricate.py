"""Write a tiny OGB node-property dataset in OGB's exact on-disk layout.

OGB datasets cannot be downloaded here, so tests exercise the real ``PygNodePropPredDataset``
code path on fabricated files (layout: ``shared/reference/environment.md`` §7).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def _write_csv_gz(path: Path, rows: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, rows, fmt=fmt, delimiter=",")


def fabricate_ogbn_proteins(root: str | Path, num_nodes: int = 240, num_edges: int = 1200,
                            num_species: int = 3, seed: int = 0) -> Path:
    """Create ``<root>/ogbn_proteins`` with random undirected edges (each stored once, as OGB
    does), 8-d edge features in [0, 1], 112 binary labels per node and a species split: the
    first species is test, the second valid, the rest train (OGB holds out whole species).

    Labels depend on the species-free node id parity so that every task has both classes in
    every split. Returns the dataset directory.
    """
    if num_species < 3:
        raise ValueError("need >= 3 species for a train/valid/test species split")
    rng = np.random.default_rng(seed)
    base = Path(root) / "ogbn_proteins"
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    keep = src != dst
    pairs = np.unique(np.sort(np.stack([src[keep], dst[keep]], 1), axis=1), axis=0)
    edge_feat = rng.random((len(pairs), 8)).round(3)
    labels = (rng.random((num_nodes, 112)) < 0.3).astype(np.int64)
    labels[0::2, :] = np.maximum(labels[0::2, :], (np.arange(112) % 2 == 0))  # both classes
    labels[1::2, :] = np.minimum(labels[1::2, :], (np.arange(112) % 3 != 0))
    species_ids = np.array([3702 + 100 * s for s in range(num_species)])
    species = species_ids[rng.integers(0, num_species, num_nodes)]
    species[:num_species] = species_ids  # every species present

    raw = base / "raw"
    _write_csv_gz(raw / "edge.csv.gz", pairs, "%d")
    _write_csv_gz(raw / "edge-feat.csv.gz", edge_feat, "%.3f")
    _write_csv_gz(raw / "num-node-list.csv.gz", np.array([[num_nodes]]), "%d")
    _write_csv_gz(raw / "num-edge-list.csv.gz", np.array([[len(pairs)]]), "%d")
    _write_csv_gz(raw / "node-label.csv.gz", labels, "%d")
    _write_csv_gz(raw / "node_species.csv.gz", species.reshape(-1, 1), "%d")
    split = base / "split" / "species"
    test = np.flatnonzero(species == species_ids[0])
    valid = np.flatnonzero(species == species_ids[1])
    train = np.flatnonzero(species >= species_ids[2])
    for name, idx in (("train", train), ("valid", valid), ("test", test)):
        _write_csv_gz(split / f"{name}.csv.gz", idx.reshape(-1, 1), "%d")
    (base / "RELEASE_v1.txt").write_text("fabricated by distgcl for tests\n")
    return base
