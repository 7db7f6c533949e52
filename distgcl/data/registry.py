"""One entry point for every dataset: :func:`load_dataset`.

Raw files are read from a data root that may be read-only (``data.root``, else ``$DISTGCL_DATA``,
else ``~/.cache/distgcl/data``); anything PyG/OGB processes goes into a writable cache
(``data.cache``, else ``$DISTGCL_CACHE``, else ``~/.cache/distgcl``), never into the root.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
import torch
from torch_geometric.data import Data

from distgcl.data.splits import SplitMasks, random_split


class DatasetError(ValueError):
    """A user-facing dataset problem (unknown name, missing files); one-line message."""


@dataclass
class GraphDataset:
    """A loaded graph plus how to split it for evaluation."""

    name: str
    data: Data
    """``x [N, F]`` float, ``edge_index [2, E]``, ``y`` (``[N]`` class ids or ``[N, T]`` 0/1;
    absent on a label-free graph)."""
    num_classes: int
    """Classes, or tasks for multi-label data (0 without labels)."""
    multilabel: bool = False
    split: str = "random"
    """``public`` / ``species`` / ``time`` / ``file`` (fixed masks on ``data``), ``random``
    (1:1:8 per seed) or ``none`` (no labels: nothing to split)."""
    extra: dict = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        """Whether the graph has node labels (``data.y``); evaluation that needs them is skipped
        otherwise."""
        return getattr(self.data, "y", None) is not None

    @property
    def fixed_split(self) -> bool:
        return self.split not in ("random", "none")

    @property
    def num_nodes(self) -> int:
        return int(self.data.num_nodes)

    def split_masks(self, seed: int) -> SplitMasks:
        """The split for probe run ``seed``: the fixed one, or a seeded random 1:1:8 split."""
        if not self.has_labels:
            raise ValueError(f"dataset {self.name!r} has no labels: there is no split to draw")
        if self.fixed_split:
            return SplitMasks(self.data.train_mask, self.data.val_mask, self.data.test_mask)
        return random_split(self.data.num_nodes, seed)

    def info(self) -> "DatasetInfo":
        """What evaluation needs of this dataset without its graph (:class:`DatasetInfo`)."""
        fixed = self.fixed_split and self.has_labels
        return DatasetInfo(
            name=self.name, num_nodes=self.num_nodes, num_features=int(self.data.num_features),
            num_classes=int(self.num_classes), multilabel=bool(self.multilabel),
            split=self.split, has_labels=self.has_labels,
            fixed_masks=(SplitMasks(self.data.train_mask.cpu(), self.data.val_mask.cpu(),
                                    self.data.test_mask.cpu()) if fixed else None))


@dataclass
class DatasetInfo:
    """A dataset without its graph: sizes, label kind and split, as :class:`GraphDataset`
    answers them. What a training worker holds when the graph lives in shard actors (the
    features, labels and edges come from a :class:`~distgcl.store.BaseGraphStore`); the job's
    driver builds it (from the raw files, or :meth:`GraphDataset.info`) and hands it over.
    :math:`O(N)` booleans at most (the fixed masks)."""

    name: str
    num_nodes: int
    num_features: int
    num_classes: int
    multilabel: bool = False
    split: str = "random"
    has_labels: bool = True
    fixed_masks: SplitMasks | None = None
    """The fixed split's ``[N]`` boolean masks (``public`` / ``species`` / ... splits)."""

    @property
    def fixed_split(self) -> bool:
        return self.split not in ("random", "none")

    def split_masks(self, seed: int) -> SplitMasks:
        """As :meth:`GraphDataset.split_masks`."""
        if not self.has_labels:
            raise ValueError(f"dataset {self.name!r} has no labels: there is no split to draw")
        if self.fixed_split:
            if self.fixed_masks is None:
                raise ValueError(f"dataset {self.name!r}: fixed split {self.split!r} without "
                                 f"its masks")
            return self.fixed_masks
        return random_split(self.num_nodes, seed)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    family: str
    """Where the raw files live under the root (e.g. ``Planetoid/Cora/raw``)."""
    raw_dir: str
    raw_files: tuple[str, ...]
    description: str


def _planetoid(name: str) -> DatasetSpec:
    low = name.lower()
    files = tuple(f"ind.{low}.{ext}" for ext in ("x", "tx", "allx", "y", "ty", "ally", "graph",
                                                 "test.index"))
    return DatasetSpec(low, "planetoid", f"Planetoid/{name}/raw", files,
                       f"Planetoid {name} citation graph, public split")


SPECS: dict[str, DatasetSpec] = {
    "cora": _planetoid("Cora"),
    "citeseer": _planetoid("CiteSeer"),
    "pubmed": _planetoid("PubMed"),
    "photo": DatasetSpec("photo", "amazon", "Amazon/Photo/raw", ("amazon_electronics_photo.npz",),
                         "Amazon Photo co-purchase graph, random 1:1:8 splits"),
    "computers": DatasetSpec("computers", "amazon", "Amazon/Computers/raw",
                             ("amazon_electronics_computers.npz",),
                             "Amazon Computers co-purchase graph, random 1:1:8 splits"),
    "cs": DatasetSpec("cs", "coauthor", "Coauthor/CS/raw", ("ms_academic_cs.npz",),
                      "Coauthor CS graph, random 1:1:8 splits"),
    "physics": DatasetSpec("physics", "coauthor", "Coauthor/Physics/raw", ("ms_academic_phy.npz",),
                           "Coauthor Physics graph, random 1:1:8 splits"),
    "ogbn-arxiv": DatasetSpec("ogbn-arxiv", "ogb", "ogbn_arxiv", (), "OGB arxiv, time split"),
    "ogbn-proteins": DatasetSpec("ogbn-proteins", "ogb", "ogbn_proteins", (),
                                 "OGB proteins, 112 binary tasks, species split"),
    "csbm": DatasetSpec("csbm", "generated", "", (), "synthetic contextual SBM (generated)"),
    "file": DatasetSpec("file", "file", "", (), "your own PyG Data saved with torch.save"),
}
PYG_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed", "photo": "Photo",
             "computers": "Computers", "cs": "CS", "physics": "Physics"}


def dataset_names() -> list[str]:
    return list(SPECS)


def default_root() -> Path:
    return Path(os.environ.get("DISTGCL_DATA", Path.home() / ".cache" / "distgcl" / "data"))


def default_cache() -> Path:
    return Path(os.environ.get("DISTGCL_CACHE", Path.home() / ".cache" / "distgcl"))


def required_files(name: str, root: Path) -> list[Path]:
    """The raw files ``name`` needs under ``root`` (empty for generated/user datasets)."""
    spec = _spec(name)
    if spec.family == "ogb":
        from distgcl.data.ogb import OGB_RAW_FILES

        return [root / spec.raw_dir / f for f in OGB_RAW_FILES[name]]
    return [root / spec.raw_dir / f for f in spec.raw_files]


def missing_files(name: str, root: Path) -> list[Path]:
    return [p for p in required_files(name, root) if not p.is_file()]


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(SPECS)}")
    return SPECS[name]


def _cache_dir(cache: Path, root: Path) -> Path:
    """A cache folder per source root, so two roots never share processed files."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return cache / "processed" / key


def _load_pyg(name: str, root: Path, cache: Path) -> Data:
    """Planetoid / Amazon / Coauthor through PyG, processing into the cache, not into ``root``.

    PyG writes its processed files in place, so processing runs under a lock on the dataset's
    cache folder and counts only once its completion marker is written
    (:func:`distgcl.data.cache.build_once`): concurrent ranks and nodes process it once, and a
    process killed mid-way leaves files that the next one redoes, never loads."""
    from distgcl.data.cache import build_once

    spec = SPECS[name]
    family_root = _cache_dir(cache, root) / spec.raw_dir.split("/")[0]
    raw = family_root / spec.raw_dir.split("/", 1)[1]
    # PyG's processed_dir of all three families: <family root>/<Name>/processed, beside raw/
    return build_once(raw.parent, raw.parent / "processed",
                      lambda: _process_pyg(name, root, family_root, raw))


def _process_pyg(name: str, root: Path, family_root: Path, raw: Path) -> Data:
    """Link the raw files into ``raw`` and let PyG process (or load) the dataset (under the
    caller's lock)."""
    from torch_geometric.datasets import Amazon, Coauthor, Planetoid

    spec = SPECS[name]
    raw.mkdir(parents=True, exist_ok=True)
    for fname in spec.raw_files:
        src, dst = root / spec.raw_dir / fname, raw / fname
        if src.is_file() and not dst.exists():
            dst.symlink_to(src.resolve())
    # Raw files absent here (only possible with data.download=true) make PyG download them.
    pyg_name = PYG_NAMES[name]
    if spec.family == "planetoid":
        ds = Planetoid(str(family_root), pyg_name, split="public")
    elif spec.family == "amazon":
        ds = Amazon(str(family_root), pyg_name)
    else:
        ds = Coauthor(str(family_root), pyg_name)
    return ds[0]  # type: ignore[index]


def _load_file(path: str | None) -> Data:
    """A user's ``torch.save``d PyG ``Data`` (or dict) with ``x`` and ``edge_index``; ``y`` and the
    masks are optional (a label-free graph trains, and evaluation that needs labels is skipped)."""
    if path is None:
        raise DatasetError("data.path is required for data.name=file")
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"data.path {p} does not exist")
    from distgcl.data.ogb import allow_pyg_pickles

    allow_pyg_pickles()
    try:
        obj = torch.load(p, weights_only=True)
    except Exception as exc:  # any unpickling problem is a bad user file
        raise DatasetError(f"cannot read {p} as a PyG Data file: {str(exc).splitlines()[0]}") from None
    if isinstance(obj, dict):
        obj = Data(**obj)
    if not isinstance(obj, Data):
        raise DatasetError(f"{p} holds a {type(obj).__name__}, expected torch_geometric Data")
    for key in ("x", "edge_index"):
        if getattr(obj, key, None) is None:
            raise DatasetError(f"{p}: Data has no '{key}' (needs x and edge_index; y is optional)")
    if obj.x.dim() != 2:
        raise DatasetError(f"{p}: x must have shape [N, F] (got {list(obj.x.shape)})")
    if obj.edge_index.dim() != 2 or obj.edge_index.size(0) != 2:
        raise DatasetError(f"{p}: edge_index must have shape [2, E] (got {list(obj.edge_index.shape)})")
    return obj


def load_dataset(name: str, root: str | Path | None = None, *, cache: str | Path | None = None,
                 download: bool = False, normalize_features: bool = False,
                 path: str | None = None, seed: int = 0, csbm: object | None = None,
                 proteins_node_features: str = "sum+mean",
                 log_features: bool = False,
                 standardize_features: bool = False) -> GraphDataset:
    """Load dataset ``name`` (see ``distgcl datasets``) as a :class:`GraphDataset`.

    Raises:
        DatasetError: unknown name, or raw files missing (the message names them and where).
    """
    spec = _spec(name)
    root_path = Path(root) if root is not None else default_root()
    cache_path = Path(cache) if cache is not None else default_cache()
    if spec.family not in ("generated", "file") and not download:
        missing = missing_files(name, root_path)
        if missing:
            where = missing[0].parent
            shown = ", ".join(p.name for p in missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise DatasetError(
                f"dataset {name!r}: {len(missing)} file(s) missing under {where}: {shown} "
                f"(no download without network: copy them there, point data.root/DISTGCL_DATA at "
                f"a folder that has them, or set data.download=true)")

    split, multilabel, num_classes = "random", False, 0
    if spec.family == "planetoid":
        data, split = _load_pyg(name, root_path, cache_path), "public"
        num_classes = int(data.y.max()) + 1
    elif spec.family in ("amazon", "coauthor"):
        data = _load_pyg(name, root_path, cache_path)
        num_classes = int(data.y.max()) + 1
    elif spec.family == "ogb":
        from distgcl.data.ogb import load_ogb

        data, num_classes, multilabel = load_ogb(
            name, root_path, _cache_dir(cache_path, root_path), download=download,
            node_features=proteins_node_features)
        split = "species" if name == "ogbn-proteins" else "time"
    elif spec.family == "generated":
        from distgcl.config import CSBMConfig
        from distgcl.data.csbm import csbm_graph

        c = csbm if csbm is not None else CSBMConfig()
        data = csbm_graph(c.num_nodes, c.num_classes, c.homophily, c.avg_degree,  # type: ignore[attr-defined]
                          c.num_features, c.feature_signal, seed)  # type: ignore[attr-defined]
        num_classes = c.num_classes  # type: ignore[attr-defined]
    else:
        data = _load_file(path)
        y = getattr(data, "y", None)
        if y is not None:
            multilabel = y.dim() == 2 and y.size(1) > 1
            num_classes = int(y.size(1)) if multilabel else int(y.max()) + 1
            if all(getattr(data, k, None) is not None
                   for k in ("train_mask", "val_mask", "test_mask")):
                split = "file"
    y = getattr(data, "y", None)
    if y is None:  # label-free (a user file; any family whose loader found no labels)
        num_classes, multilabel, split = 0, False, "none"
    labels = {"y": y} if y is not None else {}
    data = Data(x=data.x.float(), edge_index=data.edge_index.long(), **labels,
                num_nodes=data.num_nodes,
                **{k: getattr(data, k) for k in ("train_mask", "val_mask", "test_mask")
                   if getattr(data, k, None) is not None})
    data.x = preprocess_features(data.x, name, log=log_features,
                                 standardize=standardize_features, normalize=normalize_features)
    return GraphDataset(name, data, num_classes, multilabel, split)


def preprocess_features(x: torch.Tensor, name: str, *, log: bool = False,
                        standardize: bool = False, normalize: bool = False) -> torch.Tensor:
    r"""The ``data.*_features`` options on float features ``x`` :math:`(N, F)`, in this order:
    :math:`\log(1 + x)` (``log``), per-column :math:`(x - \mu) / \max(\sigma, 10^{-6})` over the
    :math:`N` rows (``standardize``), :func:`normalize_rows` (``normalize``). One function for
    :func:`load_dataset` and the streamed partition (:mod:`distgcl.data.sources`), so both hold
    the same feature rows.

    Raises:
        DatasetError: ``log`` on a negative feature.
    """
    if log:
        if bool((x < 0).any()):
            raise DatasetError(f"dataset {name!r}: data.log_features needs non-negative "
                               f"features (min {float(x.min()):.3g})")
        x = torch.log1p(x)
    if standardize:
        # zero mean, unit variance per column over this graph's nodes (constant columns -> 0)
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    if normalize:
        x = normalize_rows(x)
    return x


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows summing to one, as PyG's ``NormalizeFeatures`` (GRACE, E2Neg): features with a
    negative entry are first shifted by the (global) minimum, so every entry is in ``[0, 1]``;
    a row that is zero (after the shift) stays zero.

    Non-negative features are only divided (bit-identical to before). Unlike PyG, the row sum is
    clamped at ``1e-12``, not ``1``, so rows summing below one (PubMed's TF-IDF) still sum to one.
    Without the shift, a real-valued row whose entries cancel divides by ~0 (values ~1e10).
    """
    if x.numel() and bool((x < 0).any()):
        x = x - x.min()
    return x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)


def load_from_config(cfg: object, seed: int) -> GraphDataset:
    """:func:`load_dataset` with the fields of a :class:`~distgcl.config.DataConfig`."""
    return load_dataset(cfg.name, cfg.root, cache=cfg.cache, download=cfg.download,  # type: ignore[attr-defined]
                        normalize_features=cfg.normalize_features, path=cfg.path,  # type: ignore[attr-defined]
                        seed=seed, csbm=cfg.csbm,  # type: ignore[attr-defined]
                        proteins_node_features=cfg.proteins_node_features,  # type: ignore[attr-defined]
                        log_features=cfg.log_features,  # type: ignore[attr-defined]
                        standardize_features=cfg.standardize_features)  # type: ignore[attr-defined]
