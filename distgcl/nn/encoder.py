"""Stack of PyG ``GCNConv`` layers used as the GCL encoder."""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from tqdm.auto import tqdm

from distgcl.typing import EdgeIndex, OptTensor


def make_activation(name: str, width: int) -> nn.Module:
    """Activation module by name; ``prelu`` gets one slope per channel (as E2Neg's
    ``PReLU(output)``), ``prelu-shared`` a single slope (GRACE's ``nn.PReLU()``)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(width)
    if name == "prelu-shared":
        return nn.PReLU()
    if name == "rrelu":
        return nn.RReLU()
    if name == "elu":
        return nn.ELU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; known: relu, prelu, prelu-shared, rrelu, elu, "
                     "identity")


class GCNEncoder(nn.Module):
    r"""The multi-layer GCN encoder of GRACE / NML-GCL / E2Neg.

    .. math::
        \mathbf{H}^{(l+1)} = \sigma\left(\mathbf{\hat{D}}^{-1/2}\mathbf{\hat{A}}
        \mathbf{\hat{D}}^{-1/2}\mathbf{H}^{(l)}\mathbf{\Theta}^{(l)}\right)

    Args:
        in_dim (int): input feature width.
        out_dim (int): embedding width.
        hidden_dim (int, optional): inner width (default: :obj:`2 * out_dim`, as GRACE).
        layers (int, optional): number of GCN layers (default: :obj:`2`).
        activation (str, optional): ``relu | prelu | prelu-shared | rrelu | elu | identity``
            (default: ``relu``). ``prelu-shared`` is one PReLU module (one slope) reused by
            every layer, as GRACE's code; ``prelu`` one per-channel PReLU per layer.
        activate_last (bool, optional): apply :math:`\sigma` after the last layer as well
            (GRACE: yes, NML-GCL: no) (default: :obj:`True`).
        sparse (bool, optional): ``forward`` runs every layer as one CSR sparse x dense
            product with its backward (:func:`normalized_operator`, built once per call and
            shared by the layers); ``False``: PyG's per-edge messages (``index_select`` +
            ``scatter`` over :math:`E \times d`). Same values to float rounding, same
            gradients; an attribute, not a parameter nor in :attr:`hparams`, so the state dict
            and ``encoder.pt`` are the same either way (default: :obj:`True`).

    ``forward(x, edge_index, targets)`` computes the last layer for the ``targets`` rows only,
    as :math:`(\hat{\mathbf{A}}\mathbf{H})_{T}\boldsymbol{\Theta} + b` (aggregate, then
    transform: exact for GCNConv), in :math:`O(|E_{\to T}| F + |T| F d)` instead of
    :math:`O(N F d)` (E2Neg trains on its centres' rows only). Everything runs inside
    ``forward``, so a DDP wrapper sees (and synchronises) every use of the parameters.

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices :math:`(2, E)`, optional
          distinct ``targets`` :math:`(T,)`
        - **output:** node embeddings :math:`(N, F_{out})`, or :math:`(T, F_{out})` with targets
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, layers: int = 2,
                 activation: str = "relu", activate_last: bool = True,
                 sparse: bool = True) -> None:
        super().__init__()
        self.sparse = sparse
        if layers < 1:
            raise ValueError(f"'{self.__class__.__name__}' needs at least one layer (got {layers})")
        hidden_dim = hidden_dim or 2 * out_dim
        widths = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        n_act = layers if activate_last else layers - 1
        if activation == "prelu-shared":  # the same module (and slope) after every layer
            shared = make_activation(activation, 1)
            self.activations = nn.ModuleList([shared] * n_act)
        else:
            self.activations = nn.ModuleList(make_activation(activation, widths[i + 1])
                                             for i in range(n_act))
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hparams: dict[str, Any] = {
            "in_dim": in_dim, "out_dim": out_dim, "hidden_dim": hidden_dim, "layers": layers,
            "activation": activation, "activate_last": activate_last}
        """The constructor arguments: ``GCNEncoder(**encoder.hparams)`` rebuilds the module (then
        ``load_state_dict`` gives the trained one; what ``encoder.pt`` stores)."""

    def forward(self, x: Tensor, edge_index: EdgeIndex, targets: OptTensor = None) -> Tensor:
        """The encoder on ``(x, edge_index)`` (class docs); with :attr:`sparse`, the propagation
        matrix is built once (:class:`_Operators`) and every layer is one CSR product."""
        if not self.sparse:
            return self._forward_messages(x, edge_index, targets)
        n = x.size(0)
        operators = _Operators(edge_index, n, x.dtype)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if i == last and targets is not None:
                x = _sparse_conv(conv, x, operators.rows(conv, targets), aggregate_first=True)
            else:
                x = _sparse_conv(conv, x, operators.full(conv))
            if i < len(self.activations):
                x = self.activations[i](x)
        return x

    def _forward_messages(self, x: Tensor, edge_index: EdgeIndex,
                          targets: OptTensor = None) -> Tensor:
        r"""``forward`` through PyG's per-edge messages (``index_select`` + ``scatter`` over
        :math:`E \times d` messages): the path before issue 19, kept for comparison."""
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if i == last and targets is not None:
                x = _conv_rows(conv, x, edge_index, targets)
            else:
                x = conv(x, edge_index)
            if i < len(self.activations):
                x = self.activations[i](x)
        return x

    @torch.no_grad()
    def embed_sparse(self, x: Tensor, edge_index: EdgeIndex, batch_size: int = 0,
                     progress: bool = False) -> Tensor:
        r"""``forward(x, edge_index)`` with each GCNConv as one sparse-dense product
        :math:`\hat{\mathbf{A}}(\mathbf{H}\boldsymbol{\Theta}) + b` (torch CSR), for
        evaluation and export: same result up to float rounding without PyG's :math:`(E, d)`
        per-edge message buffer, so peak memory is :math:`O(N (F + 2d) + E)` instead of
        :math:`O(E d)` (1.8 GB for PubMed at :math:`d = 4096`), and never anything
        :math:`N \times N`.

        Args:
            batch_size (int, optional): target rows per sparse product (``0``: all at once).
                Each row of :math:`\hat{\mathbf{A}}\mathbf{H}\boldsymbol{\Theta}` is computed
                from that row of the CSR matrix alone, so the result does not depend on it
                (default: :obj:`0`).
            progress (bool, optional): show a progress bar over the row batches of every layer
                (default: :obj:`False`).
        """
        n = x.size(0)
        rows = batch_size if batch_size > 0 else max(n, 1)
        bar = tqdm(total=len(self.convs) * math.ceil(n / rows), desc="embed", unit="batch",
                   disable=not progress, dynamic_ncols=True, mininterval=1.0)
        operators = _Operators(edge_index, n, x.dtype)
        h = x
        for i, conv in enumerate(self.convs):
            adj = operators.full(conv)
            # \hat{A}(H W) = (\hat{A} H) W: multiply the sparse operator by the narrower side
            # (proteins: 16 input features, 512 outputs: 32x fewer sparse multiply-adds); one
            # GEMM over all rows either way, so row batches leave the result bit-identical
            if conv.lin.in_channels < conv.lin.out_channels:
                ah = torch.cat([_csr_rows(adj, lo, min(lo + rows, n)) @ h
                                for lo in range(0, n, rows)])
                hw, adj_rows = conv.lin(ah), None
            else:
                hw, adj_rows = conv.lin(h), adj
            out = hw.new_empty(n, hw.size(1))
            for lo in range(0, n, rows):
                hi = min(lo + rows, n)
                block = hw[lo:hi] if adj_rows is None else _csr_rows(adj_rows, lo, hi) @ hw
                if conv.bias is not None:
                    block = block + conv.bias
                if i < len(self.activations):
                    block = self.activations[i](block)
                out[lo:hi] = block
                bar.update(1)
            h = out
        bar.close()
        return h

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, "
                f"layers={len(self.convs)})")



def normalized_operator(conv: GCNConv, edge_index: EdgeIndex, num_nodes: int,
                        dtype: torch.dtype) -> Tensor:
    r"""GCNConv's propagation matrix :math:`\hat{\mathbf{D}}^{-1/2}\hat{\mathbf{A}}
    \hat{\mathbf{D}}^{-1/2}` as a torch CSR tensor :math:`(N, N)` (rows = targets), from PyG's
    own ``gcn_norm`` (so ``add_remaining_self_loops``: a self loop already present is kept once,
    not doubled), on ``edge_index``'s device. Duplicate edges are summed.
    """
    return _csr(*_normalized_edges(conv, edge_index, num_nodes, dtype), num_nodes, num_nodes)


def _normalized_edges(conv: GCNConv, edge_index: EdgeIndex, num_nodes: int,
                      dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(row, col, value)`` of ``conv``'s propagation matrix (row = target), as ``conv`` would
    weight its messages (``gcn_norm`` when ``conv.normalize``, else weight 1)."""
    if conv.normalize:
        ei, w = gcn_norm(edge_index, None, num_nodes, improved=conv.improved,
                         add_self_loops=conv.add_self_loops, flow=conv.flow, dtype=dtype)
    else:
        ei = edge_index
        w = torch.ones(edge_index.size(1), dtype=dtype, device=edge_index.device)
    if conv.flow == "source_to_target":
        return ei[1], ei[0], w
    return ei[0], ei[1], w


def _csr(row: Tensor, col: Tensor, value: Tensor, num_rows: int, num_cols: int) -> Tensor:
    """The :math:`(R, C)` CSR matrix of the COO triplets, duplicates summed, on ``row``'s
    device."""
    # one sort of the (row, column) keys: 5x faster than COO coalesce() on proteins' 79 M
    # edges; duplicates (CSR wants distinct sorted columns per row) are merged after it
    key, order = torch.sort(row * num_cols + col, stable=True)
    if key.numel() > 1 and bool((key[1:] == key[:-1]).any()):
        key, inverse = torch.unique_consecutive(key, return_inverse=True)
        value = value.new_zeros(key.numel()).index_add_(0, inverse, value[order])
        row, col = key.div(num_cols, rounding_mode="floor"), key.remainder(num_cols)
    else:  # no extra E-sized temporaries (proteins: 79 M edges, 0.6 GB each)
        value, col = value[order], col[order]
    del key, order
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=row.device)
    torch.cumsum(torch.bincount(row, minlength=num_rows), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
        return torch.sparse_csr_tensor(crow, col, value, (num_rows, num_cols),
                                       device=row.device, check_invariants=False)


class _Operators:
    """The propagation matrices of one ``forward``: built once per distinct GCNConv
    normalisation (every layer of a :class:`GCNEncoder` shares one) instead of once per layer
    as ``GCNConv`` does."""

    def __init__(self, edge_index: EdgeIndex, num_nodes: int, dtype: torch.dtype) -> None:
        self.edge_index, self.num_nodes, self.dtype = edge_index, num_nodes, dtype
        self._edges: dict[tuple[Any, ...], tuple[Tensor, Tensor, Tensor]] = {}
        self._full: dict[tuple[Any, ...], Tensor] = {}

    @staticmethod
    def _key(conv: GCNConv) -> tuple[Any, ...]:
        return conv.normalize, conv.improved, conv.add_self_loops, conv.flow

    def edges(self, conv: GCNConv) -> tuple[Tensor, Tensor, Tensor]:
        key = self._key(conv)
        if key not in self._edges:
            self._edges[key] = _normalized_edges(conv, self.edge_index, self.num_nodes,
                                                 self.dtype)
        return self._edges[key]

    def full(self, conv: GCNConv) -> Tensor:
        r""":math:`\hat{\mathbf{A}}` :math:`(N, N)` as CSR."""
        key = self._key(conv)
        if key not in self._full:
            self._full[key] = _csr(*self.edges(conv), self.num_nodes, self.num_nodes)
        return self._full[key]

    def rows(self, conv: GCNConv, targets: Tensor) -> Tensor:
        r"""Rows ``targets`` (distinct) of :math:`\hat{\mathbf{A}}`, :math:`(T, N)` CSR, from
        the targets' in-edges only."""
        row, col, value = self.edges(conv)
        pos = torch.full((self.num_nodes,), -1, dtype=torch.long, device=row.device)
        pos[targets] = torch.arange(targets.numel(), device=row.device)
        keep = pos[row] >= 0
        return _csr(pos[row[keep]], col[keep], value[keep], targets.numel(), self.num_nodes)


def _sparse_conv(conv: GCNConv, h: Tensor, adj: Tensor,
                 aggregate_first: bool | None = None) -> Tensor:
    r"""``conv`` as one CSR sparse x dense product :math:`\hat{\mathbf{A}}(\mathbf{H}
    \boldsymbol{\Theta}) + b`, or :math:`(\hat{\mathbf{A}}\mathbf{H})\boldsymbol{\Theta} + b`
    (equal; default: whichever multiplies the sparse matrix by the narrower side).

    Shapes: ``h`` :math:`(N, F)`, ``adj`` :math:`(R, N)` CSR -> :math:`(R, d)`.

    ``torch.sparse.mm`` has its own backward (to ``h``: :math:`\hat{\mathbf{A}}^\top G`), so no
    autograd function of ours. Not ``GCNConv(h, adj_t)`` (PyG's sparse path): that reruns
    ``gcn_norm`` and rebuilds the CSR in every layer, adds self loops where ``edge_index`` already
    has them (``add_self_loops`` instead of ``add_remaining_self_loops``), and always transforms
    first (``bench/nml_step.py`` times the three ways).
    """
    if aggregate_first is None:
        aggregate_first = conv.lin.in_channels < conv.lin.out_channels
    out = conv.lin(torch.sparse.mm(adj, h)) if aggregate_first else \
        torch.sparse.mm(adj, conv.lin(h))
    return out + conv.bias if conv.bias is not None else out


def _csr_rows(adj: Tensor, lo: int, hi: int) -> Tensor:
    """Rows ``lo:hi`` of a CSR matrix as a CSR matrix (views of its column and value arrays)."""
    crow = adj.crow_indices()
    start, end = int(crow[lo]), int(crow[hi])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
        return torch.sparse_csr_tensor(crow[lo:hi + 1] - start, adj.col_indices()[start:end],
                                       adj.values()[start:end], (hi - lo, adj.size(1)),
                                       device=adj.device, check_invariants=False)


def _conv_rows(conv: GCNConv, h: Tensor, edge_index: EdgeIndex, targets: Tensor) -> Tensor:
    """``conv(h, edge_index)[targets]`` from the targets' in-edges only (PyG's normalisation)."""
    ei, w = gcn_norm(edge_index, None, h.size(0), improved=conv.improved,
                     add_self_loops=conv.add_self_loops, flow=conv.flow, dtype=h.dtype)
    src, dst = (ei[0], ei[1]) if conv.flow == "source_to_target" else (ei[1], ei[0])
    pos = torch.full((h.size(0),), -1, dtype=torch.long, device=h.device)
    pos[targets] = torch.arange(targets.numel(), device=h.device)
    keep = pos[dst] >= 0
    src, dst, w = src[keep], pos[dst[keep]], w[keep]
    agg = h.new_zeros(targets.numel(), h.size(1))
    agg.index_add_(0, dst, h[src] * w.unsqueeze(1))  # [T, F]
    out = conv.lin(agg)
    return out + conv.bias if conv.bias is not None else out
