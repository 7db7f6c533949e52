"""Datasets: ``load_dataset(name, root)`` for Planetoid, Amazon, Coauthor, OGB, CSBM and user files."""
from distgcl.data.registry import (SPECS, DatasetError, DatasetInfo, GraphDataset, dataset_names,
                                   default_cache, default_root, load_dataset, load_from_config,
                                   missing_files, required_files)
from distgcl.data.splits import SplitMasks, random_split

__all__ = ["SPECS", "DatasetError", "DatasetInfo", "GraphDataset", "SplitMasks", "dataset_names",
           "default_cache", "default_root", "load_dataset", "load_from_config", "missing_files",
           "random_split", "required_files"]
