"""GRACE's projection head."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Projector(nn.Module):
    r"""Two-layer projection head :math:`g(z) = W_2\,\mathrm{ELU}(W_1 z)` (GRACE).

    Args:
        dim (int): embedding width (input and output).
        hidden_dim (int): width of the hidden layer.

    Shapes:
        - **input:** :math:`(N, d)`
        - **output:** :math:`(N, d)`
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc2(F.elu(self.fc1(z)))
