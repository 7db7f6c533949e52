"""Stack of PyG ``GCNConv`` layers used as the GCL encoder."""
from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from distgcl.typing import EdgeIndex


def make_activation(name: str, width: int) -> nn.Module:
    """Activation module by name; PReLU gets one slope per channel (as GRACE and E2Neg)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(width)
    if name == "rrelu":
        return nn.RReLU()
    if name == "elu":
        return nn.ELU()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; known: relu, prelu, rrelu, elu, identity")


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
        activation (str, optional): ``relu | prelu | rrelu | elu | identity`` (default: ``relu``).
        activate_last (bool, optional): apply :math:`\sigma` after the last layer as well
            (GRACE: yes, NML-GCL: no) (default: :obj:`True`).

    Shapes:
        - **input:** node features :math:`(N, F_{in})`, edge indices :math:`(2, E)`
        - **output:** node embeddings :math:`(N, F_{out})`
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, layers: int = 2,
                 activation: str = "relu", activate_last: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"'{self.__class__.__name__}' needs at least one layer (got {layers})")
        hidden_dim = hidden_dim or 2 * out_dim
        widths = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        n_act = layers if activate_last else layers - 1
        self.activations = nn.ModuleList(make_activation(activation, widths[i + 1])
                                         for i in range(n_act))
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor, edge_index: EdgeIndex) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.activations):
                x = self.activations[i](x)
        return x

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_dim}, {self.out_dim}, "
                f"layers={len(self.convs)})")

