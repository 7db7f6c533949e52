"""Neural modules only (no training logic)."""
from distgcl.nn.encoder import GCNEncoder, make_activation
from distgcl.nn.nmn import MetricFactors, NegativeMetricNetwork
from distgcl.nn.projector import Projector
from distgcl.nn.views import TwoViewEncoder

__all__ = ["GCNEncoder", "MetricFactors", "NegativeMetricNetwork", "Projector", "TwoViewEncoder",
           "make_activation"]
