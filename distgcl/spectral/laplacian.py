r"""Graph operators for the spectral step: adjacency, normalized Laplacian, connected components.

All functions are pure (no state, no training) and take a PyG ``edge_index``.

Conventions (one place for all of :mod:`distgcl.spectral`):

* The graph is made **undirected and simple**: every edge is symmetrized, duplicate edges are
  merged into a single edge of weight 1, self-loops are removed.
* **Isolated nodes** (degree 0 after removing self-loops) get :math:`d_i := 1` and
  :math:`L_{ii} := 0` (as :func:`scipy.sparse.csgraph.laplacian` with ``normed=True``). Each one is
  a connected component of its own, with eigenvalue 0 and eigenvector :math:`e_i`, so "c components
  give c zero eigenvalues" holds for every graph, and :math:`D^{1/2}\mathbf{1}` restricted to any
  component (isolated or not) is a null vector of :math:`L`.

.. math::
    \mathbf{L} = \mathbf{I} - \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2},
    \qquad 0 = \lambda_1 \le \dots \le \lambda_N \le 2 .
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components as _cc
from torch import Tensor

from distgcl.typing import EdgeIndex


def _num_nodes(edge_index: EdgeIndex, num_nodes: int | None) -> int:
    if num_nodes is not None:
        return int(num_nodes)
    return int(edge_index.max()) + 1 if edge_index.numel() else 0


def adjacency(edge_index: EdgeIndex, num_nodes: int | None = None,
              dtype: np.dtype | type = np.float64) -> sp.csr_matrix:
    r"""Symmetric binary adjacency :math:`\mathbf{A}` as scipy CSR (simple graph, no self-loops).

    Args:
        edge_index (Tensor): edges :math:`(2, E)`, directed or not, duplicates allowed.
        num_nodes (int, optional): :math:`N` (default: ``edge_index.max() + 1``).
        dtype (numpy dtype, optional): value type; ``bool`` gives a structure-only matrix
            (default: ``float64``).

    Returns:
        scipy.sparse.csr_matrix: :math:`(N, N)`, :math:`A_{ij} = A_{ji} \in \{0, 1\}`,
        :math:`A_{ii} = 0`, sorted indices, int32 indices where they fit.

    Memory: two int32 copies of the symmetrized edge list plus the CSR (about 12 bytes per
    stored entry for float64 values with int32 indices, 5 for ``bool``).
    """
    n = _num_nodes(edge_index, num_nodes)
    ei = edge_index.detach().cpu()
    keep = ei[0] != ei[1]
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    row = ei[0][keep].numpy().astype(index_dtype, copy=False)
    col = ei[1][keep].numpy().astype(index_dtype, copy=False)
    del ei, keep
    if row.size and max(row.max(), col.max()) >= n:
        raise ValueError(f"edge_index refers to node {max(row.max(), col.max())} "
                         f"but num_nodes is {n}")
    # Symmetrize and merge duplicates: structure of A + A^T, values reset to 1.
    rows = np.concatenate([row, col])
    cols = np.concatenate([col, row])
    del row, col
    data = np.ones(rows.size, dtype=bool)
    a = sp.csr_matrix((data, (rows, cols)), shape=(n, n))  # duplicates OR-ed (bool)
    del rows, cols, data
    a.sum_duplicates()
    a.sort_indices()
    if np.dtype(dtype) != np.bool_:
        a = a.astype(dtype)
        a.data[:] = 1
    return a


def degrees(adj: sp.spmatrix) -> np.ndarray:
    """Node degrees :math:`d_i = \\sum_j A_{ij}` (float64, shape :math:`(N,)`)."""
    return np.asarray(adj.sum(axis=1, dtype=np.float64)).ravel()


def normalized_adjacency(adj: sp.spmatrix, dtype: np.dtype | type = np.float64) -> sp.csr_matrix:
    r""":math:`\mathbf{S} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}`, with
    :math:`S_{ii} = 1` for isolated nodes (so that :math:`\mathbf{L} = \mathbf{I} - \mathbf{S}` has
    :math:`L_{ii} = 0` there). Eigenvalues of :math:`\mathbf{S}` lie in :math:`[-1, 1]`.

    Shapes:
        - **input:** ``adj`` :math:`(N, N)` symmetric, no self-loops
        - **output:** :math:`(N, N)` CSR
    """
    deg = degrees(adj)
    isolated = deg == 0
    inv_sqrt = 1.0 / np.sqrt(np.where(isolated, 1.0, deg))
    d = sp.diags(inv_sqrt)
    s = (d @ adj.astype(np.float64) @ d).tocsr()
    if isolated.any():
        s = (s + sp.diags(isolated.astype(np.float64))).tocsr()
    s.sort_indices()
    return s.astype(dtype)


def normalized_laplacian(edge_index: EdgeIndex, num_nodes: int | None = None,
                         dtype: np.dtype | type = np.float64) -> sp.csr_matrix:
    r"""Symmetric normalized Laplacian
    :math:`\mathbf{L} = \mathbf{I} - \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` as scipy CSR.

    The graph is symmetrized, duplicate edges are merged and self-loops removed; isolated nodes
    get :math:`L_{ii} = 0` (module docstring).

    Shapes:
        - **input:** ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, N)` CSR, symmetric positive semi-definite
    """
    s = normalized_adjacency(adjacency(edge_index, num_nodes), dtype=np.float64)
    lap = (sp.identity(s.shape[0], dtype=np.float64, format="csr") - s).tocsr()
    lap.sort_indices()
    return lap.astype(dtype)


def laplacian_from_adjacency(adj: sp.spmatrix, dtype: np.dtype | type = np.float64
                             ) -> sp.csr_matrix:
    """:func:`normalized_laplacian` for an adjacency already built by :func:`adjacency`."""
    s = normalized_adjacency(adj, dtype=np.float64)
    lap = (sp.identity(s.shape[0], dtype=np.float64, format="csr") - s).tocsr()
    lap.sort_indices()
    return lap.astype(dtype)


def to_torch_csr(matrix: sp.spmatrix, dtype: torch.dtype = torch.float64) -> Tensor:
    """A scipy sparse matrix as a ``torch.sparse_csr_tensor`` (int64 indices)."""
    m = sp.csr_matrix(matrix)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data).to(dtype), size=m.shape,
                                       check_invariants=False)


def connected_components(adj: sp.spmatrix) -> tuple[int, np.ndarray]:
    """Number of connected components and the component id of every node ``(N,)``
    (isolated nodes are components of their own)."""
    count, labels = _cc(adj, directed=False)
    return int(count), labels.astype(np.int64)


def trivial_eigenvectors(adj: sp.spmatrix, labels: np.ndarray | None = None) -> np.ndarray:
    r"""Orthonormal basis of the null space of :math:`\mathbf{L}`: one column per connected
    component :math:`C`, :math:`y_C = D^{1/2}\mathbf{1}_C / \lVert D^{1/2}\mathbf{1}_C\rVert`
    (isolated nodes: :math:`d_i := 1`, so :math:`y = e_i`).

    Shapes:
        - **output:** :math:`(N, c)` float64, columns ordered by component id
    """
    if labels is None:
        _, labels = connected_components(adj)
    deg = degrees(adj)
    sqrt_d = np.sqrt(np.where(deg == 0, 1.0, deg))
    c = int(labels.max()) + 1 if labels.size else 0
    norms = np.sqrt(np.bincount(labels, weights=sqrt_d ** 2, minlength=c))
    y = np.zeros((labels.size, c), dtype=np.float64)
    y[np.arange(labels.size), labels] = sqrt_d / norms[labels]
    return y


def largest_component(adj: sp.spmatrix) -> np.ndarray:
    """Sorted node ids of the largest connected component ``(N_c,)``."""
    _, labels = connected_components(adj)
    sizes = np.bincount(labels)
    return np.flatnonzero(labels == sizes.argmax())
