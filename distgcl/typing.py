"""Shared type aliases (one place, as ``torch_geometric.typing``)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

EdgeIndex = Tensor
"""``[2, E]`` int64 source/target node ids."""
NodeIds = Tensor
"""``[B]`` int64 node ids."""
OptTensor = Optional[Tensor]
