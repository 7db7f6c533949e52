"""Neural modules only (no training logic)."""
from distgcl.nn.encoder import GCNEncoder, make_activation
from distgcl.nn.nmn import NegativeMetricNetwork
from distgcl.nn.projector import Projector

__all__ = ["GCNEncoder", "NegativeMetricNetwork", "Projector", "make_activation"]
