r"""A row block of GCNConv's normalised operator, built from in-edge lists (pure, no Ray).

A graph shard owns rows :math:`[lo, hi)` and their in-edges :math:`j \to i` as a CSR by target
(``in_indptr`` over its rows, ``in_src`` the sources' global ids). GCNConv's operator restricted
to those rows is

.. math::
    \hat{\mathbf{A}}_p = \hat{\mathbf{D}}_p^{-1/2} (\mathbf{A}_p + \mathbf{I}_p)
    \hat{\mathbf{D}}_\text{ext}^{-1/2}, \qquad \hat d_i = 1 + |\{j \to i : j \ne i\}|

(PyG's ``gcn_norm`` with unit weights: self-loops in the input dropped, one of weight 1 added
per node, duplicates counted), with columns relabelled: own rows first (:math:`0 \dots n_p-1`),
then the *halo* (remote sources, ascending global id).

Why not ``torch_geometric.utils`` / ``gcn_norm`` on an ``edge_index``: that materialises the
rows and columns as two int64 vectors of the shard's edges, and the COO → CSR conversion a third
and a permutation; at ogbn-proteins ×4 a shard has ~79 M in-edges (≈ 2.5 GB of int64 vectors).
Here the CSR comes straight from the in-edge lists (already grouped by target), indices are
int32 where they fit, and the values are computed in row blocks, so the transient memory is one
boolean per edge plus one block.
"""
from __future__ import annotations

import torch
from torch import Tensor

INT32_MAX = 2**31 - 1


def gcn_row_structure(in_indptr: Tensor, in_src: Tensor, lo: int, hi: int
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The sparsity of :math:`\hat{\mathbf{A}}_p` (module docstring).

    Args:
        in_indptr (Tensor): :math:`(n_p + 1,)` CSR offsets of the in-edges by target row.
        in_src (Tensor): :math:`(E_p,)` global source ids (any integer dtype).
        lo, hi (int): the global ids of the rows, :math:`n_p = hi - lo`.

    Returns:
        ``(crow, col, deg_hat, halo)``: CSR offsets :math:`(n_p + 1,)` and columns
        :math:`(E'_p + n_p,)` (int32 when they fit, else int64; each row's kept in-edges in input
        order, then its self-loop), :math:`\hat d` :math:`(n_p,)` float64, and the halo's global
        ids :math:`(h,)` int64, ascending.
    """
    n = hi - lo
    indptr = in_indptr.long()
    counts = torch.diff(indptr)
    src = in_src
    # self-loops are rare: find them without an int64 vector of every edge's row
    row_of = torch.repeat_interleave(torch.arange(lo, hi, dtype=src.dtype), counts)
    keep = src != row_of
    del row_of
    loops = torch.nonzero(~keep).flatten()
    loops_per_row = torch.bincount(torch.searchsorted(indptr, loops, right=True) - 1,
                                   minlength=n)
    kept = counts - loops_per_row
    src = src[keep]
    del keep
    remote = (src < lo) | (src >= hi)
    halo = torch.unique(src[remote]).long()
    nnz = src.numel() + n
    index_dtype = torch.int32 if max(nnz, n + halo.numel()) <= INT32_MAX else torch.int64
    col_kept = torch.empty(src.numel(), dtype=index_dtype)
    col_kept[~remote] = (src[~remote] - lo).to(index_dtype)
    col_kept[remote] = (n + torch.searchsorted(halo, src[remote].long())).to(index_dtype)
    del src, remote
    crow = torch.zeros(n + 1, dtype=torch.long)
    torch.cumsum(kept + 1, 0, out=crow[1:])
    is_loop = torch.zeros(nnz, dtype=torch.bool)
    is_loop[crow[1:] - 1] = True  # each row's last entry
    col = torch.empty(nnz, dtype=index_dtype)
    col[~is_loop] = col_kept  # masked assignment keeps the input order
    col[is_loop] = torch.arange(n, dtype=index_dtype)
    return crow.to(index_dtype), col, kept.double() + 1.0, halo


def gcn_row_values(crow: Tensor, col: Tensor, inv_sqrt_deg: Tensor,
                   block_entries: int = 1 << 22) -> Tensor:
    r"""Values :math:`\hat d_i^{-1/2} \hat d_j^{-1/2}` of :func:`gcn_row_structure`'s entries,
    computed in float64 and returned as float32 (as ``gcn_norm`` on float32 features), in row
    blocks of about ``block_entries`` entries.

    Args:
        crow, col (Tensor): from :func:`gcn_row_structure`.
        inv_sqrt_deg (Tensor): :math:`(n_p + h,)` :math:`\hat d^{-1/2}` of the own rows, then the
            halo.
    """
    n = crow.numel() - 1
    crow64 = crow.long()
    out = torch.empty(col.numel(), dtype=torch.float32)
    a = 0
    while a < n:
        # the rows whose entries start within the next block (at least one row)
        b = max(a + 1, int(torch.searchsorted(crow64, crow64[a] + block_entries, right=True)) - 1)
        b = min(b, n)
        s, e = int(crow64[a]), int(crow64[b])
        rows = torch.repeat_interleave(torch.arange(a, b), torch.diff(crow64[a:b + 1]))
        out[s:e] = (inv_sqrt_deg[rows] * inv_sqrt_deg[col[s:e].long()]).float()
        a = b
    return out


__all__ = ["gcn_row_structure", "gcn_row_values"]
