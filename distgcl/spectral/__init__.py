"""Spectral step of E2Neg as pure functions: Laplacian, eigensolvers, centres, star graphs.

No training and no distributed code here; :mod:`distgcl.methods.e2neg` composes these.

Names are imported lazily (PEP 562), so that ``import distgcl.spectral.laplacian`` (e.g. in a
graph-shard actor) does not pay for scikit-learn, which only the centre selection needs.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "cluster_purity": "centres", "select_centres": "centres", "spectral_clusters": "centres",
    "kmeans_space": "centres",
    "allocate_clusters": "centres", "nearest_by_features": "centres",
    "SOLVERS": "eigensolvers", "Eigenpairs": "eigensolvers",
    "laplacian_eigenpairs": "eigensolvers", "residual_norms": "eigensolvers",
    "smallest_eigenpairs": "eigensolvers",
    "adjacency": "laplacian", "connected_components": "laplacian", "degrees": "laplacian",
    "largest_component": "laplacian", "laplacian_from_adjacency": "laplacian",
    "normalized_adjacency": "laplacian", "normalized_laplacian": "laplacian",
    "to_torch_csr": "laplacian", "trivial_eigenvectors": "laplacian",
    "StarGraph": "reconstruction", "attach_leaves": "reconstruction",
    "reconstruct_stars": "reconstruction",
    "BlockSpace": "block", "LocalBlockSpace": "block", "block_eigenpairs": "block",
    "block_lobpcg": "block", "chebyshev_subspace": "block",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'distgcl.spectral' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"distgcl.spectral.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
