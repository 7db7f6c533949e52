"""Neural modules only (no training logic)."""
from distgcl.nn.encoder import GCNEncoder, make_activation
from distgcl.nn.projector import Projector

__all__ = ["GCNEncoder", "Projector", "make_activation"]
