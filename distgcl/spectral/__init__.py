"""Spectral step of E2Neg as pure functions: Laplacian, eigensolvers, centres, star graphs.

No training and no distributed code here; :mod:`distgcl.methods.e2neg` composes these.
"""
from distgcl.spectral.centres import cluster_purity, select_centres, spectral_clusters
from distgcl.spectral.eigensolvers import (SOLVERS, Eigenpairs, laplacian_eigenpairs,
                                           residual_norms, smallest_eigenpairs)
from distgcl.spectral.laplacian import (adjacency, connected_components, largest_component,
                                        laplacian_from_adjacency, normalized_adjacency,
                                        normalized_laplacian, to_torch_csr,
                                        trivial_eigenvectors)
from distgcl.spectral.reconstruction import StarGraph, reconstruct_stars

__all__ = [
    "SOLVERS", "Eigenpairs", "StarGraph", "adjacency", "cluster_purity", "connected_components",
    "laplacian_eigenpairs", "laplacian_from_adjacency", "largest_component",
    "normalized_adjacency", "normalized_laplacian", "reconstruct_stars", "residual_norms",
    "select_centres", "smallest_eigenpairs", "spectral_clusters", "to_torch_csr",
    "trivial_eigenvectors",
]
