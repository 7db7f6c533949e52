"""The encoder and projection head applied to both augmented views in one ``forward`` call."""
from __future__ import annotations

from torch import Tensor, nn

from distgcl.nn.encoder import GCNEncoder
from distgcl.typing import EdgeIndex, OptTensor


class TwoViewEncoder(nn.Module):
    r"""Shared encoder :math:`f` (and projection head :math:`p`) over two views:
    :math:`(\mathbf{H}^1, \mathbf{H}^2) = (p(f(\mathbf{X}^1, \mathbf{A}^1)),
    p(f(\mathbf{X}^2, \mathbf{A}^2)))`.

    Both views go through **one** ``forward`` call, so a data-parallel wrapper sees exactly one
    forward per backward (one gradient all-reduce per step, no double-use ambiguity).

    Args:
        encoder (GCNEncoder): the shared encoder.
        projector (nn.Module, optional): projection head applied after the encoder
            (default: :obj:`None`, the identity: NML-GCL has no head).

    Shapes:
        - **input:** ``x1, x2`` :math:`(N_v, F)`, ``edge_index1, edge_index2`` :math:`(2, E_v)`,
          optional ``targets`` :math:`(T,)` (rows wanted from both views)
        - **output:** two tensors :math:`(N_v, d)` each, or :math:`(T, d)` with ``targets``
    """

    def __init__(self, encoder: GCNEncoder, projector: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector if projector is not None else nn.Identity()

    def forward(self, x1: Tensor, edge_index1: EdgeIndex, x2: Tensor, edge_index2: EdgeIndex,
                targets: OptTensor = None) -> tuple[Tensor, Tensor]:
        h1 = self.projector(self.encoder(x1, edge_index1, targets))
        h2 = self.projector(self.encoder(x2, edge_index2, targets))
        return h1, h2
