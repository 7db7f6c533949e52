"""A shard's row block of GCNConv's operator from its in-edge lists equals the same rows of
PyG's ``gcn_norm`` operator on the whole graph (self-loops and duplicate edges included)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from distgcl.nn.gcn_rows import gcn_row_structure, gcn_row_values


def _graph(n: int = 60, e: int = 700, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    loops = torch.arange(0, n, 7).repeat(2, 1)  # some self-loops, one twice
    return torch.cat([ei, loops, loops[:, :2], ei[:, :5]], dim=1)  # and duplicates


def _in_lists(ei: torch.Tensor, lo: int, hi: int, dtype: torch.dtype):
    src, dst = ei
    mine = (dst >= lo) & (dst < hi)
    order = torch.argsort(dst[mine], stable=True)
    d, s = dst[mine][order], src[mine][order]
    indptr = torch.zeros(hi - lo + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(d - lo, minlength=hi - lo), 0)
    return indptr, s.to(dtype)


@pytest.mark.parametrize("lo,hi,dtype,block", [(0, 60, torch.int64, 1 << 22),
                                               (13, 41, torch.int32, 1 << 22),
                                               (13, 41, torch.int32, 7)])
def test_row_block_equals_gcn_norm_rows(lo, hi, dtype, block):
    n = 60
    ei = _graph(n)
    indptr, src = _in_lists(ei, lo, hi, dtype)
    crow, col, deg_hat, halo = gcn_row_structure(indptr, src, lo, hi)
    assert crow.dtype == col.dtype == torch.int32
    own = torch.arange(lo, hi)
    ext = torch.cat([own, halo])  # global id of every column
    assert bool((halo[1:] > halo[:-1]).all()) and not bool(((halo >= lo) & (halo < hi)).any())
    # the halo's degrees come from their own shards: here from the whole graph
    no_loops = ei[:, ei[0] != ei[1]]
    deg_all = torch.bincount(no_loops[1], minlength=n).double() + 1.0
    assert torch.equal(deg_hat, deg_all[lo:hi])
    vals = gcn_row_values(crow, col, deg_all[ext].rsqrt(), block_entries=block)
    got = torch.sparse_csr_tensor(crow.long(), col.long(), vals,
                                  (hi - lo, ext.numel())).to_dense()

    index, weight = gcn_norm(ei, None, n, add_self_loops=True, dtype=torch.float64)
    ref = torch.zeros(n, n, dtype=torch.float64).index_put_((index[1], index[0]), weight,
                                                            accumulate=True)
    torch.testing.assert_close(got.double(), ref[lo:hi][:, ext], rtol=1e-6, atol=1e-7)
    assert torch.equal(ref[lo:hi][:, torch.isin(torch.arange(n), ext, invert=True)],
                       torch.zeros(hi - lo, n - ext.numel(), dtype=torch.float64))
